"""Number tokens: one vocabulary id per measured quantity, so a number is one decision, not a digit string
(LLMI3D, Yang et al. 2024: numbers written digit by digit are error-prone for language models).

Bins (``NumberBins``, defined once here as ``NUMBER_BINS`` and recorded in the vocabulary dict): token 0
is an exact zero; tokens 1..n are ``n`` log-spaced magnitude bins over ``[lo, hi)``, token k covering
``[lo r^(k-1), lo r^k)`` with ``r = (hi / lo)^(1/n)``. A token's value, the number written back, is the
harmonic mean ``2ab / (a + b)`` of its bin's edges ``[a, b)``: the point whose worst relative error to any
value of the bin, ``max_x |c - x| / x``, is smallest, ``(r - 1) / (r + 1)``.

Why 120 bins over [1e-2, 1e3) (24 per decade, r = 10^(1/24) = 1.1007): MRA (VSI-Bench) counts a number
right at threshold theta when ``|pred - gt| / |gt| < 1 - theta``, theta = 0.50, 0.55, ..., 0.95; the
finest tolerance is 5 %. A bin's value is at most (r - 1) / (r + 1) = 4.79 % from any value of its bin,
so the right token loses no threshold (MRA 1.0) before the answer is rounded to its unit's decimals;
116 bins are the fewest that stay under 5 % over five decades, and 100 bins (5.76 %) would lose the
0.95 threshold near bin edges. The range holds every quantity ``gst data qa`` writes (0.01-20 m,
1-180 deg); a value outside it (other than 0) keeps its digits, never a clamped token.

Which numbers become tokens (``find_quantities``): the numbers written with a unit, a measured quantity:
"3.85 m", "turn 30 degrees", each coordinate of "(0.12, -0.30, 2.45) m". Counts ("3"), view indices
("view 2") and names ("3D") stay digits: they are exact integers, which bins would blur. A negative number
is the text "-" followed by its magnitude's token.

Writing a token back (``render``): its value with the decimals of the unit that follows it
(``UNIT_DECIMALS``: metres 2, degrees 0, as ``gst.data.qa_types`` writes answers), or 3 significant
digits when no unit follows.

Glossary: n bins, r ratio of neighbouring bin edges.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

# Decimals a number is written with, by the unit written after it. The canonical units and decimals are
# gst.data.qa_types.UNIT_DECIMALS (tokenizers may not import gst.data; tests/test_numbers.py checks they
# agree); the aliases are the words questions use.
UNIT_DECIMALS: dict[str, int] = {
    "m": 2,
    "metre": 2,
    "metres": 2,
    "meter": 2,
    "meters": 2,
    "cm": 0,
    "centimetre": 0,
    "centimetres": 0,
    "centimeter": 0,
    "centimeters": 0,
    "deg": 0,
    "degree": 0,
    "degrees": 0,
    "°": 0,
}
UNITLESS_DIGITS = 3  # significant digits of a number token with no unit after it

_NUM = r"\d+(?:\.\d+)?"
_UNIT = "(" + "|".join(sorted(map(re.escape, UNIT_DECIMALS), key=len, reverse=True)) + r")(?!\w)"
# A number literal on its own: not part of a word ("3D"), of a longer number ("1.2.3") or of "1,000".
_NUMBER_RE = re.compile(rf"(?<![\w.])(?<!\d,){_NUM}(?![\w]|\.\d)")
_SINGLE_RE = re.compile(rf"(?<![\w.])(?<!\d,){_NUM}(?=\s*{_UNIT})")
_LIST_RE = re.compile(rf"\(\s*-?{_NUM}(?:\s*,\s*-?{_NUM})*\s*\)\s*{_UNIT}")
# What may stand between a number and its unit when reading a unit back: more list members, ")".
_FOLLOW_RE = re.compile(rf"(?:\s*,\s*-?{_NUM})*\s*\)?\s*{_UNIT}")


@dataclass(frozen=True, kw_only=True)
class NumberBins:
    """Log-spaced magnitude bins plus an exact zero (module docstring). Tokens are 0 (zero) and 1..n."""

    lo: float = 1e-2  # lower edge of the first bin
    hi: float = 1e3  # upper edge of the last bin (exclusive)
    num_bins: int = 120  # n: 24 per decade over five decades, worst relative error 4.79 % (< 5 %)

    def __post_init__(self) -> None:
        if not (0 < self.lo < self.hi and math.isfinite(self.hi)):
            raise ValueError(f"NumberBins: need 0 < lo < hi < inf, got lo={self.lo}, hi={self.hi}")
        if not isinstance(self.num_bins, int) or isinstance(self.num_bins, bool) or self.num_bins < 1:
            raise ValueError(f"NumberBins.num_bins must be an int >= 1, got {self.num_bins!r}")

    @property
    def num_tokens(self) -> int:
        """Vocabulary ids the bins take: the zero token and one per bin."""
        return self.num_bins + 1

    @property
    def ratio(self) -> float:
        """r: the ratio of a bin's upper edge to its lower edge."""
        return (self.hi / self.lo) ** (1.0 / self.num_bins)

    @property
    def worst_relative_error(self) -> float:
        """max over x in a bin of |value - x| / x: (r - 1) / (r + 1)."""
        r = self.ratio
        return (r - 1.0) / (r + 1.0)

    @cached_property
    def edges(self) -> np.ndarray:
        """Bin edges, ascending. Shapes: (n + 1,) float64; edges[0] = lo, edges[n] = hi."""
        k = np.arange(self.num_bins + 1, dtype=np.float64)
        edges = self.lo * 10.0 ** (k * math.log10(self.hi / self.lo) / self.num_bins)
        edges[0], edges[-1] = self.lo, self.hi
        return edges

    @cached_property
    def values(self) -> np.ndarray:
        """The value of every token: 0, then each bin's harmonic-mean centre. Shapes: (n + 1,) float64."""
        a, b = self.edges[:-1], self.edges[1:]
        return np.concatenate([[0.0], 2.0 * a * b / (a + b)])

    def token(self, magnitude: float) -> int | None:
        """The token of a non-negative number, or None when it has none (outside [lo, hi), not 0)."""
        x = float(magnitude)
        if x == 0.0:
            return 0
        if not (self.lo <= x < self.hi):
            return None
        return int(np.searchsorted(self.edges, x, side="right"))  # 1..n: the bin with edges[k-1] <= x

    def value(self, token: int) -> float:
        """The number a token stands for (0.0 for the zero token)."""
        if not 0 <= int(token) < self.num_tokens:
            raise ValueError(f"number token {token} is outside [0, {self.num_tokens})")
        return float(self.values[int(token)])

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "num_bins": self.num_bins}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumberBins:
        if not isinstance(d, dict) or set(d) != {"lo", "hi", "num_bins"}:
            raise ValueError(f"number bins: expected {{'lo', 'hi', 'num_bins'}}, got {d!r}")
        return cls(lo=float(d["lo"]), hi=float(d["hi"]), num_bins=d["num_bins"])


NUMBER_BINS = NumberBins()  # the bins of `--set number_tokens=true` runs


def find_quantities(text: str) -> list[tuple[int, int]]:
    """The [start, end) spans of the number literals in ``text`` that carry a unit (module docstring),
    in order; a minus sign before one is not part of its span."""
    spans = {m.span() for m in _SINGLE_RE.finditer(text)}
    for group in _LIST_RE.finditer(text):
        spans.update(m.span() for m in _NUMBER_RE.finditer(text, group.start(), group.end()))
    return sorted(spans)


def unit_after(text: str, pos: int) -> str | None:
    """The unit a number ending at ``pos`` is written in ("m" in "3.85 m", also for the first
    coordinate of "(1.00, 2.00, 3.00) m"), or None."""
    m = _FOLLOW_RE.match(text, pos)
    return m.group(1) if m else None


def render(value: float, decimals: int | None) -> str:
    """A token's value as text: ``decimals`` decimals, or ``UNITLESS_DIGITS`` significant digits (None)."""
    if decimals is None:
        decimals = 0 if value == 0 else max(0, UNITLESS_DIGITS - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


__all__ = ["NUMBER_BINS", "UNIT_DECIMALS", "NumberBins", "find_quantities", "render", "unit_after"]
