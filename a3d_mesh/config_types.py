"""Typed data from YAML: plain mappings merged into dataclasses, every key and value checked.

The machinery under :mod:`a3d_mesh.config` and any other typed settings: :func:`merge` applies a
nested mapping to a dataclass, coercing each value to its field's type (unions, literals, tuples,
lists, nested dataclasses, and types with their own ``from_data`` forms such as schedule ramps);
:func:`parse_override` reads ``key.path=value``; :func:`to_dict` is the way back. Every problem is
one :class:`ConfigError` line naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal

import yaml

from a3d_mesh.errors import A3DMeshError


class ConfigError(A3DMeshError, ValueError):
    """A preset or override that does not fit the typed configuration (one-line message)."""


# ----------------------------------------------------------------------------------------------
# Validation: a small typed merge of plain YAML data into dataclasses.


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that ``1e4`` and ``3e-4`` are floats (YAML 1.2), not
    strings: presets and overrides write learning rates and weights that way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """YAML as presets and overrides are read (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is list:
        (a,) = typing.get_args(tp)
        if isinstance(value, str) and a is str:  # "glb,obj" on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, a, key) for v in value]
    if hasattr(tp, "from_data"):  # types that define their own data forms (schedule ramps)
        try:
            return tp.from_data(value)
        except (TypeError, ValueError, OverflowError) as e:  # OverflowError: an int beyond any float
            raise ConfigError(f"config key '{key}': {e}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > 1e308:  # float() would raise OverflowError
                raise ConfigError(f"config key '{key}': a whole number too large for a float")
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return merge(tp(), value, prefix=key + ".")
    raise ConfigError(f"config key '{key}': {value!r} is not a {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    """How a type reads in an error: ``float``, ``'auto'``, ``float or 'auto'``, ``list of str``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def merge(cfg: Any, data: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with the nested mapping ``data`` applied and validated."""
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    updates = {}
    for k, v in data.items():
        key = prefix + str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict) and not hasattr(tp, "from_data"):
            updates[k] = merge(getattr(cfg, k), v, prefix=key + ".")
        else:
            updates[k] = _coerce(v, tp, key)
    try:
        return dataclasses.replace(cfg, **updates)
    except (TypeError, ValueError) as e:  # a component's own __post_init__ checks
        raise ConfigError(f"config '{prefix.rstrip('.') or 'root'}': {e}") from None


def parse_override(text: str) -> dict[str, Any]:
    """``'refine.steps=300'`` -> ``{'refine': {'steps': 300}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an int past Python's 4300 digits
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def to_dict(cfg: Any) -> Any:
    """Plain YAML-ready data (tuples become lists)."""
    if hasattr(cfg, "to_data"):
        return cfg.to_data()
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg
