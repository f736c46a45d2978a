"""Config dataclasses to and from plain dicts (JSON / YAML), by one rule.

Every hvx config (``PreprocessConfig``, ``PostprocessConfig``, ``PlanSettings``,
``PlanTarget``, ``AugmentConfig``, ``TrainConfig`` and its sections) reads and
writes its dict form here. The rule (DESIGN §4: a bundle's unknown or missing
fields fail loudly unless a documented default exists):

1. **Unknown keys** raise ``ValueError`` naming the key (dotted path) and every
   allowed key.
2. **Missing keys** raise ``ValueError`` naming the key, unless the field has a
   documented default. A config class documents them in its class attribute
   ``DEFAULTED_KEYS``: a frozenset of field names, or :data:`EVERY_FIELD`; the
   value filled in is the dataclass default (and the class docstring says what
   it means). Without ``DEFAULTED_KEYS`` every field is required: what machines
   write (bundles, plan sidecars) has no defaults.
3. **Nested configs** (a field whose type is a dataclass) are read by the same
   rule. Where the enclosing field may itself be left out, its default instance
   also fills each key left out inside it: ``preprocess: {mode: rgb}`` in a
   training YAML keeps every other preprocessing default.
4. **Types** are coerced in one place (:func:`coerce`), from the field's type
   hint: lists become tuples, ints widen to float, ``"4e-4"`` (a string to
   YAML 1.1) becomes a float; any other mismatch (a bool for an int, a float for
   an int, a str for a number, a wrong tuple length) raises ``ValueError``. Value
   ranges are the dataclass's own ``__post_init__`` checks; their errors are
   re-raised as ``ValueError`` prefixed with the source and section.

:func:`to_dict` is the inverse: every field, nested configs as dicts, tuples as
lists, ready for ``json.dumps`` / ``yaml.safe_dump``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

__all__ = ["EVERY_FIELD", "coerce", "from_dict", "to_dict"]

#: ``DEFAULTED_KEYS = EVERY_FIELD``: every field may be left out (authoring formats
#: such as the training YAML, where a file lists only what differs from the defaults).
EVERY_FIELD = "every field"

_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def to_dict(obj: Any) -> dict[str, Any]:
    """Every field of the dataclass ``obj``, JSON/YAML-ready (nested configs as dicts).

    Args:
        obj: A dataclass instance.

    Returns:
        ``{field: value}`` in field order; tuples become lists, recursively.
    """
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _defaulted(cls: type) -> frozenset[str]:
    names = getattr(cls, "DEFAULTED_KEYS", frozenset())
    if names == EVERY_FIELD:
        return frozenset(f.name for f in dataclasses.fields(cls))
    return frozenset(names)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def from_dict(
    cls: type, d: Any, *, source: str | None = None, prefix: str = "", fill: Any = None
) -> Any:
    """Builds the config dataclass ``cls`` from its dict form, by the module's rule.

    Args:
        cls: The config dataclass.
        d: The mapping read from JSON / YAML.
        source: Where ``d`` comes from (a file, "overrides"), the start of every
            error message; default: the class name.
        prefix: Dotted path of ``d`` inside the document (``"preprocess."``).
        fill: An instance of ``cls`` whose values fill every missing key (rule 3;
            used for nested configs whose enclosing field has a default).

    Returns:
        The ``cls`` instance.

    Raises:
        ValueError: ``d`` is not a mapping; an unknown key; a missing key without a
            documented default; a value of the wrong type; an invalid value.
    """
    source = source or cls.__name__
    if not isinstance(d, dict):
        at = f"for {prefix[:-1]}" if prefix else "at the top level"
        raise ValueError(f"{source}: expected a mapping {at}, got {type(d).__name__} {d!r}")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    unknown = [k for k in d if k not in names]
    if unknown:
        keys = ", ".join(repr(f"{prefix}{k}") for k in unknown)
        raise ValueError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {keys}; "
            f"expected one of {', '.join(names)}"
        )
    defaulted = _defaulted(cls)
    missing = [n for n in names if n not in d and fill is None and n not in defaulted]
    if missing:
        keys = ", ".join(repr(f"{prefix}{k}") for k in missing)
        documented = ", ".join(sorted(defaulted)) or "none"
        raise ValueError(
            f"{source}: missing key{'s' if len(missing) > 1 else ''} {keys}; "
            f"{cls.__name__} fields with a documented default: {documented}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields:
        if f.name in d:
            inner = getattr(fill, f.name) if fill is not None else None
            if inner is None and f.name in defaulted:
                inner = _default_of(f)
            kwargs[f.name] = _value(d[f.name], hints[f.name], source, prefix + f.name, inner)
        elif fill is not None:
            kwargs[f.name] = getattr(fill, f.name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        at = f"{prefix[:-1]}: " if prefix else ""
        raise ValueError(f"{source}: {at}{err}") from None


def _value(v: Any, hint: Any, source: str, key: str, fill: Any) -> Any:
    """A field's value: a nested config (rule 3) or a coerced scalar/container.

    A nested config given as None (YAML's ``section:`` with nothing under it) is
    an empty mapping, unless the hint allows None.
    """
    target = _dataclass_in(hint)
    if target is None:
        return coerce(v, hint, key, source)
    if isinstance(v, target):
        return v
    if v is None:
        if type(None) in typing.get_args(hint):
            return None
        v = {}
    inner = fill if isinstance(fill, target) else None
    return from_dict(target, v, source=source, prefix=key + ".", fill=inner)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass type of a hint (``X`` or ``X | None``), or None."""
    args = typing.get_args(hint) if typing.get_origin(hint) in _UNIONS else (hint,)
    for a in args:
        if isinstance(a, type) and dataclasses.is_dataclass(a):
            return a
    return None


_UNIONS = (typing.Union, types.UnionType)


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Checks/converts one value to a field's type hint (rule 4).

    Args:
        value: The value read.
        hint: The field's resolved type hint.
        key: Dotted name of the field, for the error message.
        source: Start of the error message.

    Returns:
        The value, converted (list -> tuple, int -> float, float literal -> float).

    Raises:
        ValueError: ``expected KEY of type T, got VALUE``.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key, source)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0])
    bad = ValueError(f"{source}: expected {key} of type {_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{source}: expected {key} one of {list(args)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads "4e-4" or "1e3" (no dot) as a str
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key, source) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(coerce(v, a, key, source) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        kt, vt = args
        return {coerce(k, kt, key, source): coerce(v, vt, key, source) for k, v in value.items()}
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
