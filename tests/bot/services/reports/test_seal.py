"""A report's clear columns are bound to its sealed body: an edit outside the bot fails loudly."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import text

from bot.security.bindings import report_body_binding
from bot.services.reports.body import ReportTampered
from bot.services.reports.seal import SEALED_MARK, reseal_legacy_bodies, tampered_reports
from bot.settings import Settings
from bot.wiring import Services
from tests.bot.services.desk.test_workspace import ADMIN, AIDA, join, seed, services, settings
from tests.conftest import run_jarchy
from tests.workspace_seed import Seed

__all__ = ["services", "settings"]  # fixtures


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("category", "other"),
        ("region", "osh_city"),
        ("created_at", 1),
        ("occurred_at", None),
        ("kind", "sos"),
    ],
)
async def test_an_edited_clear_column_fails_in_the_view_the_export_and_verify(
    services: Services, column: str, value: object
) -> None:
    await join(services, AIDA, "Aida")
    edited, intact = await seed(services, Seed(category="detention", region="bishkek"), Seed())
    async with services.db.write() as conn:
        await conn.execute(
            text(f"UPDATE reports SET {column} = :v WHERE code = :c"),  # noqa: S608 (a test's own column)
            {"v": value, "c": edited},
        )
    with pytest.raises(ReportTampered) as refused:
        await services.desk.view(AIDA, edited)
    assert refused.value.key == "desk.tampered" and refused.value.params == {"code": edited}
    assert (await services.desk.view(AIDA, intact)).report.code == intact
    query = await services.desk.parse_query(ADMIN, [])
    out = io.StringIO()
    await services.exports.write(query, {"csv": out})
    rows = {r["code"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert rows[edited]["integrity"].startswith("FAILED") and rows[edited]["text"] == ""
    assert rows[intact]["integrity"] == "ok"
    assert await tampered_reports(services.db, services.cipher) == [edited]


async def test_a_body_moved_to_another_report_fails(services: Services) -> None:
    await join(services, AIDA, "Aida")
    first, second = await seed(services, Seed(text="first"), Seed(text="second"))
    async with services.db.write() as conn:
        await conn.execute(
            text("UPDATE reports SET body = (SELECT body FROM reports WHERE code = :a) WHERE code = :b"),
            {"a": first, "b": second},
        )
    with pytest.raises(ReportTampered):
        await services.desk.view(AIDA, second)
    assert await tampered_reports(services.db, services.cipher) == [second]


async def test_bodies_sealed_before_the_binding_are_resealed_once_then_guarded(services: Services) -> None:
    await join(services, AIDA, "Aida")
    async with services.db.write() as conn:
        # As on a database upgraded from before the binding (its first start has not sealed it yet).
        await conn.execute(text("DELETE FROM bot_state WHERE key = :k"), {"k": SEALED_MARK})
    (code,) = await seed(services, Seed(text="older"))
    legacy = services.cipher.encrypt_json(
        {"text": "older", "place": None, "location": None, "people": None}, binding=report_body_binding(code)
    )
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE reports SET body = :b WHERE code = :c"), {"b": legacy, "c": code})
    assert await tampered_reports(services.db, services.cipher) == [code]
    assert await reseal_legacy_bodies(services.db, services.cipher) == 1
    assert (await services.desk.view(AIDA, code)).body.text == "older"
    assert await reseal_legacy_bodies(services.db, services.cipher) == 0
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE reports SET category = 'threats' WHERE code = :c"), {"c": code})
    assert await tampered_reports(services.db, services.cipher) == [code]
    # An old body put back with edited columns, after the one pass: still tampered, never resealed.
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE reports SET body = :b WHERE code = :c"), {"b": legacy, "c": code})
    assert await reseal_legacy_bodies(services.db, services.cipher) == 0
    assert await tampered_reports(services.db, services.cipher) == [code]


async def test_audit_verify_names_an_edited_report(services: Services, settings: Settings) -> None:
    await join(services, AIDA, "Aida")
    edited, _ = await seed(services, Seed(category="detention"), Seed())
    code, output = await run_jarchy(settings, "audit", "verify")
    assert code == 0, output
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE reports SET region = 'naryn' WHERE code = :c"), {"c": edited})
    code, output = await run_jarchy(settings, "audit", "verify")
    assert code == 1 and f"report {edited}" in output and "BROKEN" in output
