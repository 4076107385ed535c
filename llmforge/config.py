"""Frozen dataclass configs: YAML loading, `--set a.b=c` overrides, type checks, help text.

A stage's `Config` is a frozen dataclass whose fields are declared with `param(default,
help)`. Nested dataclasses become nested YAML maps. Loading rejects unknown keys (with a
did-you-mean), wrong types and impossible values; every error names the key and, when it
came from a file, the file and line.

We hand-write this rather than use OmegaConf/pydantic: we need exact control over the
error messages (file and line for every key) and frozen stdlib dataclasses the rest of the
code can hash and serialise, and this is about 200 lines.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from llmforge.errors import BadInput, ConfigError

_MISSING = dataclasses.MISSING


def param(default: Any = _MISSING, help: str = "", **kwargs: Any) -> Any:
    """Declare a config field with its help text. Mutable defaults are copied per instance."""
    metadata = {"help": help, **kwargs.pop("metadata", {})}
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        value = default
        factory = (
            (lambda: type(value)(value))
            if not dataclasses.is_dataclass(value)
            else (lambda: dataclasses.replace(value))
        )
        return dataclasses.field(default_factory=factory, metadata=metadata, **kwargs)
    if default is _MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


# ---------------------------------------------------------------- YAML with line numbers


def _line_index(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    """Record the 1-based line of every key path in a composed YAML tree."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            _line_index(value_node, key + ".", out)


def read_yaml(path: str | Path) -> tuple[dict, dict[str, int]]:
    """Read a YAML mapping with `safe_load` semantics, plus the line of every key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is dropped
    except FileNotFoundError:
        raise BadInput("config file not found", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise BadInput(f"config is not UTF-8 ({e.reason})", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise BadInput(
            f"invalid YAML: {getattr(e, 'problem', e)}", path=str(path), line=line
        ) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise BadInput("a config file must hold a mapping of keys", path=str(path), line=1)
    lines: dict[str, int] = {}
    _line_index(node, "", lines)
    return data, lines


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one `a.b=value` override; the value is read as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise BadInput(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = data.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"'{part}' is not a section")
        data = child
    data[parts[-1]] = value


# ---------------------------------------------------------------- building dataclasses


class _Where:
    """Where config values came from, for error messages."""

    def __init__(self, path: str | None, lines: dict[str, int], overridden: set[str]):
        self.path, self.lines, self.overridden = path, lines, overridden

    def error(self, key: str, message: str) -> ConfigError:
        if key in self.overridden or self.path is None:
            return ConfigError(key, message + (" (from --set)" if key in self.overridden else ""))
        return ConfigError(key, message, path=self.path, line=self.lines.get(key))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: _Where) -> Any:
    """Check `value` against type `tp`, converting lists to tuples and maps to dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise where.error(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise where.error(key, f"must be one of {list(args)}, got {value!r}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping for section, got {value!r}")
        return _build(tp, value, key + ".", where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise where.error(key, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise where.error(key, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise where.error(key, f"expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise where.error(key, f"expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str, where: _Where) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        key = prefix + str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise where.error(key, f"unknown key{hint}")
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]):
            value = _merge(_default_dict(fields[name]), value)
        kwargs[name] = _coerce(value, hints[name], key, where)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise where.error(prefix + e.key, str(e).split(": ", 1)[-1]) from None
    except TypeError as e:  # a required field is missing
        raise where.error(prefix.rstrip(".") or cls.__name__, str(e)) from None


def _default_dict(f: dataclasses.Field) -> dict:
    """A nested section's default instance as a dict, so user keys override it key by key."""
    if f.default is not _MISSING and dataclasses.is_dataclass(f.default):
        return to_dict(f.default)
    if f.default_factory is not _MISSING:
        value = f.default_factory()
        return to_dict(value) if dataclasses.is_dataclass(value) else {}
    return {}


def load(
    cls: type,
    path: str | Path | None = None,
    sets: typing.Iterable[str] = (),
    base: dict | None = None,
) -> Any:
    """Build `cls` from an optional YAML file, a base dict and `--set` overrides, in that order."""
    data: dict = dict(base or {})
    lines: dict[str, int] = {}
    if path is not None:
        file_data, lines = read_yaml(path)
        data = _merge(data, file_data)
    overridden = set()
    for item in sets:
        key, value = parse_set(item)
        _set_path(data, key, value)
        overridden.add(key)
    return _build(cls, data, "", _Where(str(path) if path else None, lines, overridden))


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a config from its resolved dict (e.g. a manifest's `config`)."""
    return _build(cls, data, "", _Where(None, {}, set()))


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain JSON-able data (tuples become lists)."""
    return _jsonable(dataclasses.asdict(cfg))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Every field as (key, type, default, help), nested sections flattened."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, prefix + f.name + "."))
            continue
        if f.default is not _MISSING:
            default = repr(f.default)
        elif f.default_factory is not _MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((prefix + f.name, _type_name(tp), default, f.metadata.get("help", "")))
    return rows


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless `condition` holds; for `__post_init__`."""
    if not condition:
        raise ConfigError(key, message)
