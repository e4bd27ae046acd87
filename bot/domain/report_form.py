"""The guided report as data: its steps, what each accepts, and where Back and Edit lead. No I/O here."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.domain.errors import BadInput

CATEGORIES: tuple[str, ...] = (
    "detention", "summons", "search", "violence", "threats",
    "surveillance", "journalist", "court", "online", "other",
)  # fmt: skip
# Kyrgyzstan's cities of republican significance and its regions, then everywhere else.
REGIONS: tuple[str, ...] = (
    "bishkek", "osh_city", "batken", "chui", "issyk_kul",
    "jalal_abad", "naryn", "osh_region", "talas", "elsewhere",
)  # fmt: skip
WHEN_CHOICES: tuple[str, ...] = ("now", "today", "yesterday", "type")

MAX_TEXT = 4000
MAX_PEOPLE = 1000
MAX_PLACE = 200
MAX_SOS_LINE = 500
MAX_EVIDENCE = 10
EARLIEST_YEAR = 1991  # the year of Kyrgyzstan's independence; earlier dates are typing mistakes
# About a kilometre: enough for coordinators to know the district, not the doorway.
LOCATION_DECIMALS = 2

# Main order of the guided report; sub-steps (typed date, free-text place) hang off their parents.
ORDER: tuple[str, ...] = (
    "category",
    "when",
    "where",
    "location",
    "text",
    "people",
    "evidence",
    "contact",
    "review",
)
_BACK: dict[str, str] = {
    "when": "category",
    "when_typed": "when",
    "where": "when",
    "place": "where",
    "location": "where",
    "text": "location",
    "people": "text",
    "evidence": "people",
    "contact": "evidence",
    "review": "contact",
}
# Review-screen fields and the step that edits each.
EDITABLE: dict[str, str] = {
    "category": "category",
    "when": "when",
    "where": "where",
    "location": "location",
    "text": "text",
    "people": "people",
    "evidence": "evidence",
    "contact": "contact",
}
# Steps waiting for something typed or sent rather than a button.
INPUT_STEPS = frozenset({"when_typed", "place", "location", "text", "people", "evidence"})

_FORMATS = (
    ("%d.%m.%Y %H:%M", True),
    ("%Y-%m-%d %H:%M", True),
    ("%d.%m.%Y", False),
    ("%Y-%m-%d", False),
)


class FormError(BadInput, ValueError):
    """Input a step refuses; `key` names the text that explains why."""


@dataclass
class Draft:
    """Everything typed so far; stored encrypted as JSON."""

    nonce: str
    kind: str = "report"
    step: str = "category"
    category: str | None = None
    occurred_at: str | None = None  # ISO, UTC
    precision: str | None = None  # "exact" or "date"
    region: str | None = None
    place: str | None = None
    location: list[float] | None = None
    text: str | None = None
    people: str | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    contactable: bool | None = None
    editing: bool = False
    # Ids of this conversation's messages in the private chat, deleted after submit.
    messages: list[int] = field(default_factory=list)
    report_code: str | None = None  # an SOS draft's report, for follow-ups
    chat_id: int | None = None  # the private chat, to delete the conversation if the draft expires

    def to_json(self) -> dict[str, Any]:
        """Return the draft as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Draft:
        """Rebuild a draft, ignoring fields a newer version added."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def track(self, *message_ids: int | None) -> None:
        """Remember messages to delete later."""
        for message_id in message_ids:
            if message_id is not None and message_id not in self.messages:
                self.messages.append(message_id)

    def advance(self) -> None:
        """Go to the next step, or back to the review when editing."""
        if self.editing:
            self.step, self.editing = "review", False
            return
        parent = {"when_typed": "when", "place": "where"}.get(self.step, self.step)
        following = {"where": "location"} if parent == "where" else {}
        self.step = following.get(parent) or ORDER[ORDER.index(parent) + 1]

    def back(self) -> None:
        """Go one step back (to the review when editing)."""
        if self.editing:
            self.step, self.editing = "review", False
            return
        self.step = _BACK.get(self.step, "category")

    def edit(self, field_name: str) -> None:
        """Jump from the review to the step that edits one field."""
        if field_name not in EDITABLE:
            raise FormError("report.stale")
        self.step, self.editing = EDITABLE[field_name], True


def choose_category(draft: Draft, category: str) -> None:
    """Set the category."""
    if category not in CATEGORIES:
        raise FormError("report.stale")
    draft.category = category
    draft.advance()


def choose_when(draft: Draft, choice: str, now: datetime, zone: ZoneInfo) -> None:
    """Set the time from a button; "type" asks for a date."""
    local_today = now.astimezone(zone).date()
    if choice == "now":
        draft.occurred_at, draft.precision = now.astimezone(UTC).isoformat(), "exact"
    elif choice in ("today", "yesterday"):
        day = local_today - timedelta(days=1 if choice == "yesterday" else 0)
        draft.occurred_at, draft.precision = _midnight(day, zone), "date"
    elif choice == "type":
        draft.step = "when_typed"
        return
    else:
        raise FormError("report.stale")
    draft.advance()


def type_when(draft: Draft, typed: str, now: datetime, zone: ZoneInfo) -> None:
    """Parse a typed date or date and time in the organisation's zone; refuse the future."""
    text = re.sub(r"\s+", " ", typed.strip())
    for fmt, has_time in _FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)  # noqa: DTZ007 - the zone is attached just below
        except ValueError:
            continue
        if parsed.year < EARLIEST_YEAR:
            raise FormError("report.when_invalid")
        if has_time:
            moment = parsed.replace(tzinfo=zone)
            if moment > now + timedelta(minutes=5):
                raise FormError("report.when_future")
            draft.occurred_at, draft.precision = moment.astimezone(UTC).isoformat(), "exact"
        else:
            if parsed.date() > now.astimezone(zone).date():
                raise FormError("report.when_future")
            draft.occurred_at, draft.precision = _midnight(parsed.date(), zone), "date"
        draft.advance()
        return
    raise FormError("report.when_invalid")


