"""Typed ``key=value`` overrides of frozen config dataclasses (the CLI's ``--set``), and dict round trips.

``apply_overrides(config, ["train.lr=1e-3", "model.levels=8,5,5,5"])`` walks dotted paths through
nested dataclasses and parses each value by the field's annotation: int, float, bool (true/false/1/0),
str, Literal choices, ``X | None`` ("none"), and tuples (comma-separated, e.g. ``8,5,5,5`` or
``64,64``). Unknown keys and unparsable values raise ``ValueError`` naming the key and the choices; no
``eval`` is ever used.

``from_dict(cls, d)`` rebuilds a (nested) config dataclass from JSON with the same strictness.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse ``text`` as a value of annotation ``tp``; ``key`` names the field in errors."""
    optional, tp = _is_optional(tp)
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
    types_by_name = _field_types(type(obj))
    name = path[0]
    if name not in types_by_name:
        raise ValueError(
            f"--set {full_key}: unknown key {name!r} in {type(obj).__name__}; known keys: "
            f"{sorted(types_by_name)}"
        )
    current = getattr(obj, name)
    if len(path) > 1:
        value = _set_path(current, path[1:], text, full_key)
    elif dataclasses.is_dataclass(current):
        raise ValueError(f"--set {full_key}: {name} is a group; set one of its fields, e.g. {name}.<field>")
    else:
        value = parse_value(text, types_by_name[name], full_key)
    return dataclasses.replace(obj, **{name: value})


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a (nested) config dataclass; tuples become lists."""
    return json_ready(dataclasses.asdict(config))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def from_dict(cls: type, d: dict[str, Any], where: str = "config") -> Any:
    """Rebuild ``cls`` from ``to_dict`` output; unknown or missing keys raise ``ValueError``."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    types_by_name = _field_types(cls)
    unknown = sorted(set(d) - set(types_by_name))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; {cls.__name__} has {sorted(types_by_name)}")
    kwargs = {}
    for name, tp in types_by_name.items():
        if name not in d:
            continue  # the field's default applies
        kwargs[name] = _coerce(d[name], tp, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    optional, inner = _is_optional(tp)
    if value is None and optional:
        return None
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        return from_dict(inner, value, where)
    if get_origin(inner) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


__all__ = ["apply_overrides", "from_dict", "json_ready", "parse_value", "to_dict"]
