"""Reports put straight into the database, encrypted as the bot stores them, for workspace tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from bot.security import Cipher
from bot.security.bindings import contact_chat_binding, sealed_body_binding
from bot.services.reports.body import CODE_ALPHABET
from storage.database import Database
from storage.reports import NewReport, ReportRepository


@dataclass(frozen=True)
class Seed:
    """One report to create; `reporter`/`chat` make it contactable."""

    category: str = "detention"
    region: str | None = "bishkek"
    text: str = "Two officers detained a journalist near the court"
    place: str | None = "Sverdlovsky district"
    reporter: str | None = None
    chat: int | None = None


async def seed_reports(db: Database, cipher: Cipher, seeds: list[Seed], now: datetime) -> list[str]:
    """Create reports; return their codes in order."""
    repo, codes = ReportRepository(), []
    async with db.write() as conn:
        for seed in seeds:
            code = "R-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(5))
            body = {"text": seed.text, "place": seed.place, "location": [42.87, 74.59], "people": None}
            await repo.create(
                conn,
                NewReport(
                    code=code,
                    kind="report",
                    category=seed.category,
                    occurred_at=now,
                    occurred_precision="time",
                    region=seed.region,
                    body=cipher.encrypt_json(
                        body,
                        binding=sealed_body_binding(
                            code,
                            "report",
                            seed.category,
                            now,
                            "time",
                            seed.region,
                            seed.reporter is not None,
                            now,
                        ),
                    ),
                    contactable=seed.reporter is not None,
                    reporter=seed.reporter,
                    contact_chat=(
                        cipher.encrypt_text(str(seed.chat), binding=contact_chat_binding(code))
                        if seed.chat is not None
                        else None
                    ),
                    submit_key=secrets.token_hex(8),
                ),
                now,
            )
            codes.append(code)
    return codes
