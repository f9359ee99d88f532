"""Typed ``key=value`` overrides of frozen config dataclasses (the CLI's ``--set``), and dict round trips.

``apply_overrides(config, ["train.lr=1e-3", "model.levels=8,5,5,5"])`` walks dotted paths through
nested dataclasses and parses each value by the field's annotation: int, float, bool (true/false/1/0),
str, Literal choices, ``X | None`` ("none"), and tuples (comma-separated, e.g. ``8,5,5,5`` or
``64,64``). An optional group (``model.reader: ReaderConfig | None``) is switched on by
setting one of its fields (its other fields keep their defaults) or by ``model.reader=default``,
and off by ``model.reader=none``. Unknown keys and unparsable values raise ``ValueError`` naming the
key and the choices; no ``eval`` is ever used.

``from_dict(cls, d)`` rebuilds a (nested) config dataclass from JSON with the same strictness.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args, get_origin

from gst.tokenizers.config import config_from_dict, config_to_dict, field_types, optional_inner

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse ``text`` as a value of annotation ``tp``; ``key`` names the field in errors."""
    optional, tp = optional_inner(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    origin = get_origin(tp)
    try:
        if origin is Literal:
            choices = get_args(tp)
            for choice in choices:
                if str(choice) == text:
                    return choice
            raise ValueError(f"choose one of {list(choices)}")
        if origin is tuple:
            args = get_args(tp)
            parts = [p for p in text.split(",") if p.strip() != ""]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(parse_value(p.strip(), args[0], key) for p in parts)
            if len(parts) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            return tuple(parse_value(p.strip(), a, key) for p, a in zip(parts, args, strict=True))
        if tp is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected true or false")
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError as err:
        raise ValueError(f"--set {key}={text}: {err}") from None
    raise ValueError(f"--set {key}: fields of type {tp} cannot be set from the command line")


def apply_overrides(config: Any, assignments: list[str] | tuple[str, ...]) -> Any:
    """A copy of ``config`` with each ``dotted.key=value`` applied (typed; unknown keys are errors)."""
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r}: expected key=value, e.g. train.lr=1e-3")
        key, text = assignment.split("=", 1)
        config = _set_path(config, key.strip().split("."), text, key.strip())
    return config


def _set_path(obj: Any, path: list[str], text: str, full_key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"--set {full_key}: {'.'.join(path)} does not name a config field")
    types_by_name = field_types(type(obj))
    name = path[0]
    if name not in types_by_name:
        raise ValueError(
            f"--set {full_key}: unknown key {name!r} in {type(obj).__name__}; known keys: "
            f"{sorted(types_by_name)}"
        )
    current = getattr(obj, name)
    optional, inner = optional_inner(types_by_name[name])
    group = optional and isinstance(inner, type) and dataclasses.is_dataclass(inner)
    if group and current is None and (len(path) > 1 or text.strip().lower() == "default"):
        current = inner()  # an optional group switched on: its defaults, then the fields given
    if len(path) > 1:
        value = _set_path(current, path[1:], text, full_key)
    elif group and text.strip().lower() in ("default", "none", "null"):
        value = None if text.strip().lower() != "default" else current
    elif dataclasses.is_dataclass(current):
        raise ValueError(f"--set {full_key}: {name} is a group; set one of its fields, e.g. {name}.<field>")
    else:
        value = parse_value(text, types_by_name[name], full_key)
    return dataclasses.replace(obj, **{name: value})


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a (nested) config dataclass; tuples become lists."""
    return config_to_dict(config)


def from_dict(cls: type, d: dict[str, Any], where: str = "config") -> Any:
    """Rebuild ``cls`` from ``to_dict`` output; unknown keys raise ``ValueError``."""
    return config_from_dict(cls, d, where)


__all__ = ["apply_overrides", "from_dict", "parse_value", "to_dict"]
