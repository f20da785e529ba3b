"""Options as dataclass fields: one definition gives the Python keyword, the command-line flag, the YAML
key, the check and the help text.

A field made with ``opt`` carries its help, choices, numeric range (``lo``/``hi``, open or closed), an
extra ``check`` and how it appears on the command line (a flag, or a positional argument). ``build(cls,
values)`` coerces and checks every value the way the flag would (so ``imgcls.train(lr=-1)`` and
``imgcls train --lr -1`` fail with the same line); ``add_flags`` turns a dataclass into argparse
arguments; ``given(cls, args)`` reads back the ones the user set.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field, fields
from functools import cache
from typing import Any

from imgcls.core.errors import ImgclsError


def opt(
    default: Any,
    help: str,
    *,
    choices=None,
    lo=None,
    hi=None,
    lo_open=False,
    hi_open=False,
    resumable: bool = False,
    flag: bool = True,
    check=None,
    positional: bool = False,
    nargs: str | None = None,
    metavar: str | None = None,
    split: bool = True,
) -> Any:
    """An option field. ``lo``/``hi`` bound numbers (``*_open``: the bound itself is excluded);
    ``check(value) -> str | None`` returns a complaint for values a range cannot describe; ``resumable``:
    ``train --resume`` may change it; ``flag=False``: no command-line flag; ``positional``: an argument
    without a flag (``nargs`` as argparse's); ``split``: a list option given as one string is split on
    commas (False: it is one item, e.g. a path)."""
    meta = dict(
        help=help,
        choices=choices,
        lo=lo,
        hi=hi,
        lo_open=lo_open,
        hi_open=hi_open,
        resumable=resumable,
        flag=flag,
        check=check,
        positional=positional,
        nargs=nargs,
        metavar=metavar,
        split=split,
    )
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def like(cls, name: str) -> Any:
    """The option ``name`` of ``cls`` again, in another options class: the same default, help and checks
    (the type hint is written again beside it)."""
    f = option_fields(cls)[name]
    return field(default=f.default, metadata=f.metadata)


@cache
def option_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(cls)}


@cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls, name: str) -> tuple[type, bool]:
    """(base type, optional) from the field's type hint, e.g. ``int | None`` -> (int, True)."""
    hint = _hints(cls)[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    base = [a for a in args if a is not type(None)][0] if args else hint
    return typing.get_origin(base) or base, bool(args)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def label(cls, name: str) -> str:
    """How the user calls the option: its flag, or a positional argument's name in capitals."""
    return name.upper() if option_fields(cls)[name].metadata.get("positional") else flag_name(name)


def _coerce_scalar(kind: type, value: Any, split: bool = True) -> Any:
    if kind is list:
        items = (value.split(",") if split else [value]) if isinstance(value, str) else value
        if isinstance(items, tuple):
            items = list(items)
        if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
            raise ValueError("expected a list of names")
        return [v.strip() if split else v for v in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError("expected true or false")
    if hasattr(value, "__fspath__") and kind is str:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected {kind.__name__}")
    if kind is str:
        return str(value)
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError("expected a whole number" if kind is int else "expected a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("must be a finite number")
    if kind is int:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        if float(number) != int(number):
            raise ValueError("expected a whole number")
        return int(number)
    return float(number)


def _shown(value) -> str:
    """A value as the user typed it: the same text whether it came as a flag (a string) or a keyword."""
    return value if isinstance(value, str) and value.strip() == value and value else repr(value)


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) and abs(v) >= 1_000_000 else str(v)


def rule(meta: dict) -> str:
    """A field's range in words: "at least 1", "0 or more", "between 2 and 20", "> 0"..."""
    lo, hi, lo_open, hi_open = meta["lo"], meta["hi"], meta["lo_open"], meta["hi_open"]
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"between {_num(lo)} and {_num(hi)}"
        if lo_open and hi_open:
            return f"between {_num(lo)} and {_num(hi)}, both excluded"
        return f"> {_num(lo)} and <= {_num(hi)}" if lo_open else f">= {_num(lo)} and < {_num(hi)}"
    if lo is not None:
        return f"> {_num(lo)}" if lo_open else "0 or more" if lo == 0 else f"at least {_num(lo)}"
    return f"< {_num(hi)}" if hi_open else f"at most {_num(hi)}"


def coerce(cls, name: str, value: Any) -> Any:
    """``value`` (from Python, YAML or a flag) as the field's type, checked against its range and choices."""
    kind, optional = field_type(cls, name)
    meta = option_fields(cls)[name].metadata
    flag = label(cls, name)
    if value is None:
        if optional:
            return None
        raise ImgclsError(f"{flag} needs a value")
    try:
        out = _coerce_scalar(kind, value, meta.get("split", True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImgclsError(f"{flag}: bad value {_shown(value)} ({exc})") from None
    if kind is list:
        bad = [v for v in out if meta["choices"] is not None and v not in meta["choices"]]
        if bad:
            raise ImgclsError(f"{flag}: {', '.join(bad)} not among {', '.join(meta['choices'])}")
        return out
    if meta["choices"] is not None and out not in meta["choices"]:
        raise ImgclsError(f"{flag}: {_shown(out)} is not one of {', '.join(map(str, meta['choices']))}")
    lo, hi = meta["lo"], meta["hi"]
    if (lo is not None and (out < lo or (meta["lo_open"] and out == lo))) or (
        hi is not None and (out > hi or (meta["hi_open"] and out == hi))
    ):
        raise ImgclsError(f"{flag} must be {rule(meta)}, got {value}")
    complaint = meta["check"](out) if meta["check"] else None
    if complaint:
        raise ImgclsError(f"{flag}: bad value {_shown(out)} ({complaint})")
    return out


def check_names(cls, values: dict, *, where: str = "") -> None:
    unknown = sorted(set(values) - set(option_fields(cls)))
    if unknown:
        valid = ", ".join(sorted(option_fields(cls)))
        raise ImgclsError(f"{where + ': ' if where else ''}unknown option(s) {', '.join(unknown)}; valid: {valid}")


def build(cls, values: dict[str, Any], *, where: str = ""):
    """``cls(**values)``, every value coerced and checked; unknown names refused in one line."""
    check_names(cls, values, where=where)
    return cls(**{k: coerce(cls, k, v) for k, v in values.items()})


def add_flags(parser, cls, *, exclude: set[str] = frozenset(), only: set[str] | None = None) -> None:
    """One argparse argument per field (help, choices and default from its metadata); values stay raw
    and are coerced by ``coerce``, so flags and keywords fail the same way."""
    import argparse

    for name, f in option_fields(cls).items():
        meta = f.metadata
        if name in exclude or not meta["flag"] or (only is not None and name not in only):
            continue
        kind, _ = field_type(cls, name)
        default = "" if f.default in (None, dataclasses.MISSING) or kind is bool else f" (default: {f.default})"
        text = meta["help"] + ("" if "default" in meta["help"] or "recipe" in meta["help"] else default)
        text = text.replace("%", "%%")
        if meta["positional"]:
            parser.add_argument(name, nargs=meta["nargs"], metavar=meta["metavar"] or name.upper(), help=text)
        elif kind is bool:
            parser.add_argument(
                flag_name(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            choices = meta["choices"]
            metavar = meta["metavar"] or ("{" + ",".join(map(str, choices)) + "}" if choices else name.upper())
            nargs = meta["nargs"]
            parser.add_argument(flag_name(name), dest=name, default=None, metavar=metavar, nargs=nargs, help=text)


def given(cls, args) -> dict[str, Any]:
    """The fields of ``cls`` set on the command line (argparse's namespace)."""
    return {k: getattr(args, k) for k in option_fields(cls) if getattr(args, k, None) is not None}
