"""Subscribers and campaigns put straight into the database, as the bot stores them (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert

from bot.security.bindings import subscriber_chat_binding
from bot.wiring import Services
from storage.campaigns import CampaignRepository
from storage.dialect import insert_or
from storage.schema import subscriptions, users


async def seed_subscribers(
    services: Services,
    user_ids: Sequence[int],
    *,
    language: str = "en",
    topics: str = "campaigns,hearings,urgent",
    batch: int = 2000,
) -> None:
    """Subscribe these Telegram users (private chat id = user id), in bulk."""
    now = services.clock.now()
    for start in range(0, len(user_ids), batch):
        chunk = user_ids[start : start + batch]
        people = [(services.pseudonyms.of_user(uid), uid) for uid in chunk]
        async with services.db.write() as conn:
            await conn.execute(
                insert_or(conn, users).on_conflict_do_nothing(),
                [
                    {
                        "pseudonym": p,
                        "language": language,
                        "active": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for p, _ in people
                ],
            )
            await conn.execute(
                insert(subscriptions),
                [
                    {
                        "pseudonym": p,
                        "chat": services.cipher.encrypt_text(str(uid), binding=subscriber_chat_binding(p)),
                        "topics": topics,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for p, uid in people
                ],
            )


async def ready_campaign(
    services: Services, author: int, title: str = "Write for Aziza", body: str = "Write a letter today."
) -> int:
    """Create a campaign to all subscribers, with text, scheduled to go out now; return its id."""
    now = services.clock.now()
    campaign = await services.campaigns.create(author, author, title)
    async with services.db.write() as conn:
        await CampaignRepository().set(conn, campaign.id, now, body=body, status="scheduled", send_at=now)
    return campaign.id
