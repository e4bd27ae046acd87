r"""Button data, typed: every inline button's `callback_data` is packed and unpacked by one family here.

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
(without ":"; a shape is checked with `Annotated[str, Shape(r"[0-9a-f]+")]`, and an int's digits with
`Annotated[int, Shape(r"\d{1,9}")]`), Literal choices, and trailing parts with a default (left out while they
hold it). A family whose later parts depend on an earlier one checks them in `__post_init__`, raising
BadCallback: unpacking refuses such data, and the code cannot build it.

Routing: `pattern=Family.matches` (the data unpacks), `Family.where(action="rv")` (it unpacks with those
values), `any_of(A, B)` (either unpacks), and `Family.claims` (only the prefix: for a handler that answers
its own malformed data, audited, with its own text).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

from bot.domain.languages import LANGUAGES

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

    @staticmethod
    def family_of(data: object) -> type[Callback] | None:
        """The family whose prefix `data` carries, well formed or not; None for data no family writes."""
        if not isinstance(data, str):
            return None
        return Callback._families.get(data.split(SEPARATOR, 1)[0])

    @classmethod
    def claims(cls, data: object) -> bool:
        """Whether `data` has this family's prefix, well formed or not (the handler unpacks and answers)."""
        return isinstance(data, str) and data.split(SEPARATOR, 1)[0] == cls.prefix

    @classmethod
    def where(cls, **values: object) -> Callable[[object], bool]:
        """Return a pattern for data that unpacks as this family with these parts' values."""
        names = {part.name for part in _parts(cls)}
        if not values.keys() <= names:
            raise TypeError(f"{cls.__name__} has no part {sorted(values.keys() - names)}")

        def matches(data: object) -> bool:
            try:
                value = cls.unpack(data)
            except BadCallback:
                return False
            return all(getattr(value, name) == wanted for name, wanted in values.items())

        return matches


def any_of(*families: type[Callback]) -> Callable[[object], bool]:
    """Return a pattern for data that unpacks as any of these families."""

    def matches(data: object) -> bool:
        return any(family.matches(data) for family in families)

    return matches


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
        if not _INT.fullmatch(text) or (part.shape is not None and not part.shape.fullmatch(text)):
            raise BadCallback(f"{part.name} is not a number of its shape")
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


# ---- The families: every button the bot puts under a message. The prefixes and the order of the parts are
# the wire format of cards already sitting in chats; change neither.

# A row id as handlers always read one (fewer than 10 digits): longer is forged, and would overflow SQL.
Id = Annotated[int, Shape(r"\d{1,9}")]
# A draft's nonce (secrets.token_hex(8), NONCE_LENGTH digits); any hex reaches the service, whose answer to
# a draft it does not know ("expired, send /report") is what a press of an unknown draft always got.
NONCE_LENGTH = 16
Nonce = Annotated[str, Shape(r"[0-9a-f]+")]
# A report's code as coordinators see it.
Code = Annotated[str, Shape(r"R-[0-9A-Z]{5}")]
Word = Annotated[str, Shape(r"[a-z_]+")]


# Menu: the one-tap buttons under /start.
@dataclasses.dataclass(frozen=True)
class MenuPress(Callback, prefix="menu"):
    item: Literal["report", "sos"]


