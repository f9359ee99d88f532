"""Phrasing patterns expanded into question templates, and the training / held-out rule.

A pattern is a sentence with alternation groups ``[a|b|c]`` (no nesting; an alternative may be empty)
and format slots ``{a}``, ``{ref}``... left for ``str.format``. An alternative written ``!text`` is a
*held-out part*. ``expand`` takes the cartesian product of a pattern's groups, in written order:

- a combination with no held-out part is a *training* phrasing;
- a combination with at least one held-out part is a *held-out* phrasing.

So a held-out phrasing always contains a word or construction that no training phrasing of its kind
contains (the test checks that each held-out part is not even a substring of one), yet its words are
words the model reads in the training phrasings of some kind (a construction held out for one kind is
a training construction of a sibling kind, e.g. "Relative to {b}, is {a} ..." trains ``rel_lr`` and is
held out for ``rel_fb``; tests check the vocabulary). Held-out phrasings test new combinations of
learnable language, not unseen words. Texts are deduplicated in first-seen order, so template order
(and with it every phrasing id) is a pure function of the patterns.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([?.,:!])")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SLOT = re.compile(r"\{[a-z_]+\}")

# The {rel} slot of the nearest / farthest questions: canonical wording -> its synonyms (canonical first),
# shared by training and held-out phrasings.
REL_FORMS: dict[str, tuple[str, ...]] = {
    "closest to": ("closest to", "nearest to"),
    "farthest from": ("farthest from", "furthest from"),
}


@dataclass(frozen=True)
class Phrasing:
    """One expanded template: its text (slots still in braces) and the held-out parts it uses."""

    text: str
    held_out_parts: tuple[str, ...]

    @property
    def held_out(self) -> bool:
        return bool(self.held_out_parts)


def _tidy(text: str) -> str:
    """Collapse the spaces that empty alternatives leave, drop spaces before punctuation, and start with
    a capital (an empty opener leaves the sentence's own first word)."""
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))
    return text[:1].upper() + text[1:]


def expand(pattern: str) -> list[Phrasing]:
    """Every combination of ``pattern``'s alternatives, in written order (the last group varies fastest)."""
    outside = _GROUP.sub("", pattern)  # the literal text
    if "[" in outside or "]" in outside or "!" in outside:
        raise ValueError(f"phrasing pattern {pattern!r}: unbalanced [...] or a '!' outside a group")
    pieces = _GROUP.split(pattern)  # literal, group, literal, group, ..., literal
    literals, groups = pieces[0::2], [g.split("|") for g in pieces[1::2]]
    out = []
    for combo in itertools.product(*groups):
        text, held = literals[0], []
        for alt, literal in zip(combo, literals[1:], strict=True):
            if alt.startswith("!"):
                alt = alt[1:]
                held.append(alt.strip())
            text += alt + literal
        out.append(Phrasing(_tidy(text), tuple(held)))
    return out


def expand_all(patterns: Iterable[str]) -> tuple[tuple[Phrasing, ...], tuple[Phrasing, ...]]:
    """(training, held-out) phrasings of one kind's patterns, deduplicated in first-seen order.

    Raises ``ValueError`` when a text comes out both as a training and as a held-out phrasing (two
    patterns that overlap), or when a text does not start with a capital letter or a slot.
    """
    seen: dict[str, Phrasing] = {}
    for pattern in patterns:
        for p in expand(pattern):
            other = seen.setdefault(p.text, p)
            if other.held_out != p.held_out:
                raise ValueError(f"phrasing {p.text!r} is both a training and a held-out phrasing")
            if not (p.text[:1].isupper() or p.text.startswith("{")):
                raise ValueError(f"phrasing {p.text!r} must start with a capital letter or a slot")
    train = tuple(p for p in seen.values() if not p.held_out)
    heldout = tuple(p for p in seen.values() if p.held_out)
    return train, heldout


def words(text: str) -> list[str]:
    """Lower-case words of a template, slots removed (the vocabulary the held-out rule is about)."""
    return _WORD.findall(_SLOT.sub(" ", text).lower())
