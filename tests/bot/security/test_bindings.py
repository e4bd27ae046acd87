"""Every binding's exact string, pinned: stored rows are sealed under them, so a changed one makes every
existing row of its column undecryptable. A test failing here is a data-loss bug, not a test to update."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from bot.security import bindings
from storage.reports import Report

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

PINNED: list[tuple[Callable[..., str], tuple[object, ...], str]] = [
    (bindings.update_binding, (42,), "inbox.payload:42"),
    (bindings.payload_binding, ("u1",), "outbox.payload:u1"),
    (bindings.draft_binding, ("p1", "report", "n1"), "drafts.payload:p1:report:n1"),
    (bindings.report_body_binding, ("R-7K3QX",), "reports.body:R-7K3QX"),
    (
        bindings.sealed_body_binding,
        ("R-7K3QX", "report", "detention", AT, "exact", "bishkek", True, AT),
        'reports.body.v2:["R-7K3QX","report","detention",1740830400000000,"exact","bishkek",1,1740830400000000]',
    ),
    (
        bindings.sealed_body_binding,
        ("R-7K3QX", "sos", "other", None, None, None, False, AT),
        'reports.body.v2:["R-7K3QX","sos","other","","","",0,1740830400000000]',
    ),
    (bindings.contact_chat_binding, ("R-7K3QX",), "reports.contact_chat:R-7K3QX"),
    (bindings.note_binding, ("R-7K3QX", "note"), "report_notes.body:R-7K3QX:note"),
    (bindings.file_ref_binding, ("u1",), "evidence.file_ref:u1"),
    (bindings.evidence_file_binding, ("u1",), "evidence.file:u1"),
    (bindings.staged_binding, ("t1",), "evidence_staged.details:t1"),
    (bindings.copy_chat_binding, ("u1",), "alert_copies.chat:u1"),
    (bindings.duty_chat_binding, ("p1",), "duty.chat:p1"),
    (bindings.telegram_id_binding, ("p1",), "coordinator_ids.telegram_id:p1"),
    (bindings.team_name_binding, ("p1",), "team.display_name:p1"),
    (bindings.follow_chat_binding, ("p1", 7), "follows.chat:7:p1"),
    (bindings.subscriber_chat_binding, ("p1",), "subscriptions.chat:p1"),
    (bindings.creator_chat_binding, ("p1",), "campaigns.creator_chat:p1"),
    (bindings.reach_binding, ("p1",), "reach.sealed:p1"),
    (bindings.safeword_binding, ("p1",), "users.safeword:p1"),
    (bindings.owner_binding, ("t1", "report"), "drafts.owner:t1:report"),
    (bindings.staged_owner_binding, ("t1",), "evidence_staged.owner:t1"),
]


@pytest.mark.parametrize(("binding", "args", "expected"), PINNED, ids=lambda v: getattr(v, "__name__", ""))
def test_a_binding_never_changes(
    binding: Callable[..., str], args: tuple[object, ...], expected: str
) -> None:
    assert binding(*args) == expected


def test_body_binding_is_the_sealed_body_binding_of_the_row() -> None:
    report = Report(
        id=1, code="R-7K3QX", kind="sos", category="other", occurred_at=None, occurred_precision=None,
        region=None, body=b"", contactable=False, reporter=None, contact_chat=None, status="new",
        created_at=AT,
    )  # fmt: skip
    assert bindings.body_binding(report) == PINNED[5][2]


def test_every_binding_is_pinned() -> None:
    # A binding added to the module without a pin here could be changed unnoticed later.
    pinned = {binding.__name__ for binding, _, _ in PINNED} | {"body_binding"}
    assert set(bindings.__all__) == pinned
    defined = {
        name for name, f in inspect.getmembers(bindings, inspect.isfunction) if name.endswith("_binding")
    }
    assert defined == pinned
