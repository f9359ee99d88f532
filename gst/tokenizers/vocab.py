"""The unified vocabulary: text tokens, special tokens, image codes and camera codes in one id space.

Layout (ids are contiguous, in this order, and never recomputed by convention: ``to_dict`` is saved
with every checkpoint and ``from_dict`` validates it on load):

    [0, num_text)                                   text tokens of the text tokenizer, ending with
      [number_offset, num_text)                       its number tokens (``num_numbers``, may be 0)
    [special_offset, special_offset + S)            special tokens, in ``special_tokens`` order
    [image_offset, image_offset + num_image_codes)  image codes 0 .. num_image_codes - 1
    [camera_offset, camera_offset + num_camera_codes) camera codes
    [num_used, size)                                padding rows (never produced), see ``pad_to_multiple``

``size`` is ``num_used`` rounded up to a multiple of ``pad_to_multiple`` (default 1: no padding). A
multiple of 64 makes embedding and head matmuls faster on GPUs (nanoGPT pads 50257 -> 50304); padding
ids are neither text, special, image nor camera ids, so masks exclude them.

Number tokens (``numbers``: ``gst.tokenizers.numbers.NumberBins``, None = none, as in every vocabulary
made before them) are text tokens: the model reads and writes them where it reads and writes text, and
``num_text`` counts them, as ``TextTokenizer.with_numbers(...).vocab_size`` does. They sit at the end of
the text segment, so a vocabulary with them shifts the special, image and camera ids by ``num_numbers``
(``gst.training.gst_init`` moves a checkpoint's rows when it adds them). Their bins are recorded in
``to_dict`` and rebuilt by ``from_dict``.

Glossary: S number of special tokens, N number tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gst.tokenizers.numbers import NumberBins

DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>", "<|img_start|>", "<|img_end|>", "<|cam_start|>", "<|cam_end|>",
    "<|task_gen|>", "<|task_est|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
)  # fmt: skip

VOCAB_FORMAT_VERSION = 1  # bump when the layout rule changes; from_dict refuses other versions
_FIELDS = ("num_text", "special_tokens", "num_image_codes", "num_camera_codes", "pad_to_multiple", "numbers")


@dataclass(frozen=True, kw_only=True)
class Vocabulary:
    """Sizes and offsets of every token family (see the module docstring for the layout).

    Id mappings take and return int64 tensors of any shape; ``*_codes`` raise ``ValueError`` when an id
    lies outside the family, so a mis-routed id is never silently turned into a wrong code.
    """

    num_text: int  # size of the text tokenizer's vocabulary (ids [0, num_text)), number tokens included
    special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS  # ids [num_text, num_text + S)
    num_image_codes: int  # image VQ codebook size K_img
    num_camera_codes: int  # camera VQ codebook size K_cam
    pad_to_multiple: int = 1  # round ``size`` up to a multiple of this (64 on GPUs); 1 = no padding
    numbers: NumberBins | None = None  # number tokens, the last N text ids; None = none

    def __post_init__(self) -> None:
        for name in ("num_text", "num_image_codes", "num_camera_codes", "pad_to_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"Vocabulary.{name} must be an int, got {value!r}")
        if self.num_text < 0:
            raise ValueError(f"Vocabulary.num_text must be >= 0, got {self.num_text}")
        if self.num_image_codes < 1 or self.num_camera_codes < 1:
            raise ValueError(
                f"Vocabulary: num_image_codes ({self.num_image_codes}) and num_camera_codes "
                f"({self.num_camera_codes}) must be >= 1"
            )
        if self.pad_to_multiple < 1:
            raise ValueError(f"Vocabulary.pad_to_multiple must be >= 1, got {self.pad_to_multiple}")
        if not isinstance(self.special_tokens, tuple) or not all(
            isinstance(t, str) and t for t in self.special_tokens
        ):
            raise ValueError(
                f"Vocabulary.special_tokens must be a tuple of non-empty strings, got {self.special_tokens!r}"
            )
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError(f"Vocabulary.special_tokens has duplicates: {self.special_tokens}")
        if self.numbers is not None and not isinstance(self.numbers, NumberBins):
            raise ValueError(f"Vocabulary.numbers must be NumberBins or None, got {self.numbers!r}")
        if self.num_numbers > self.num_text:
            raise ValueError(
                f"Vocabulary: num_text ({self.num_text}) must count the {self.num_numbers} number tokens"
            )

    @classmethod
    def for_tokenizers(
        cls,
        text: Any,
        image: Any,
        camera: Any,
        *,
        special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS,
        pad_to_multiple: int = 1,
    ) -> Vocabulary:
        """The vocabulary of a text tokenizer (``vocab_size``, ``numbers``) and image/camera tokenizers
        (``num_codes``)."""
        return cls(
            num_text=int(text.vocab_size),
            special_tokens=tuple(special_tokens),
            num_image_codes=int(image.num_codes),
            num_camera_codes=int(camera.num_codes),
            pad_to_multiple=pad_to_multiple,
            numbers=getattr(text, "numbers", None),
        )

    # ---- offsets ----
    @property
    def num_numbers(self) -> int:
        """N: number tokens (0 without any)."""
        return self.numbers.num_tokens if self.numbers is not None else 0

    @property
    def number_offset(self) -> int:
        """Id of number token 0: the text tokenizer's own ids end here."""
        return self.num_text - self.num_numbers

    @property
    def special_offset(self) -> int:
        return self.num_text

    @property
    def image_offset(self) -> int:
        return self.num_text + len(self.special_tokens)

    @property
    def camera_offset(self) -> int:
        return self.image_offset + self.num_image_codes

    @property
    def num_used(self) -> int:
        """Ids that carry a token (everything but the padding rows)."""
        return self.camera_offset + self.num_camera_codes

    @property
    def size(self) -> int:
        """Total number of ids (embedding rows), ``num_used`` padded up to ``pad_to_multiple``."""
        m = self.pad_to_multiple
        return (self.num_used + m - 1) // m * m

    # ---- id mappings ----
    def special_id(self, name: str) -> int:
        if name not in self.special_tokens:
            raise ValueError(f"unknown special token {name!r}; this vocabulary has {self.special_tokens}")
        return self.special_offset + self.special_tokens.index(name)

    def special_name(self, token_id: int) -> str:
        if not self.special_offset <= token_id < self.image_offset:
            raise ValueError(
                f"id {token_id} is not a special-token id [{self.special_offset}, {self.image_offset})"
            )
        return self.special_tokens[token_id - self.special_offset]

    def number_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Number tokens -> vocabulary ids. Shapes: any -> same. Range: tokens in [0, num_numbers)."""
        return _shift(tokens, 0, self.num_numbers, self.number_offset, "number token")

    def number_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids -> number tokens; raises ValueError for any id that is not a number id."""
        return _shift(ids, self.number_offset, self.num_text, -self.number_offset, "number id")

    def image_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes -> vocabulary ids. Shapes: any -> same. Range: codes in [0, num_image_codes)."""
        return _shift(codes, 0, self.num_image_codes, self.image_offset, "image code")

    def image_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids -> image codes; raises ValueError for any id that is not an image id."""
        return _shift(ids, self.image_offset, self.camera_offset, -self.image_offset, "image id")

    def camera_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Camera codes -> vocabulary ids. Shapes: any -> same. Range: codes in [0, num_camera_codes)."""
        return _shift(codes, 0, self.num_camera_codes, self.camera_offset, "camera code")

    def camera_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids -> camera codes; raises ValueError for any id that is not a camera id."""
        return _shift(ids, self.camera_offset, self.num_used, -self.camera_offset, "camera id")

    # ---- masks ----
    def is_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text ids, number tokens included."""
        return (ids >= 0) & (ids < self.special_offset)

    def is_number(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.number_offset) & (ids < self.num_text)

    def is_special(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.special_offset) & (ids < self.image_offset)

    def is_image(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.image_offset) & (ids < self.camera_offset)

    def is_camera(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.camera_offset) & (ids < self.num_used)

    # ---- serialisation ----
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; offsets are included so readers need not recompute them. Number tokens
        appear only when there are some, so a vocabulary without them writes the dict it always did."""
        numbers = (
            {}
            if self.numbers is None
            else {"numbers": self.numbers.to_dict(), "num_numbers": self.num_numbers}
        )
        return {
            "format_version": VOCAB_FORMAT_VERSION,
            "num_text": self.num_text,
            "special_tokens": list(self.special_tokens),
            "num_image_codes": self.num_image_codes,
            "num_camera_codes": self.num_camera_codes,
            "pad_to_multiple": self.pad_to_multiple,
            **numbers,
            "special_offset": self.special_offset,
            "image_offset": self.image_offset,
            "camera_offset": self.camera_offset,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        """Rebuild from ``to_dict`` output, checking every field and the stored offsets."""
        if not isinstance(d, dict):
            raise ValueError(f"vocabulary: expected a JSON object, got {type(d).__name__}")
        derived = ("format_version", "num_numbers", "special_offset", "image_offset", "camera_offset", "size")
        unknown = sorted(set(d) - set(_FIELDS) - set(derived))
        if unknown:
            raise ValueError(f"vocabulary: unknown keys {unknown}; known keys are {list(_FIELDS + derived)}")
        missing = [k for k in ("num_text", "num_image_codes", "num_camera_codes") if k not in d]
        if missing:
            raise ValueError(f"vocabulary: missing keys {missing}")
        version = d.get("format_version", VOCAB_FORMAT_VERSION)
        if version != VOCAB_FORMAT_VERSION:
            raise ValueError(
                f"vocabulary: format_version {version} is not supported (this build reads "
                f"{VOCAB_FORMAT_VERSION}); re-create the checkpoint with this version"
            )
        specials = d.get("special_tokens", list(DEFAULT_SPECIAL_TOKENS))
        if not isinstance(specials, (list, tuple)):
            raise ValueError(f"vocabulary: special_tokens must be a list of strings, got {specials!r}")
        vocab = cls(
            num_text=d["num_text"],
            special_tokens=tuple(specials),
            num_image_codes=d["num_image_codes"],
            num_camera_codes=d["num_camera_codes"],
            pad_to_multiple=d.get("pad_to_multiple", 1),
            numbers=None if d.get("numbers") is None else NumberBins.from_dict(d["numbers"]),
        )
        for key in derived[1:]:
            if key in d and d[key] != getattr(vocab, key):
                raise ValueError(
                    f"vocabulary: stored {key} = {d[key]} but the sizes give {getattr(vocab, key)}; the "
                    "file was edited or written by an incompatible version"
                )
        return vocab


def _shift(x: torch.Tensor, lo: int, hi: int, offset: int, what: str) -> torch.Tensor:
    """x + offset after checking lo <= x < hi everywhere (int64 in and out)."""
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"{what}s must be an integer tensor, got {x.dtype}")
    x = x.long()
    bad = (x < lo) | (x >= hi)
    if bool(bad.any()):
        first = int(x[bad].flatten()[0])
        raise ValueError(f"{what} {first} is outside [{lo}, {hi}) ({int(bad.sum())} such values)")
    return x + offset
