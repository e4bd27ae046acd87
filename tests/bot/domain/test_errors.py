"""The error tree: every error the project raises on purpose is one of a few kinds, and a refusal carries
the text it is answered with."""

from __future__ import annotations

import pytest

from bot.domain import errors
from bot.domain.errors import LimitReached
from bot.domain.report_form import FormError
from bot.domain.telegram_html import HtmlProblem
from bot.runtime.update_run import AlreadyActed, may_pass_on_retry
from bot.security import DecryptionError
from bot.services.access.roles import NotAllowed
from bot.services.access.team import TeamError
from bot.services.access.users import UnknownLanguage
from bot.services.cases.hearings import HearingInputError
from bot.services.reports.body import MalformedCode, ReportTampered
from bot.services.reports.evidence import EvidenceDamaged, EvidenceRefused
from bot.services.reports.intake import Stale
from storage.campaigns import CampaignNotFound
from storage.cases import CaseNotFound, HearingExists
from storage.reports import ReportNotFound


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (NotAllowed("p"), errors.NotAllowed),
        (HearingInputError("hearings.bad_time"), errors.BadInput),
        (FormError("report.expects_text"), errors.BadInput),
        (HtmlProblem("html.empty"), errors.BadInput),
        (MalformedCode(), errors.BadInput),
        (UnknownLanguage("xx"), errors.BadInput),
        (LimitReached("sos.limit"), errors.LimitReached),
        (EvidenceRefused("evidence.busy"), errors.LimitReached),
        (ReportNotFound("R-1"), errors.NotFound),
        (CaseNotFound(1), errors.NotFound),
        (CampaignNotFound(1), errors.NotFound),
        (HearingExists(1), errors.Conflict),
        (Stale(), errors.Conflict),
        (TeamError("team.invite_used"), errors.Refused),
        (ReportTampered("R-1"), errors.Tampered),
        (DecryptionError(), errors.Damaged),
        (EvidenceDamaged(), errors.Damaged),
        (AlreadyActed("x"), errors.JarchyError),
    ],
)
def test_each_error_is_one_of_the_kinds(error: Exception, kind: type[Exception]) -> None:
    assert isinstance(error, kind)
    assert isinstance(error, errors.JarchyError)


def test_what_was_caught_by_a_builtin_still_is() -> None:
    # Code written before the tree caught these by their builtin base.
    assert isinstance(ReportNotFound("R-1"), LookupError)
    assert isinstance(CaseNotFound(1), LookupError)
    assert isinstance(FormError("x"), ValueError)
    assert isinstance(HtmlProblem("x"), ValueError)


def test_a_refusal_carries_the_text_it_is_answered_with() -> None:
    assert (NotAllowed("p").key, NotAllowed("p", ("admin",)).key) == ("coord.refused", "coord.admin_only")
    missing = ReportNotFound("R-7")
    assert (missing.key, missing.params, missing.code) == ("desk.not_found", {"code": "R-7"}, "R-7")
    assert HtmlProblem("html.tag_unknown", "<x>").params == {"detail": "<x>"}
    assert CampaignNotFound(4).params == {"code": "C-4"}


def test_damage_and_faults_are_never_refusals() -> None:
    # A refusal is answered with its text and audited as the person's; damage is nobody's request.
    for error in (DecryptionError(), EvidenceDamaged(), errors.Unavailable(), AlreadyActed("x")):
        assert not isinstance(error, errors.Refused)


def test_an_unavailable_may_pass_on_retry() -> None:
    assert may_pass_on_retry(errors.Unavailable())
    assert may_pass_on_retry(TimeoutError())
    assert not may_pass_on_retry(errors.Refused("x"))
    assert not may_pass_on_retry(errors.Damaged())