# Reports: a button of the guided form names its draft and the step it belongs to, so an old one changes
# nothing; `arg` is always written, empty when the action takes none ("r:NONCE:STEP:keep:").
ReportAction = Literal[
    "resume", "restart", "cat", "when", "region", "keep", "skip", "done", "contact", "back", "edit", "submit",
    "cancel",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ReportPress(Callback, prefix="r"):
    draft: Nonce
    step: Word
    action: ReportAction
    arg: Annotated[str, Shape(r"[a-z_]*")]


# SOS: send (the second tap), cancel, and done on the follow-up screen.
@dataclasses.dataclass(frozen=True)
class SosPress(Callback, prefix="s"):
    draft: Nonce
    action: Literal["go", "cancel", "done"]


# Triage: the buttons on an alert card in the coordinators' chat.
TriageAction = Literal["ack", "take", "verify", "close", "spam", "reopen"]


@dataclasses.dataclass(frozen=True)
class TriagePress(Callback, prefix="t"):
    report: Code
    action: TriageAction


# Digest: open one report's full card in private.
@dataclasses.dataclass(frozen=True)
class OpenCard(Callback, prefix="o"):
    report: Code


# Duty: the /duty switch.
@dataclasses.dataclass(frozen=True)
class DutyPress(Callback, prefix="duty"):
    to: Literal["on", "off"]


# Desk lists: /reports' Next button carries the page to show, the id to continue before, and the filters
# packed by bot.services.desk.browse.encode_query ("" for none).
@dataclasses.dataclass(frozen=True)
class ReportListPage(Callback, prefix="rl"):
    page: Id
    before: Id
    filters: Annotated[str, Shape(r"[0-9a-f.\-]*")]


# Team: Revoke under /team ("rv"), then its confirmation ("rvy"), by member reference.
@dataclasses.dataclass(frozen=True)
class TeamPress(Callback, prefix="tm"):
    step: Literal["rv", "rvy"]
    member: Annotated[str, Shape(r"[0-9a-f]+")]


# Invites: withdraw an unused invite.
@dataclasses.dataclass(frozen=True)
class InvitePress(Callback, prefix="inv"):
    action: Literal["x"]
    invite: Id


# Campaigns, as recipients see them ("cp"), and the same buttons on an author's preview ("pv"), which only
# say they are a preview.
CampaignAction = Literal["acted", "template", "remind", "stop"]


@dataclasses.dataclass(frozen=True)
class CampaignPress(Callback, prefix="cp"):
    campaign: Id
    action: CampaignAction


@dataclasses.dataclass(frozen=True)
class CampaignPreviewPress(Callback, prefix="pv"):
    campaign: Id
    action: CampaignAction


# Compose: the draft card's buttons. Two carry a choice: "tpl" a template language (cc:ID:tpl:ru), "aud" an
# audience (cc:ID:aud:all, cc:ID:aud:language:uz, cc:ID:aud:topic:urgent).


ComposeAction = Literal[
    "text", "image", "link", "deadline", "schedule", "case", "template", "tpl", "audience", "aud", "channels",
    "preview", "send", "cancel", "ledger",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ComposePress(Callback, prefix="cc"):
    campaign: Id
    action: ComposeAction
    choice: Annotated[str, Shape(r"\w+")] = ""
    value: Annotated[str, Shape(r"\w+")] = ""

    def __post_init__(self) -> None:
        if self.action == "tpl":
            valid = self.choice in LANGUAGES and not self.value
        elif self.action == "aud":
            valid = (
                (self.choice == "all" and not self.value)
                or (self.choice == "language" and re.fullmatch(r"\w\w", self.value) is not None)
                or (self.choice == "topic" and bool(self.value))
            )
        else:
            valid = not self.choice and not self.value
        if not valid:
            raise BadCallback(f"{self.action} does not take {self.choice!r}, {self.value!r}")


# Approval: the second coordinator's Approve under a campaign awaiting it.
@dataclasses.dataclass(frozen=True)
class ApprovePress(Callback, prefix="ca"):
    campaign: Id
    action: Literal["approve"]


# Subscriptions: toggle a topic, or open the language choice.
Topic = Literal["campaigns", "hearings", "urgent"]


@dataclasses.dataclass(frozen=True)
class SubscriptionPress(Callback, prefix="sub"):
    topic: Literal[Topic, "lang"]


# Language and time zone. The language code is checked by the service (its refusal is an alert).
@dataclasses.dataclass(frozen=True)
class LanguagePress(Callback, prefix="lang"):
    code: str


@dataclasses.dataclass(frozen=True)
class TimezonePress(Callback, prefix="tz"):
    index: Id


# Cases: follow a case, "I will attend" a hearing (its sequence tells a moved hearing's old reminder), its
# calendar file, and the reminder offsets in /settings.
@dataclasses.dataclass(frozen=True)
class FollowCase(Callback, prefix="cf"):
    case: Id


@dataclasses.dataclass(frozen=True)
class AttendPress(Callback, prefix="att"):
    hearing: Id
    sequence: Id


@dataclasses.dataclass(frozen=True)
class CalendarPress(Callback, prefix="ics"):
    hearing: Id


@dataclasses.dataclass(frozen=True)
class ReminderOffset(Callback, prefix="ro"):
    minutes: Id


# Forget: confirm or keep everything.
@dataclasses.dataclass(frozen=True)
class ForgetPress(Callback, prefix="forget"):
    answer: Literal["yes", "no"]


# Guided command flows
# Every button carries the flow's nonce and the step it was shown for: a press on an older step of this
# flow, on an ended flow or on someone else's flow finds no flow to match and changes nothing.

_NONCE = Annotated[str, Shape(r"[0-9a-f]{1,16}")]  # 16 in use; the stored nonce is what counts


@dataclasses.dataclass(frozen=True)
class FlowPress(Callback, prefix="gf"):
    """A button of a guided command's step: pick a choice or a case, skip, go back, cancel, save."""

    nonce: _NONCE
    step: Annotated[int, Shape(r"\d{1,2}")]
    action: Literal["pick", "skip", "back", "cancel", "save"]
    value: Annotated[str, Shape(r"[0-9a-z_]{1,24}")] = "-"

    def __post_init__(self) -> None:
        # Only a pick carries a value: a pick cut short, or another action with one, was not written here.
        if (self.action == "pick") == (self.value == "-"):
            raise BadCallback(f"{self.action} with {self.value!r}")


@dataclasses.dataclass(frozen=True)
class DatePress(Callback, prefix="dp"):
    """A button of the date and time picker: a month (yyyymm), a day (yyyymmdd), an hour, a minute, or
    "type it" (no value)."""

    nonce: _NONCE
    step: Annotated[int, Shape(r"\d{1,2}")]
    action: Literal["month", "day", "hour", "minute", "type"]
    value: Annotated[int, Shape(r"\d{1,8}")] = -1

    def __post_init__(self) -> None:
        # "type" carries nothing, the rest a value (minute 0 included): a press cut short is refused.
        if (self.action == "type") != (self.value == -1):
            raise BadCallback(f"{self.action} with {self.value!r}")


# Backup bots, under /bots (admins): invite everyone to start the backup, switch to a bot, confirm it.
BotId = Annotated[int, Shape(r"\d{1,20}")]


@dataclasses.dataclass(frozen=True)
class FleetPress(Callback, prefix="fl"):
    action: Literal["inv", "sw", "swy"]
    bot: BotId
