"""The broadcaster: turns a due campaign into outbox rows, a batch per transaction, and keeps its author's
status message current.

Recipients are read in keyset batches (never all in memory) and each batch is enqueued in one transaction
with the cursor that says where the next begins; a dedupe key per (campaign, recipient) means a batch
repeated after a crash creates nothing twice. Everything else (pacing, 429, 403, retries) is the delivery
worker's.

Before every batch, and while the last rows are delivered, the author and the approver must still hold a
coordinating role: a campaign of someone revoked (or an admin dropped from JARCHY_ADMIN_IDS) is cancelled
and audited, even if nothing withdrew it when the role went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import dates
from bot.runtime.outbox import PRIORITY_ALERT, PRIORITY_BROADCAST, PRIORITY_REMINDER, OutgoingMessage
from bot.security.bindings import creator_chat_binding, follow_chat_binding, subscriber_chat_binding
from bot.services.access.identity import SafewordService, headed
from bot.services.access.roles import COORDINATING
from bot.services.campaigns.compose import reminder_ref
from bot.services.core import Core
from messages import LANGUAGES
from messages.campaign_screens import campaign_message, progress_text
from storage.campaigns import Campaign, CampaignRepository, Recipient, subscriber_filter
from storage.channels import ChannelRepository
from storage.outbox import OutboxRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)

BATCH = 1000
REMINDER_LEAD = timedelta(hours=24)
CAMPAIGN_KIND = "campaign"
PROGRESS_KIND = "campaign_progress"


@dataclass(frozen=True)
class PassResult:
    """What one pass did."""

    enqueued: int
    reminders: int


class Broadcaster:
    """Enqueues due campaigns in batches, updates progress, sends deadline reminders."""

    def __init__(
        self,
        core: Core,
        *,
        repo: CampaignRepository,
        outbox_repo: OutboxRepository,
        users: UserRepository,
        safewords: SafewordService,
        batch: int = BATCH,
        batches_per_pass: int = 20,
    ) -> None:
        self._core = core
        self._safewords = safewords
        self._repo = repo
        self._channels = ChannelRepository()
        self._outbox_repo = outbox_repo
        self._users = users
        self._batch = batch
        self._batches_per_pass = batches_per_pass
        self.bot_username: str | None = None  # set once the bot knows it (getMe), for channel links

    async def run_pass(self) -> PassResult:
        """Enqueue the next batches of every due campaign, refresh progress, queue deadline reminders."""
        async with self._core.db.read() as conn:
            due = await self._repo.due(conn, self._core.clock.now())
        enqueued = 0
        for campaign in due:
            try:
                enqueued += await self._advance(campaign)
            except Exception:  # one broken campaign must not stop the others
                log.exception("broadcasting %s failed; it is retried at the next pass", campaign.ref)
        await self.refresh_progress()
        reminders = await self._remind()
        if enqueued or reminders:
            # One wake for the whole pass, once all its transactions committed (not a unit of work's
            # wake_delivery, which would wake the worker after every batch of every campaign).
            self._core.outbox.notify()
        return PassResult(enqueued, reminders)

    async def _advance(self, campaign: Campaign) -> int:
        total = 0
        for _ in range(self._batches_per_pass):
            async with self._core.unit_of_work() as uow:
                conn = uow.conn
                current = await self._repo.get(conn, campaign.id)
                if current.status not in ("scheduled", "sending"):
                    return total  # cancelled meanwhile
                refused = await self._refuse_untrusted(conn, current)
                if refused:
                    # Once committed: the worker drops what it holds.
                    uow.after_commit(partial(uow.outbox.withdrawn, ref=current.ref))
                else:
                    if current.status == "scheduled":
                        await self._repo.set(conn, current.id, self._core.clock.now(), status="sending")
                    added, finished = await self._enqueue_batch(conn, current)
                await uow.commit()
            if refused:
                return total
            total += added
            if finished:
                break
        return total

    async def _enqueue_batch(self, conn: AsyncConnection, campaign: Campaign) -> tuple[int, bool]:
        """Enqueue one batch and move the cursor, in the caller's transaction; return (rows, finished)."""
        now = self._core.clock.now()
        templates = await self._repo.templates(conn, campaign.id)
        messages: list[OutgoingMessage] = []
        if campaign.include_channels and not campaign.channels_done:
            for chat_id in await self._channels.all(conn):
                method, params = self._message(
                    campaign, self._core.language, bool(templates), for_channel=True
                )
                messages.append(
                    OutgoingMessage(
                        method,
                        {"chat_id": chat_id, **params},
                        kind=CAMPAIGN_KIND,
                        priority=PRIORITY_BROADCAST,
                        dedupe_key=f"{campaign.ref}:ch:{chat_id}",
                        ref=campaign.ref,
                    )
                )
            await self._repo.set(conn, campaign.id, now, channels_done=True)
        recipients = await self._recipients(conn, campaign)
        # Each person's own safety word on their copy (sealed with the rest of the row's payload).
        words = await self._safewords.of_many(conn, [person.pseudonym for person in recipients])
        for person in recipients:
            chat = self._open_chat(campaign, person)
            if chat is None:
                continue
            language = person.language if person.language in LANGUAGES else self._core.language
            method, params = self._message(campaign, language, bool(templates), for_channel=False)
            params = headed(self._core, language, words.get(person.pseudonym), params)
            messages.append(
                OutgoingMessage(
                    method,
                    {"chat_id": chat, **params},
                    kind=CAMPAIGN_KIND,
                    recipient_user_id=chat,
                    priority=PRIORITY_BROADCAST,
                    dedupe_key=f"{campaign.ref}:{person.pseudonym}",
                    ref=campaign.ref,
                )
            )
        added = await self._core.outbox.enqueue(conn, messages)
        finished = len(recipients) < self._batch
        values: dict[str, object] = {"enqueued": campaign.enqueued + added}
        if recipients:
            values["cursor"] = recipients[-1].pseudonym
        if finished:
            values["status"] = "sent"
        await self._repo.set(conn, campaign.id, now, **values)
        return added, finished

    async def _recipients(self, conn: AsyncConnection, campaign: Campaign) -> list[Recipient]:
        after, limit = campaign.cursor, self._batch
        if campaign.audience == "case":
            return await self._repo.case_followers(
                conn, int(campaign.audience_value or 0), after=after, limit=limit
            )
        topic, language = subscriber_filter(campaign.audience, campaign.audience_value)
        return await self._repo.subscribers(conn, after=after, limit=limit, topic=topic, language=language)

    def _open_chat(self, campaign: Campaign, person: Recipient) -> int | None:
        binding = (
            follow_chat_binding(person.pseudonym, int(campaign.audience_value or 0))
            if campaign.audience == "case"
            else subscriber_chat_binding(person.pseudonym)
        )
        try:
            return int(self._core.cipher.decrypt_text(person.chat, binding=binding))
        except Exception:  # one unreadable row must not stop a broadcast to thousands
            log.warning("skipped a recipient whose chat does not decrypt")
            return None

    def _message(
        self, campaign: Campaign, language: str, has_template: bool, *, for_channel: bool
    ) -> tuple[str, dict[str, object]]:
        return campaign_message(
            self._core.texts,
            language,
            campaign,
            self._core.zone,
            has_template=has_template,
            for_channel=for_channel,
            bot_username=self.bot_username,
        )

    async def refresh_progress(self) -> None:
        """Edit each running campaign's status message when its counts changed; finish the done ones."""
        async with self._core.db.read() as conn:
            running = await self._repo.in_delivery(conn, self._core.clock.now() - timedelta(minutes=10))
        for campaign in running:
            async with self._core.unit_of_work() as uow:
                conn = uow.conn
                current = await self._repo.get(conn, campaign.id)
                # All its rows are queued, but not yet delivered: the rest is refused like a batch.
                refused = current.status == "sent" and await self._refuse_untrusted(conn, current)
                if refused:
                    current = await self._repo.get(conn, current.id)
                    uow.after_commit(partial(uow.outbox.withdrawn, ref=current.ref))
                counts = await self._outbox_repo.counts(conn, current.ref)
                now = self._core.clock.now()
                outstanding = sum(counts.get(s, 0) for s in ("pending", "sending", "held"))
                if current.status == "sent" and outstanding == 0:
                    await self._repo.set(conn, current.id, now, status="done", finished_at=now)
                    current = await self._repo.get(conn, current.id)
                await self.queue_progress(conn, current, counts)
                await uow.commit()

    async def _refuse_untrusted(self, conn: AsyncConnection, campaign: Campaign) -> bool:
        """Cancel a campaign whose author or approver no longer holds a coordinating role, withdraw what is
        queued of it and audit the refusal (in the caller's transaction); False if it may go on."""
        untrusted = await self._untrusted(conn, campaign)
        if untrusted is None:
            return False
        now = self._core.clock.now()
        if not await self._repo.move(
            conn, campaign.id, ("scheduled", "sending", "sent"), now, status="cancelled", finished_at=now
        ):
            return False
        withdrawn = await self._core.outbox.cancel_ref(conn, campaign.ref)
        await self._core.outbox.cancel_ref(conn, reminder_ref(campaign))
        await self._core.audit.record(
            conn,
            "system",
            "campaign.withdraw",
            campaign.ref,
            outcome="refused",
            detail=f"{untrusted} holds no role; withdrew {withdrawn}",
        )
        log.warning("%s is not delivered: its %s holds no coordinating role now", campaign.ref, untrusted)
        return True

    async def _untrusted(self, conn: AsyncConnection, campaign: Campaign) -> str | None:
        """Return "author" or "approver" if that person no longer holds a coordinating role, else None."""
        for who, label in ((campaign.created_by, "author"), (campaign.approved_by, "approver")):
            if who is None:
                continue
            person = await self._users.get(conn, who)
            if person is None or not person.roles.intersection(COORDINATING):
                return label
        return None

    async def show_progress(self, campaign: Campaign) -> None:
        """Queue an edit of the author's status message now, in a transaction of its own (after a cancel)."""
        async with self._core.unit_of_work() as uow:
            await self.queue_progress(uow.conn, campaign)
            uow.wake_delivery()
            await uow.commit()

    async def queue_progress(
        self, conn: AsyncConnection, campaign: Campaign, counts: dict[str, int] | None = None
    ) -> None:
        """Queue an edit of the author's status message if what it shows changed (in the caller's txn)."""
        if campaign.progress_message_id is None:
            return
        counts = counts if counts is not None else await self._outbox_repo.counts(conn, campaign.ref)
        actions = await self._repo.action_counts(conn, campaign.id)
        text = progress_text(self._core.texts, self._core.language, campaign, counts, actions)
        if text == campaign.progress_text:
            return
        chat = int(
            self._core.cipher.decrypt_text(
                campaign.creator_chat, binding=creator_chat_binding(campaign.created_by)
            )
        )
        await self._core.outbox.cancel_ref(conn, f"{campaign.ref}:p", kinds=(PROGRESS_KIND,))
        edit = OutgoingMessage(
            "editMessageText",
            {"chat_id": chat, "message_id": campaign.progress_message_id, "text": text},
            kind=PROGRESS_KIND,
            priority=PRIORITY_ALERT,
            ref=f"{campaign.ref}:p",
        )
        await self._core.outbox.enqueue(conn, [edit])
        await self._repo.set(conn, campaign.id, self._core.clock.now(), progress_text=text)

    async def _remind(self) -> int:
        """Queue the one reminder, a day before the deadline, for people who asked and have not acted."""
        now = self._core.clock.now()
        queued = 0
        async with self._core.db.read() as conn:
            campaigns = await self._repo.with_deadline_between(
                conn, now - timedelta(days=365), now + REMINDER_LEAD
            )
        for campaign in campaigns:
            async with self._core.unit_of_work() as uow:
                conn = uow.conn
                # No reminder in the name of someone who lost the role since the campaign went out.
                if (
                    campaign.deadline is None
                    or campaign.deadline <= now
                    or await self._untrusted(conn, campaign) is not None
                ):
                    await self._repo.set(conn, campaign.id, now, reminders_done=True)
                    await uow.commit()
                    continue
                people = await self._repo.reminders_to_send(conn, campaign.id, self._batch)
                words = await self._safewords.of_many(conn, [p for p, _, _ in people])
                messages = []
                for pseudonym, sealed, spoken in people:
                    try:
                        chat = int(
                            self._core.cipher.decrypt_text(sealed, binding=subscriber_chat_binding(pseudonym))
                        )
                    except Exception:
                        log.warning("skipped a reminder whose chat does not decrypt")
                        continue
                    language = spoken if spoken in LANGUAGES else self._core.language
                    when = dates.moment(campaign.deadline, self._core.zone)
                    text = self._core.texts.text(
                        language, "campaign.reminder", title=campaign.title, when=when
                    )
                    params = headed(
                        self._core, language, words.get(pseudonym), {"chat_id": chat, "text": text}
                    )
                    messages.append(
                        OutgoingMessage(
                            "sendMessage",
                            params,
                            kind="campaign_reminder",
                            recipient_user_id=chat,
                            priority=PRIORITY_REMINDER,
                            dedupe_key=f"{reminder_ref(campaign)}:{pseudonym}",
                            ref=reminder_ref(campaign),
                            expires_at=campaign.deadline,
                        )
                    )
                queued += await self._core.outbox.enqueue(conn, messages)
                await self._repo.mark_reminded(conn, campaign.id, [p for p, _, _ in people], now)
                await uow.commit()
        return queued
