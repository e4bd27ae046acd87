"""Button data: every family packs within Telegram's 64 bytes, round-trips, refuses what it did not write."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Literal

import pytest

from bot.domain import report_form
from bot.domain.callbacks import (
    MAX_BYTES,
    ApprovePress,
    AttendPress,
    BadCallback,
    CalendarPress,
    Callback,
    CampaignPress,
    CampaignPreviewPress,
    ComposePress,
    DatePress,
    DutyPress,
    FleetPress,
    FlowPress,
    FollowCase,
    ForgetPress,
    InvitePress,
    LanguagePress,
    MenuPress,
    OpenCard,
    ReminderOffset,
    ReportListPage,
    ReportPress,
    Shape,
    SosPress,
    SubscriptionPress,
    TeamPress,
    TimezonePress,
    TriagePress,
    _parts,
    any_of,
)
from bot.domain.languages import LANGUAGES
from bot.runtime.flood import is_sos
from bot.services.access.team import MEMBER_REF_LENGTH
from bot.services.desk.browse import STATUS_FILTERS, encode_query
from storage.report_queries import ReportQuery


@dataclasses.dataclass(frozen=True)
class Press(Callback, prefix="test-press"):
    report: int
    action: Literal["ack", "take"]
    token: Annotated[str, Shape(r"[0-9a-f]*")] = ""


def test_a_family_round_trips_in_the_old_wire_format() -> None:
    assert Press(12, "take").pack() == "test-press:12:take"
    assert Press(12, "take", "ab").pack() == "test-press:12:take:ab"
    assert Press.unpack("test-press:12:take") == Press(12, "take")
    assert Press.unpack("test-press:-5:ack:ff") == Press(-5, "ack", "ff")
    assert Press.matches("test-press:1:ack")


@pytest.mark.parametrize(
    "data",
    [
        "test-press:12",  # too few parts
        "test-press:12:take:ab:extra",  # too many
        "test-press:x:take",  # not a number
        "test-press:12:close",  # not a choice
        "test-press:12:take:XYZ",  # not its shape
        "t:12:take",  # another prefix
        "test-press:" + "1" * 70,  # over 64 bytes
        None,
        12,
    ],
)
def test_forged_or_stale_data_is_refused(data: object) -> None:
    with pytest.raises(BadCallback):
        Press.unpack(data)
    assert not Press.matches(data)


def test_packing_refuses_what_telegram_would() -> None:
    with pytest.raises(BadCallback):
        Press(12, "take", "a" * MAX_BYTES).pack()
    with pytest.raises(BadCallback):
        Press(12, "close").pack()  # type: ignore[arg-type]


def test_a_prefix_cannot_be_taken_twice() -> None:
    with pytest.raises(TypeError, match="taken"):

        @dataclasses.dataclass(frozen=True)
        class Again(Callback, prefix="test-press"):
            report: int


NONCE = "0123456789abcdef"
# What the bot wrote before the families existed, copied from the f-strings it was written with: cards,
# campaign messages and reminders already in chats carry exactly this, and must keep working.
WIRE: dict[type[Callback], list[tuple[Callback, str]]] = {
    MenuPress: [(MenuPress("report"), "menu:report"), (MenuPress("sos"), "menu:sos")],
    # f"r:{draft.nonce}:{draft.step}:{action}:{arg}" (arg "" when the action takes none)
    ReportPress: [
        (ReportPress(NONCE, "category", "cat", "detention"), f"r:{NONCE}:category:cat:detention"),
        (ReportPress(NONCE, "when_typed", "back", ""), f"r:{NONCE}:when_typed:back:"),
        (ReportPress(NONCE, "review", "edit", "where"), f"r:{NONCE}:review:edit:where"),
    ],
    SosPress: [(SosPress(NONCE, "go"), f"s:{NONCE}:go"), (SosPress(NONCE, "done"), f"s:{NONCE}:done")],
    TriagePress: [(TriagePress("R-7K3QX", "take"), "t:R-7K3QX:take")],
    OpenCard: [(OpenCard("R-7K3QX"), "o:R-7K3QX")],
    DutyPress: [(DutyPress("on"), "duty:on"), (DutyPress("off"), "duty:off")],
    # f"rl:{number + 1}:{page.next_before}:{page.token}"
    ReportListPage: [
        (ReportListPage(2, 999999, "...."), "rl:2:999999:...."),
        (ReportListPage(3, 41, "1.0.9.0123456789.-5"), "rl:3:41:1.0.9.0123456789.-5"),
    ],
    TeamPress: [
        (TeamPress("rv", "0123456789"), "tm:rv:0123456789"),
        (TeamPress("rvy", "0123456789"), "tm:rvy:0123456789"),
    ],
    InvitePress: [(InvitePress("x", 7), "inv:x:7")],
    CampaignPress: [(CampaignPress(12, "acted"), "cp:12:acted"), (CampaignPress(12, "stop"), "cp:12:stop")],
    CampaignPreviewPress: [(CampaignPreviewPress(12, "template"), "pv:12:template")],
    ComposePress: [
        (ComposePress(12, "text"), "cc:12:text"),
        (ComposePress(12, "ledger"), "cc:12:ledger"),
        (ComposePress(12, "tpl", "ru"), "cc:12:tpl:ru"),
        (ComposePress(12, "aud", "all"), "cc:12:aud:all"),
        (ComposePress(12, "aud", "language", "uz"), "cc:12:aud:language:uz"),
        (ComposePress(12, "aud", "topic", "urgent"), "cc:12:aud:topic:urgent"),
    ],
    ApprovePress: [(ApprovePress(12, "approve"), "ca:12:approve")],
    SubscriptionPress: [(SubscriptionPress("urgent"), "sub:urgent"), (SubscriptionPress("lang"), "sub:lang")],
    LanguagePress: [(LanguagePress("ky"), "lang:ky")],
    TimezonePress: [(TimezonePress(1), "tz:1")],
    FollowCase: [(FollowCase(4), "cf:4")],
    AttendPress: [(AttendPress(9, 0), "att:9:0")],
    CalendarPress: [(CalendarPress(9), "ics:9")],
    ReminderOffset: [(ReminderOffset(1440), "ro:1440")],
    ForgetPress: [(ForgetPress("yes"), "forget:yes"), (ForgetPress("no"), "forget:no")],
    # New with the guided flows: pinned from their first release on.
    FlowPress: [
        (FlowPress("0123456789abcdef", 2, "pick", "public"), "gf:0123456789abcdef:2:pick:public"),
        (FlowPress("0123456789abcdef", 2, "skip"), "gf:0123456789abcdef:2:skip"),
    ],
    DatePress: [
        (DatePress("0123456789abcdef", 3, "day", 20310310), "dp:0123456789abcdef:3:day:20310310"),
        (DatePress("0123456789abcdef", 3, "type"), "dp:0123456789abcdef:3:type"),
    ],
    FleetPress: [
        (FleetPress("inv", 7123456789), "fl:inv:7123456789"),
        (FleetPress("swy", 654321), "fl:swy:654321"),
    ],
}


def _real_families() -> list[type[Callback]]:
    return [f for p, f in Callback.families().items() if not p.startswith("test-")]


def test_every_family_keeps_the_wire_format_of_buttons_already_in_chats() -> None:
    assert set(_real_families()) <= set(WIRE), "pin a sample of the new family's data in WIRE"
    for family, samples in WIRE.items():
        for value, wire in samples:
            assert value.pack() == wire
            assert family.unpack(wire) == value
            assert family.matches(wire)
            # One family per prefix: nobody else takes it.
            assert [f for f in _real_families() if f.matches(wire)] == [family]


def _forgeries(family: type[Callback], wire: str) -> list[str]:
    prefix, *parts = wire.split(":")
    forged = [wire + ":x", ":".join([prefix, *parts[:-1]]), prefix, wire.replace(":", "::", 1)]
    for index, part in enumerate(_parts(family)):
        if index < len(parts) and (part.kind is not str or part.shape is not None):
            forged.append(":".join([prefix, *parts[:index], "Z!", *parts[index + 1 :]]))
    return forged


@pytest.mark.parametrize("family", list(WIRE), ids=lambda f: f.__name__)
def test_a_forged_press_of_each_family_is_refused(family: type[Callback]) -> None:
    for _, wire in WIRE[family]:
        for data in _forgeries(family, wire):
            with pytest.raises(BadCallback):
                family.unpack(data)
            assert not family.matches(data), data


def test_forged_numbers_and_choices_that_depend_on_an_action_are_refused() -> None:
    for data in (
        "cf:1234567890",  # a row id of 10 digits: more than any handler ever read, would overflow SQL
        "cf:-4",
        "ro:" + "9" * 19,
        "cc:12:tpl",  # a template language is required
        "cc:12:tpl:de",
        "cc:12:aud:language",
        "cc:12:aud:language:eng",
        "cc:12:aud:topic",
        "cc:12:aud:case:1",
        "cc:12:send:now",  # an action that takes no choice
        "r:0123XYZ:category:cat:detention",  # not a nonce
        "r:" + NONCE + ":category:cat",  # arg is always written
        "t:r-7k3qx:take",
    ):
        family = Callback.families()[data.split(":")[0]]
        assert not family.matches(data), data


def test_routing_helpers() -> None:
    assert TeamPress.where(step="rv")("tm:rv:0a") and not TeamPress.where(step="rv")("tm:rvy:0a")
    assert not TeamPress.where(step="rv")("tm:rv:XYZ")
    with pytest.raises(TypeError):
        TeamPress.where(nothing="x")
    either = any_of(CampaignPress, CampaignPreviewPress)
    assert either("cp:1:acted") and either("pv:1:acted") and not either("cp:1:approve")
    # claims looks at the prefix only, for a handler that answers malformed data itself.
    assert AttendPress.claims("att:x") and AttendPress.claims("att") and not AttendPress.claims("attx:1:1")
    assert not AttendPress.claims(None)
    # family_of names the family by prefix, for auditing data that no family unpacks.
    assert Callback.family_of("att:x") is AttendPress and Callback.family_of("tm") is TeamPress
    assert Callback.family_of("zz-nope:1") is None and Callback.family_of(None) is None


def test_a_family_with_dependent_parts_cannot_be_built_wrong() -> None:
    with pytest.raises(BadCallback):
        ComposePress(1, "tpl")
    with pytest.raises(BadCallback):
        ComposePress(1, "send", "all")


def test_only_a_real_sos_counts_as_urgent() -> None:
    assert is_sos("menu:sos", None) and is_sos(f"s:{NONCE}:go", None)
    for data in (
        "menu:report",
        f"s:{NONCE}:cancel",
        "s:0123:go",
        f"s:{NONCE}0:go",
        f"s:{NONCE}:go:x",
        "menu:sos:x",
        "",
    ):
        assert not is_sos(data, None), data
    assert is_sos(None, "/sos@jarchy_bot") and not is_sos(None, "/report")


def _steps() -> tuple[str, ...]:
    return (*report_form.ORDER, *report_form.INPUT_STEPS, "review")


def _longest(values: object) -> str:
    return max((str(v) for v in values), key=len)  # type: ignore[attr-defined]


# The longest value each free-text part of a real family holds in use.
LONGEST: dict[type[Callback], dict[str, object]] = {
    ReportPress: {
        "draft": "f" * 16,
        "step": _longest(_steps()),
        "arg": _longest(
            (
                *report_form.CATEGORIES,
                *report_form.REGIONS,
                *report_form.WHEN_CHOICES,
                *report_form.EDITABLE,
                "yes",
                "no",
            )
        ),
    },
    SosPress: {"draft": "f" * 16},
    TriagePress: {"report": "R-ZZZZZ"},
    OpenCard: {"report": "R-ZZZZZ"},
    ReportListPage: {
        "filters": encode_query(
            ReportQuery(
                status=STATUS_FILTERS[-1],
                category=report_form.CATEGORIES[-1],
                region=report_form.REGIONS[-1],
                assignee="f" * 64,
                since=datetime(1, 1, 2, tzinfo=UTC),
            )
        )
    },
    TeamPress: {"member": "f" * MEMBER_REF_LENGTH},
    # The longest choice the action takes ("aud:language:uz" is shorter).
    ComposePress: {"action": "aud", "choice": "topic", "value": "campaigns"},
    LanguagePress: {"code": _longest(LANGUAGES)},
    FlowPress: {"nonce": "f" * 16, "step": 99, "action": "pick", "value": "z" * 24},
    DatePress: {"nonce": "f" * 16, "step": 99, "action": "day", "value": 99991231},
}


def test_every_family_round_trips_at_its_longest() -> None:
    # The longest value each part can hold in use: Telegram ids fit 19 characters with a sign, row ids
    # (a shaped int) 9 digits; free-text parts get the longest their family holds (LONGEST), or for the
    # test families here, 8 hex digits.
    assert len(LONGEST[ReportListPage]["filters"]) > 20  # type: ignore[arg-type]
    for family in Callback.families().values():
        longest: dict[str, object] = {}
        for part in _parts(family):
            if part.kind is int:
                longest[part.name] = -(10**17) if part.shape is None else 10**9 - 1
            elif isinstance(part.kind, tuple):
                longest[part.name] = max(part.kind, key=lambda c: len(c.encode()))
            elif family.prefix.startswith("test-"):
                if part.default is dataclasses.MISSING:
                    longest[part.name] = "f" * 8
            else:
                assert part.name in LONGEST.get(family, {}), (
                    f"{family.__name__}.{part.name}: add it to LONGEST"
                )
        longest.update(LONGEST.get(family, {}))
        value = family(**longest)
        assert len(value.pack().encode()) <= MAX_BYTES
        assert family.unpack(value.pack()) == value, family.__name__
