"""Button data, typed: every inline button's `callback_data` is packed and unpacked by one family here.

Telegram hands a button's data back exactly as it was sent, from anyone who can see the message, for as long
as the message exists: so data is input to check, never a promise. A family is a frozen dataclass whose fields
are the data's parts, after a prefix that routes it:

    @dataclass(frozen=True)
    class TriagePress(Callback, prefix="t"):
        report: int
        action: Literal["ack", "take"]

    TriagePress(12, "take").pack()   -> "t:12:take"   (BadCallback over Telegram's 64 bytes)
    TriagePress.unpack("t:12:take")  -> TriagePress(report=12, action="take")
    TriagePress.unpack("t:12")       -> BadCallback (wrong arity, type, choice or prefix)
    CallbackQueryHandler(handler, pattern=TriagePress.matches)

The wire format is the one the bot has always written (prefix and parts joined by ":"), so buttons on cards
sent before an upgrade keep working. Supported part types: int (decimal, as Telegram ids and row ids are), str
(without ":"; a shape is checked with `Annotated[str, Shape(r"[0-9a-f]+")]`), Literal choices, and trailing
parts with a default (left out while they hold it).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

SEPARATOR = ":"
MAX_BYTES = 64  # Telegram refuses longer data with BUTTON_DATA_INVALID
_INT = re.compile(r"-?\d{1,19}")


class BadCallback(ValueError):
    """Data that no family here would have written: forged, stale from another version, or cut."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """A regular expression a str part must match in full (unpacking only; packing trusts the code)."""

    pattern: str


@dataclasses.dataclass(frozen=True)
class _Part:
    name: str
    kind: type | tuple[str, ...]  # int or str, or the choices of a Literal
    shape: re.Pattern[str] | None
    default: Any  # dataclasses.MISSING when the part is required


class Callback:
    """Base of every button family; subclasses are frozen dataclasses declared with `prefix=`."""

    prefix: ClassVar[str]
    _families: ClassVar[dict[str, type[Callback]]] = {}

    def __init_subclass__(cls, *, prefix: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not prefix or SEPARATOR in prefix:
            raise TypeError(f"a button prefix is a non-empty word without {SEPARATOR!r}: {prefix!r}")
        if prefix in Callback._families:
            raise TypeError(f"button prefix {prefix!r} is taken by {Callback._families[prefix].__name__}")
        cls.prefix = prefix
        Callback._families[prefix] = cls

    @classmethod
    def families(cls) -> dict[str, type[Callback]]:
        """Every family declared so far, by prefix."""
        return dict(Callback._families)

    def pack(self) -> str:
        """Return the data to put on a button; BadCallback if Telegram would refuse it."""
        parts = [self.prefix]
        trailing: list[str] = []
        for part in _parts(type(self)):
            value = getattr(self, part.name)
            text = _encode(part, value)
            if part.default is not dataclasses.MISSING and value == part.default:
                trailing.append(text)
                continue
            parts.extend(trailing)
            trailing.clear()
            parts.append(text)
        data = SEPARATOR.join(parts)
        if len(data.encode()) > MAX_BYTES:
            raise BadCallback(f"{type(self).__name__} packs to {len(data.encode())} bytes, over {MAX_BYTES}")
        return data

    @classmethod
    def unpack(cls, data: object) -> Self:
        """Return the family's value for `data`, checked for prefix, arity, types and choices."""
        if not isinstance(data, str) or len(data.encode()) > MAX_BYTES:
            raise BadCallback("not button data")
        prefix, *raw = data.split(SEPARATOR)
        if prefix != cls.prefix:
            raise BadCallback(f"not a {cls.__name__}")
        parts = _parts(cls)
        required = sum(1 for part in parts if part.default is dataclasses.MISSING)
        if not required <= len(raw) <= len(parts):
            raise BadCallback(f"{cls.__name__} takes {len(parts)} parts, got {len(raw)}")
        values = {part.name: _decode(part, text) for part, text in zip(parts, raw, strict=False)}
        return cls(**values)

    @classmethod
    def matches(cls, data: object) -> bool:
        """Whether `data` unpacks as this family (for CallbackQueryHandler's pattern)."""
        try:
            cls.unpack(data)
        except BadCallback:
            return False
        return True


def _encode(part: _Part, value: Any) -> str:
    if part.kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadCallback(f"{part.name} must be an int, not {value!r}")
        return str(value)
    text = str(value)
    if SEPARATOR in text:
        raise BadCallback(f"{part.name} may not hold {SEPARATOR!r}: {text!r}")
    if isinstance(part.kind, tuple) and text not in part.kind:
        raise BadCallback(f"{part.name} is one of {part.kind}, not {text!r}")
    return text


def _decode(part: _Part, text: str) -> Any:
    if part.kind is int:
        if not _INT.fullmatch(text):
            raise BadCallback(f"{part.name} is not a number")
        return int(text)
    if isinstance(part.kind, tuple) and text not in part.kind:
        raise BadCallback(f"{part.name} is not one of its choices")
    if part.shape is not None and not part.shape.fullmatch(text):
        raise BadCallback(f"{part.name} does not have its shape")
    return text


_PARTS: dict[type[Callback], tuple[_Part, ...]] = {}


def _parts(cls: type[Callback]) -> tuple[_Part, ...]:
    if cls not in _PARTS:
        _PARTS[cls] = _read_parts(cls)
    return _PARTS[cls]


def _read_parts(cls: type[Callback]) -> tuple[_Part, ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass")
    hints = typing.get_type_hints(cls, include_extras=True)
    parts = []
    for field in dataclasses.fields(cls):
        hint, shape = hints[field.name], None
        if get_origin(hint) is Annotated:
            hint, *extras = get_args(hint)
            shape = next((re.compile(e.pattern) for e in extras if isinstance(e, Shape)), None)
        kind: type | tuple[str, ...]
        if hint is int or hint is str:
            kind = hint
        elif get_origin(hint) is Literal:
            kind = tuple(str(choice) for choice in get_args(hint))
        elif isinstance(hint, types.UnionType):
            raise TypeError(f"{cls.__name__}.{field.name}: give a default instead of a union")
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: unsupported part type {hint!r}")
        parts.append(_Part(field.name, kind, shape, field.default))
    return tuple(parts)


# Guided command flows
# Every button carries the flow's nonce and the step it was shown for: a press on an older step of this
# flow, on an ended flow or on someone else's flow finds no flow to match and changes nothing.

_NONCE = Annotated[str, Shape(r"[0-9a-f]{1,16}")]  # 16 in use; the stored nonce is what counts


@dataclasses.dataclass(frozen=True)
class FlowPress(Callback, prefix="gf"):
    """A button of a guided command's step: pick a choice or a case, skip, go back, cancel, save."""

    nonce: _NONCE
    step: int
    action: Literal["pick", "skip", "back", "cancel", "save"]
    value: Annotated[str, Shape(r"[0-9a-z_]{1,24}")] = "-"


@dataclasses.dataclass(frozen=True)
class DatePress(Callback, prefix="dp"):
    """A button of the date and time picker: a month (yyyymm), a day (yyyymmdd), an hour, a minute, or
    "type it" (value 0)."""

    nonce: _NONCE
    step: int
    action: Literal["month", "day", "hour", "minute", "type"]
    value: int = 0
