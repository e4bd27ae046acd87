"""Declared commands: a coordinator's multi-field command is declared once, as fields with parsers and text
keys, and both ways of giving it are read from that declaration.

The one-liner is the message text after the command, split on "|": line breaks inside a field are kept,
"\\|" writes a literal bar, each field is stripped, optional fields may be left off at the end, and a
`rest` field takes everything after the bars before it (bars included). The guided flow asks for the same
fields one at a time, and runs what it is given through the same parsers.

Pure: no Telegram, no database, no texts (keys only), so every layer may use it and it is tested alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.domain.report_form import clean_text, telegram_length

BAR = "|"
ESCAPED_BAR = "\\|"
_PLACEHOLDER = "\x00"  # Telegram delivers no NUL in a message: it stands for "\|" while splitting
TIME_FORMATS = ("%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M")
TIME_FORMAT = TIME_FORMATS[0]  # what the date picker writes: the first one the usage shows
Kind = Literal["text", "number", "case", "hearing", "choice", "datetime"]


class FieldError(ValueError):
    """A field's value could not be read; `key` names the text that says why."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class CommandError(ValueError):
    """A one-liner that could not be read: the field (None when the count of fields is wrong) and why."""

    def __init__(
        self, spec: CommandSpec, field: Field | None, key: str, parsed: dict[str, object] | None = None
    ) -> None:
        super().__init__(f"{spec.name}: {field.name if field else 'arity'}: {key}")
        self.spec = spec
        self.field = field
        self.key = key
        self.parsed = parsed or {}  # the fields read before the one that failed


Parser = Callable[[str], object]


@dataclass(frozen=True)
class Field:
    """One field of a command: how to read it, and the keys of its label (usage) and prompt (flow).

    `choices` are the values a "choice" field offers as buttons (their labels: `<label_key>.<choice>`);
    `rest` takes the rest of the one-liner, bars included (only the last field)."""

    name: str
    parse: Parser
    prompt_key: str
    label_key: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    kind: Kind = "text"
    rest: bool = False


@dataclass(frozen=True)
class CommandSpec:
    """A coordinators' command with fields; `usage_key` names it in the audit log and frames its usage."""

    name: str
    fields: tuple[Field, ...]
    usage_key: str
    action: str  # what the gate audits it under

    def __post_init__(self) -> None:
        if any(f.rest for f in self.fields[:-1]):
            raise TypeError(f"/{self.name}: only the last field may take the rest")
        first_optional = next((i for i, f in enumerate(self.fields) if f.optional), len(self.fields))
        if any(not f.optional for f in self.fields[first_optional:]):
            raise TypeError(f"/{self.name}: optional fields come last")

    @property
    def required(self) -> int:
        """How many fields must be given."""
        return sum(1 for f in self.fields if not f.optional)

    def field(self, name: str) -> Field:
        """Return the field of this name."""
        return next(f for f in self.fields if f.name == name)


def arguments(text: str | None) -> str:
    """Return what follows the command (`/cmd` or `/cmd@bot`) in a message's text, line breaks kept."""
    if not text:
        return ""
    match = re.match(r"\s*/\S*", text)
    return text[match.end() :] if match else text


def split_fields(raw: str, limit: int | None = None) -> list[str]:
    """Split on unescaped bars into at most `limit` parts (the last takes the rest); "\\|" becomes "|"."""
    protected = raw.replace(ESCAPED_BAR, _PLACEHOLDER)
    parts = protected.split(BAR, limit - 1) if limit else protected.split(BAR)
    return [part.replace(_PLACEHOLDER, BAR).strip() for part in parts]


def parse_command(spec: CommandSpec, raw: str) -> dict[str, object]:
    """Read a one-liner's arguments by the declaration: every field parsed, or CommandError."""
    limit = len(spec.fields) if spec.fields and spec.fields[-1].rest else None
    parts = split_fields(raw, limit) if raw.strip() else []
    if not spec.required <= len(parts) <= len(spec.fields):
        raise CommandError(spec, None, spec.usage_key)
    values: dict[str, object] = {}
    for field, part in zip(spec.fields, parts, strict=False):
        try:
            values[field.name] = parse_field(spec, field, part)
        except CommandError as error:
            raise CommandError(spec, field, error.key, values) from None
    for field in spec.fields[len(parts) :]:
        values[field.name] = None
    return values


def parse_field(spec: CommandSpec, field: Field, text: str) -> object:
    """Run one field's parser; an empty optional field is None."""
    if field.optional and not text.strip():
        return None
    try:
        return field.parse(text)
    except FieldError as error:
        raise CommandError(spec, field, error.key) from None


def usage_line(spec: CommandSpec, label: Callable[[str], str]) -> str:
    """Return `/name field | field | [optional]` with each field's label rendered by `label(key)`."""
    names = [f"[{label(f.label_key)}]" if f.optional else label(f.label_key) for f in spec.fields]
    return f"/{spec.name} " + f" {BAR} ".join(names)


# ---------------------------------------------------------------------- parsers


def number(text: str) -> int:
    """Read a case or hearing number: "12" or "#12"."""
    value = text.strip().lstrip("#")
    if not value.isdigit() or len(value) >= 10:
        raise FieldError("cmd.bad_number")
    return int(value)


def bounded(limit: int) -> Parser:
    """Read free text of at most `limit` characters (as Telegram counts them), line breaks kept."""

    def parse(text: str) -> str:
        cleaned = clean_text(text)
        if not cleaned:
            raise FieldError("cmd.empty")
        if telegram_length(cleaned) > limit:
            raise FieldError("cmd.too_long")
        return cleaned

    return parse


def trimmed(limit: int) -> Parser:
    """Read an optional remark, cut to `limit` characters (a room, a judge, a note)."""

    def parse(text: str) -> str | None:
        return clean_text(text)[:limit] or None

    return parse


def choice(*choices: str) -> Parser:
    """Read one of `choices`, in any case."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise FieldError("cmd.bad_choice")
        return value

    return parse


def local_time(text: str) -> datetime:
    """Read a date and time as written (no zone yet: the service attaches the organisation's)."""
    typed = re.sub(r"\s+", " ", text.strip())
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(typed, fmt)  # noqa: DTZ007 - naive on purpose, see above
        except ValueError:
            continue
    raise FieldError("hearings.bad_time")


def when(text: str) -> str:
    """Check a hearing time's shape and keep it as written, for the service to read in its zone."""
    local_time(text)
    return re.sub(r"\s+", " ", text.strip())


def labels(spec: CommandSpec) -> Sequence[str]:
    """Every text key the declaration uses (for completeness tests)."""
    keys = [spec.usage_key]
    for f in spec.fields:
        keys += [f.label_key, f.prompt_key, *(f"{f.label_key}.{c}" for c in f.choices)]
    return keys