def choose_region(draft: Draft, region: str) -> None:
    """Set the region; "elsewhere" asks for a place name."""
    if region not in REGIONS:
        raise FormError("report.stale")
    draft.region = region
    if region == "elsewhere":
        draft.step = "place"
        return
    draft.place = None
    draft.advance()


def type_place(draft: Draft, text: str) -> None:
    """Set the free-text place."""
    draft.place = _bounded(text, MAX_PLACE)
    draft.advance()


def set_location(draft: Draft, latitude: float, longitude: float) -> None:
    """Store a shared location rounded to about a kilometre."""
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise FormError("report.expects_location")
    draft.location = [round(latitude, LOCATION_DECIMALS), round(longitude, LOCATION_DECIMALS)]
    draft.advance()


def has_value(draft: Draft) -> bool:
    """Tell whether the current step already holds an answer (so Keep can go on with it)."""
    present = {
        "when_typed": draft.occurred_at,
        "place": draft.place,
        "text": draft.text,
        "people": draft.people,
        "location": draft.location,
    }
    return present.get(draft.step) is not None


def keep(draft: Draft) -> None:
    """Go on with the value already given (after Back, or when editing)."""
    if not has_value(draft):
        raise FormError("report.stale")
    draft.advance()


def skip(draft: Draft) -> None:
    """Leave an optional step empty."""
    if draft.step == "location":
        draft.location = None
    elif draft.step == "people":
        draft.people = None
    elif draft.step != "evidence":
        raise FormError("report.stale")
    draft.advance()


def type_text(draft: Draft, text: str) -> None:
    """Set what happened."""
    draft.text = _bounded(text, MAX_TEXT)
    draft.advance()


def type_people(draft: Draft, text: str) -> None:
    """Set who was affected."""
    draft.people = _bounded(text, MAX_PEOPLE)
    draft.advance()


def choose_contact(draft: Draft, contactable: bool) -> None:
    """Set whether coordinators may contact the reporter through the bot."""
    draft.contactable = contactable
    draft.advance()


def missing(draft: Draft) -> list[str]:
    """Return the required fields still empty (the review's Submit refuses until none are)."""
    required = {
        "category": draft.category,
        "when": draft.occurred_at,
        "where": draft.region,
        "text": draft.text,
        "contact": draft.contactable,
    }
    return [name for name, value in required.items() if value is None]


def clean_text(text: str) -> str:
    """Drop control characters (keeping line breaks) and surrounding space."""
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable() or ch == "\u200d").strip()


def telegram_length(text: str) -> int:
    """Return the length as Telegram counts it (UTF-16 code units: an emoji counts twice)."""
    return len(text.encode("utf-16-le")) // 2


def _bounded(text: str, limit: int) -> str:
    cleaned = clean_text(text)
    if not cleaned:
        raise FormError("report.expects_text")
    length = telegram_length(cleaned)
    if length > limit:
        raise FormError("report.too_long", limit=limit, length=length)
    return cleaned


def _midnight(day: date, zone: ZoneInfo) -> str:
    return datetime.combine(day, time(0, 0), tzinfo=zone).astimezone(UTC).isoformat()
