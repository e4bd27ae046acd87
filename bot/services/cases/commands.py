"""The coordinators' case and hearing commands, declared once: the one-liner, the guided flow and the usage
text in every language all come from these (bot.domain.commands)."""

from __future__ import annotations

from bot.domain.commands import CommandSpec, Field, Kind, Parser, bounded, choice, number, trimmed, when

VISIBILITY = ("public", "private")


def _field(
    name: str,
    parse: Parser,
    *,
    kind: Kind = "text",
    optional: bool = False,
    choices: tuple[str, ...] = (),
    rest: bool = False,
) -> Field:
    # One label and one prompt per field name, whichever command it is in.
    return Field(name, parse, f"prompt.{name}", f"field.{name}", optional, choices, kind, rest)


_CASE = _field("case", number, kind="case")
_HEARING = _field("hearing", number, kind="hearing")
_NAMES = _field("names", bounded(300))
_DESCRIPTION = _field("description", bounded(1000))
_CHARGES = _field("charges", bounded(500))
_VISIBILITY = _field("visibility", choice(*VISIBILITY), kind="choice", choices=VISIBILITY)
_WHEN = _field("when", when, kind="datetime")
_COURT = _field("court", bounded(200))
_ADDRESS = _field("address", bounded(300))

CASE_NEW = CommandSpec(
    "case_new", (_NAMES, _DESCRIPTION, _CHARGES, _VISIBILITY), "cases.usage_new", "case.new"
)
CASE_EDIT = CommandSpec(
    "case_edit", (_CASE, _NAMES, _DESCRIPTION, _CHARGES, _VISIBILITY), "cases.usage_edit", "case.edit"
)
HEARING_ADD = CommandSpec(
    "hearing_add",
    (
        _CASE,
        _WHEN,
        _COURT,
        _ADDRESS,
        _field("details", trimmed(300), optional=True),
        _field("note", trimmed(300), optional=True),
    ),
    "hearings.usage_add",
    "hearing.add",
)
HEARING_POSTPONE = CommandSpec(
    "hearing_postpone", (_HEARING, _WHEN), "hearings.usage_postpone", "hearing.change"
)
HEARING_MOVE = CommandSpec(
    "hearing_move", (_HEARING, _COURT, _ADDRESS), "hearings.usage_move", "hearing.change"
)
# What was decided may hold bars of its own: it takes the rest of the line, as it always has.
HEARING_OUTCOME = CommandSpec(
    "hearing_outcome",
    (_HEARING, _field("outcome", bounded(1000), rest=True)),
    "hearings.usage_outcome",
    "hearing.change",
)

COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (CASE_NEW, CASE_EDIT, HEARING_ADD, HEARING_POSTPONE, HEARING_MOVE, HEARING_OUTCOME)
}
