"""Settings read and built: a YAML file as plain data, command-line overrides over it, and a
typed config built from them, every bad value one line that names the setting and what it
accepts (``describe``). The settings themselves, their types, defaults and help, are
``config.py``'s (a config that shares settings with every stage names them in its
``shared_keys``).
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .errors import UserError

# --- errors: one line that names the setting and what it accepts --------------------------

_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "string": "a string", "dict": "a mapping of settings",
               "model": "a mapping of settings", "list": "a list"}


def describe(err: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """The first error of a validation as one line."""
    first = err.errors(include_url=False)[0]
    loc, kind, value = first["loc"], first["type"], first.get("input")
    name = (prefix + _dotted(loc)).rstrip(".")
    owner, info = _field_at(root, loc)
    if kind == "extra_forbidden":
        key = loc[-1]
        if key in getattr(root, "shared_keys", ()) and name != key:
            return f"{name} is shared by every stage: set it at the top level of the config"
        return f"unknown config key {name}; valid keys: {', '.join(owner.model_fields)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{name} must be in {_bounds(info)}; got {value}"
    if kind == "literal_error":
        choices = ", ".join(map(str, _choices(info.annotation)))
        return f"{name} must be one of {choices}; got {value!r}"
    if kind == "value_error":
        message = str(first["ctx"]["error"])
        return f"{message} (in {name})" if name else message
    if kind in ("list_type", "model_type", "model_attributes_type") and \
            loc[:1] == ("students",) and len(loc) <= 2:
        return "students must be a list of mappings of settings"
    what = next((text for key, text in _TYPE_NAMES.items() if kind.startswith(key)), None)
    if what:
        return f"{name} must be {what}; got {value!r}"
    return f"{name}: {first['msg']}" if name else first["msg"]


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _field_at(root: type[BaseModel], loc: tuple):
    """(the model that holds the last key of ``loc``, that key's FieldInfo or None)."""
    owner, info = root, None
    for part in loc:
        if isinstance(part, int):
            continue
        model = _model_in(info.annotation) if info is not None else None
        owner = model or owner
        info = owner.model_fields.get(part)
        if info is None:
            break
    return owner, info


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found:
            return found
    return None


def _choices(annotation: Any) -> tuple:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if _choices(arg):
            return _choices(arg)
    return ()


def _constraints(info) -> dict[str, Any]:
    return {kind: getattr(c, kind) for c in info.metadata
            for kind in ("gt", "ge", "lt", "le") if hasattr(c, kind)}


def _bounds(info) -> str:
    c = _constraints(info) if info is not None else {}
    low = f"({c['gt']}" if "gt" in c else f"[{c.get('ge', '-inf')}"
    high = f"{c['lt']})" if "lt" in c else f"{c.get('le', 'inf')}]"
    return f"{low}, {high}"


def _build(cls: type[BaseModel], values: dict[str, Any], prefix: str) -> Any:
    """A config from a plain mapping, its errors named under ``prefix`` (e.g. 'student.')."""
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        raise UserError(describe(err, cls, prefix)) from None


# --- YAML and command-line overrides ---------------------------------------------------------

def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file as plain data; tags that would construct Python objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    import yaml  # here, not above: the CLI imports this module where only deploy deps exist

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"config {path} is not plain YAML data: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of settings, not {type(data).__name__}")
    return data


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge dotted ``a.b=value`` overrides into a nested mapping (a copy)."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"cannot set {dotted}: {key} is not a section")
        node[leaf] = value
    return merged


def build(cls: type[BaseModel], values: dict[str, Any]) -> Any:
    """A config from a plain mapping (a YAML file, a run's saved config.yaml)."""
    return _build(cls, values, "")


def load_config(cls: type[BaseModel], path: str | None = None,
                overrides: dict[str, Any] | None = None) -> Any:
    """Defaults, then the YAML file, then command-line overrides; coerced and checked."""
    values = read_yaml(path) if path else {}
    return build(cls, apply_overrides(values, overrides or {}))


def to_dict(config: BaseModel) -> dict[str, Any]:
    """The typed values as plain data (what config.yaml holds)."""
    return config.model_dump(mode="json")
