"""Campaigns: subscribing, composing a call to action, the four-eyes rule, and the actions people take.

Sending is the broadcaster's job (bot/services/campaigns/broadcast.py); this module decides what may be
sent, to whom, and records what people do with it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.callbacks import Topic
from bot.domain.errors import Refused
from bot.domain.identity import SAFEWORD_MAX
from bot.domain.report_form import clean_text, telegram_length
from bot.domain.telegram_html import CAPTION_LIMIT, TEXT_LIMIT, HtmlProblem, check_html
from bot.security.bindings import creator_chat_binding, subscriber_chat_binding
from bot.services.cases.hearings import HearingInputError, HearingService
from bot.services.core import Core
from messages import LANGUAGES
from messages.campaign_screens import full_text
from messages.identity_screens import safeword_header
from storage.campaigns import Campaign, CampaignNotFound, CampaignRepository, PendingInput, Reach
from storage.cases import CaseNotFound, CaseRepository
from storage.outbox import OutboxRepository
from storage.users import UserRepository

TOPICS: tuple[Topic, ...] = ("campaigns", "hearings", "urgent")
# What /unsubscribe and "Stop these messages" withdraw: everything sent to many, nothing personal.
BROADCAST_KINDS = ("campaign", "campaign_reminder", "reminder", "announcement")
# A campaign's buttons work once it is going out, not on a draft nobody approved yet.
LIVE = ("sending", "sent", "done")
# The answers to a Stop press that went through: the unsubscribing follows its commit.
_STOPPED = ("campaign.stopped", "campaign.stopped_already")
LEDGER_COLUMNS = ("recipient", "chat_kind", "status", "attempts", "queued_at_utc", "sent_at_utc", "error")
AUDIENCES = ("all", "language", "topic", "case")
FIELDS = ("text", "image", "template", "link", "deadline", "case", "schedule")
EDITABLE = ("draft",)
CANCELLABLE = ("draft", "awaiting_approval", "scheduled", "sending", "sent")
# However small the organisation, a campaign to this many people or fewer needs no second pair of eyes: a
# coordinator could write to ten people from their own phone within minutes, so the bot adds little reach
# worth a check there, while a group of thirty subscribers is spared approving every note to a few followers.
APPROVAL_FLOOR = 10
INPUT_TTL = timedelta(minutes=30)
TITLE_LIMIT = 200
TEMPLATE_LIMIT = 4000
_URL = re.compile(r"^https?://[^\s<>\"']{3,500}$")


@dataclass(frozen=True)
class Input:
    """A coordinator's message answering a pending field: text, or a photo, or something else."""

    text: str | None = None
    html: str | None = None  # the text with Telegram's formatting as HTML, when it had any
    photo_file_id: str | None = None
    other: bool = False  # a document, sticker, voice…


@dataclass(frozen=True)
class Summary:
    """What /campaign shows: the campaign, its delivery counts and the actions taken."""

    campaign: Campaign
    deliveries: dict[str, int]
    actions: dict[str, int]
    templates: list[str]
    audience_size: int
    reach: Reach | None = None  # for a campaign waiting for approval: what the approver must weigh


class CampaignService:
    """Subscriptions, drafts, approval, cancellation and recipients' buttons."""

    def __init__(
        self,
        core: Core,
        *,
        repo: CampaignRepository,
        users: UserRepository,
        outbox_repo: OutboxRepository,
        hearings: HearingService,
        four_eyes: str,
        approval_reach: int,
        approval_window: timedelta,
    ) -> None:
        self._core = core
        self._repo = repo
        self._users = users
        self._outbox_repo = outbox_repo
        self._hearings = hearings
        self._four_eyes = four_eyes
        self._approval_reach = approval_reach
        self._approval_window = approval_window
        self._cases = CaseRepository()

    # ------------------------------------------------------------------ subscribers

    async def subscribe(self, user_id: int, chat_id: int) -> frozenset[str]:
        """Subscribe (to every topic the first time); return the topics."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            current = await self._repo.subscription(uow.conn, pseudonym)
            topics = current if current else ",".join(TOPICS)
            await self._repo.subscribe(
                uow.conn, pseudonym, self._seal_chat(pseudonym, chat_id), topics, self._core.clock.now()
            )
            await uow.commit()
        return frozenset(topics.split(","))

    async def topics(self, user_id: int) -> frozenset[str] | None:
        """Return the person's topics, or None if not subscribed."""
        async with self._core.db.read() as conn:
            current = await self._repo.subscription(conn, self._core.pseudonyms.of_user(user_id))
        return frozenset(current.split(",")) if current is not None else None

    async def toggle_topic(self, user_id: int, chat_id: int, topic: str) -> frozenset[str]:
        """Turn a topic on or off (subscribing first if needed); return the topics."""
        if topic not in TOPICS:
            raise Refused("callback.stale")
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            current = await self._repo.subscription(uow.conn, pseudonym)
            chosen = set(current.split(",")) if current else set()
            chosen ^= {topic}
            ordered = ",".join(t for t in TOPICS if t in chosen)
            if ordered:
                sealed = self._seal_chat(pseudonym, chat_id)
                await self._repo.subscribe(uow.conn, pseudonym, sealed, ordered, self._core.clock.now())
            else:
                await self._repo.unsubscribe(uow.conn, pseudonym)
            await uow.commit()
        return frozenset(chosen)

    async def unsubscribe(self, user_id: int, *, forget: bool = False) -> int:
        """Stop every broadcast at once: the subscription, followed cases, and every campaign, reminder
        and hearing message still queued for the person, even one the delivery worker already claimed.
        A coordinator's question about their report is not a broadcast and still reaches them. Return how
        many messages were withdrawn. With `forget` (/forget), their campaign actions go too."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            await self._repo.forget(uow.conn, pseudonym, actions=forget)
            withdrawn = await uow.outbox.cancel_for(uow.conn, pseudonym, BROADCAST_KINDS)
            # Committed: the worker drops what it already claimed.
            uow.after_commit(lambda: uow.outbox.withdrawn(pseudonym=pseudonym, kinds=BROADCAST_KINDS))
            await uow.commit()
        await self._hearings.forget(user_id)
        return withdrawn

    # --------------------------------------------------------------------- composing

    async def create(self, user_id: int, chat_id: int, raw_title: str) -> Campaign:
        """Start a draft (coordinators and admins)."""
        title = clean_text(raw_title)
        async with self._core.gate.acting(user_id, "campaign.new") as act:
            if not title:
                raise Refused("campaign.usage_new")
            if telegram_length(title) > TITLE_LIMIT:
                raise Refused("campaign.too_long", limit=TITLE_LIMIT)
            sealed = self._core.cipher.encrypt_text(str(chat_id), binding=creator_chat_binding(act.actor))
            campaign_id = await self._repo.create(act.conn, title, act.actor, sealed, self._core.clock.now())
            await self._core.audit.record(act.conn, act.actor, "campaign.new", f"C-{campaign_id}")
            return await self._repo.get(act.conn, campaign_id)

    async def view(self, user_id: int, campaign_id: int) -> Summary:
        """Return a campaign with its counts (coordinators and admins)."""
        async with self._core.gate.acting(user_id, "campaign.view", f"C-{campaign_id}") as act:
            campaign = await self._get(act.conn, campaign_id)
            deliveries = await self._outbox_repo.counts(act.conn, campaign.ref)
            actions = await self._repo.action_counts(act.conn, campaign_id)
            templates = sorted(await self._repo.templates(act.conn, campaign_id))
            size = await self._repo.audience_size(act.conn, campaign.audience, campaign.audience_value)
            reach = await self._reach(act.conn, campaign) if campaign.status == "awaiting_approval" else None
        return Summary(campaign, deliveries, actions, templates, size, reach)

    async def recent(self, user_id: int) -> list[Campaign]:
        """Return the newest campaigns (coordinators and admins)."""
        async with self._core.gate.acting(user_id, "campaign.list") as act:
            return await self._repo.recent(act.conn)

    async def expect(
        self, user_id: int, campaign_id: int, field: str, language: str | None = None
    ) -> Campaign:
        """Make the person's next message fill a field of a draft."""
        if field not in FIELDS or (field == "template" and language not in LANGUAGES):
            raise Refused("callback.stale")
        async with self._core.gate.acting(user_id, "campaign.edit", f"C-{campaign_id}") as act:
            campaign = await self._draft(act.conn, campaign_id)
            expires = self._core.clock.now() + INPUT_TTL
            await self._repo.expect_input(act.conn, act.actor, campaign_id, field, language, expires)
            return campaign

    async def pending(self, user_id: int) -> PendingInput | None:
        """Return the field the person's next message fills, if any (and still fresh)."""
        async with self._core.db.read() as conn:
            pending = await self._repo.pending_input(conn, self._core.pseudonyms.of_user(user_id))
        if pending is None or pending.expires_at <= self._core.clock.now():
            return None
        return pending

    async def fill(self, user_id: int, value: Input) -> Campaign | None:
        """Apply the person's message to the pending field; raise Refused (field kept pending) if bad.
        Return None, forgetting the field, if its draft was sent or cancelled meanwhile."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.gate.acting(user_id, "campaign.edit") as act:
            pending = await self._repo.pending_input(act.conn, pseudonym)
            if pending is None or pending.expires_at <= self._core.clock.now():
                raise Refused("campaign.nothing_pending")
            campaign = await self._get(act.conn, pending.campaign_id)
            if campaign.status not in EDITABLE:
                await self._repo.clear_input(act.conn, pseudonym)
                return None
            values = self._value(campaign, pending, value)
            if pending.field == "case":
                await self._case_exists(act.conn, int(str(values["audience_value"])))
            changes: dict[str, Any] = {k: v for k, v in values.items() if k != "template"}
            self._fits(replace(campaign, **changes))
            now = self._core.clock.now()
            if pending.field == "template":
                await self._repo.set_template(
                    act.conn, campaign.id, pending.language or "en", str(values["template"])
                )
                await self._repo.set(act.conn, campaign.id, now)
            else:
                await self._repo.set(act.conn, campaign.id, now, **values)
            await self._repo.clear_input(act.conn, pseudonym)
            await self._core.audit.record(
                act.conn, act.actor, "campaign.edit", campaign.ref, detail=pending.field
            )
            return await self._repo.get(act.conn, campaign.id)

    async def _case_exists(self, conn: AsyncConnection, case_id: int) -> None:
        try:
            await self._cases.case(conn, case_id)
        except CaseNotFound:
            raise Refused("campaign.case_invalid") from None

    async def set_audience(
        self, user_id: int, campaign_id: int, audience: str, value: str | None
    ) -> Campaign:
        """Choose who receives the campaign: everyone, one language, one topic (a case's followers are
        chosen by typing its number)."""
        valid = (
            (audience == "all" and value is None)
            or (audience == "language" and value in LANGUAGES)
            or (audience == "topic" and value in TOPICS)
        )
        if not valid:
            raise Refused("callback.stale")
        async with self._core.gate.acting(user_id, "campaign.edit", f"C-{campaign_id}") as act:
            await self._draft(act.conn, campaign_id)
            await self._repo.set(
                act.conn, campaign_id, self._core.clock.now(), audience=audience, audience_value=value
            )
            await self._core.audit.record(
                act.conn, act.actor, "campaign.edit", f"C-{campaign_id}", detail="audience"
            )
            return await self._repo.get(act.conn, campaign_id)

    async def toggle_channels(self, user_id: int, campaign_id: int) -> Campaign:
        """Include or leave out the organisation's registered channels and groups."""
        async with self._core.gate.acting(user_id, "campaign.edit", f"C-{campaign_id}") as act:
            campaign = await self._draft(act.conn, campaign_id)
            include = not campaign.include_channels
            await self._repo.set(act.conn, campaign_id, self._core.clock.now(), include_channels=include)
            await self._core.audit.record(
                act.conn, act.actor, "campaign.edit", campaign.ref, detail="channels"
            )
            return await self._repo.get(act.conn, campaign_id)

    async def for_preview(self, user_id: int, campaign_id: int) -> tuple[Campaign, dict[str, str]]:
        """Return a draft and its templates to show its author as recipients will see it."""
        async with self._core.gate.acting(user_id, "campaign.preview", f"C-{campaign_id}") as act:
            campaign = await self._get(act.conn, campaign_id)
            if campaign.body is None:
                raise Refused("campaign.no_text")
            return campaign, await self._repo.templates(act.conn, campaign_id)

    async def send(self, user_id: int, campaign_id: int, when: datetime | None = None) -> Campaign:
        """Send now or at `when`; with the four-eyes rule, a campaign that would take its author (or its
        sender) past the reach one person may have alone waits for approval."""
        async with self._core.gate.acting(user_id, "campaign.send", f"C-{campaign_id}") as act:
            campaign = await self._draft(act.conn, campaign_id)
            now = self._core.clock.now()
            self._ready(campaign, when, now)
            size = await self._repo.audience_size(act.conn, campaign.audience, campaign.audience_value)
            if size == 0 and not campaign.include_channels:
                raise Refused("campaign.no_audience")
            await self._repo.clear_inputs_for(act.conn, campaign_id)
            reach = await self._reach(act.conn, replace(campaign, send_at=when or now), act.actor)
            status = "awaiting_approval" if await self._needs_approval(act.conn, reach) else "scheduled"
            moved = await self._repo.move(
                act.conn, campaign_id, EDITABLE, now, status=status, send_at=when or now
            )
            if not moved:
                raise Refused("campaign.not_draft", code=campaign.ref)
            await self._core.audit.record(
                act.conn, act.actor, "campaign.send", campaign.ref, detail=f"{status} {reach.describe()}"
            )
            return await self._repo.get(act.conn, campaign_id)

    async def approve(self, user_id: int, campaign_id: int) -> tuple[Campaign, Reach]:
        """Approve a campaign waiting for a second pair of eyes: by an admin or coordinator who neither
        created, edited nor sent it. Return it and the reach the approval was given for."""
        async with self._core.gate.acting(user_id, "campaign.approve", f"C-{campaign_id}") as act:
            campaign = await self._get(act.conn, campaign_id)
            if campaign.status != "awaiting_approval":
                raise Refused("campaign.not_awaiting", code=campaign.ref)
            authors = {campaign.created_by, *await self._repo.editors(act.conn, campaign.ref)}
            if act.actor in authors:
                raise Refused("campaign.self_approval")
            reach = await self._reach(act.conn, campaign)
            now = self._core.clock.now()
            send_at = max(campaign.send_at or now, now)
            self._ready(campaign, None, now)
            if not await self._repo.move(
                act.conn,
                campaign_id,
                ("awaiting_approval",),
                now,
                status="scheduled",
                approved_by=act.actor,
                send_at=send_at,
            ):
                raise Refused("campaign.not_awaiting", code=campaign.ref)
            await self._core.audit.record(
                act.conn, act.actor, "campaign.approve", campaign.ref, detail=reach.describe()
            )
            return await self._repo.get(act.conn, campaign_id), reach

    async def cancel(self, user_id: int, campaign_id: int) -> tuple[Campaign, int]:
        """Cancel a draft, a scheduled or a running broadcast; return it and how many queued messages
        were withdrawn."""
        async with self._core.gate.acting(user_id, "campaign.cancel", f"C-{campaign_id}") as act:
            campaign = await self._get(act.conn, campaign_id)
            now = self._core.clock.now()
            if not await self._repo.move(
                act.conn, campaign_id, CANCELLABLE, now, status="cancelled", finished_at=now
            ):
                raise Refused("campaign.already_over", code=campaign.ref)
            await self._repo.clear_inputs_for(act.conn, campaign_id)
            withdrawn = await self._core.outbox.cancel_ref(act.conn, campaign.ref)
            await self._core.outbox.cancel_ref(act.conn, reminder_ref(campaign))
            await self._core.audit.record(
                act.conn, act.actor, "campaign.cancel", campaign.ref, detail=str(withdrawn)
            )
            cancelled = await self._repo.get(act.conn, campaign_id)
        self._core.outbox.withdrawn(ref=campaign.ref)
        return cancelled, withdrawn

    async def withdraw_author(self, conn: AsyncConnection, author: str, actor: str) -> int:
        """Someone lost their role: cancel every unsent campaign they created, edited, sent or approved
        (drafts, those waiting for approval, scheduled, and the rest of one being delivered), withdraw
        what is queued for them, and stop the deadline reminders of their finished ones. Runs in the
        caller's write transaction; each cancelled campaign is audited with `actor`. Return how many
        campaigns were cancelled."""
        now = self._core.clock.now()
        cancelled = 0
        for campaign in await self._repo.handled_by(conn, author, CANCELLABLE):
            if not await self._repo.move(
                conn, campaign.id, CANCELLABLE, now, status="cancelled", finished_at=now
            ):
                continue
            await self._repo.clear_inputs_for(conn, campaign.id)
            withdrawn = await self._core.outbox.cancel_ref(conn, campaign.ref)
            await self._core.outbox.cancel_ref(conn, reminder_ref(campaign))
            await self._core.audit.record(
                conn, actor, "campaign.withdraw", campaign.ref, detail=f"role revoked; withdrew {withdrawn}"
            )
            # Told before the commit, unlike cancel(): the caller's transaction holds the write lock, so
            # the delivery worker claims nothing more until it commits, and this drops what it holds now.
            # Should the revocation roll back, what is dropped is a broadcast of someone being revoked.
            self._core.outbox.withdrawn(ref=campaign.ref)
            cancelled += 1
        for campaign in await self._repo.handled_by(conn, author, ("done",)):
            if not campaign.reminders_done:
                await self._repo.set(conn, campaign.id, now, reminders_done=True)
                await self._core.outbox.cancel_ref(conn, reminder_ref(campaign))
        await self._repo.clear_input(conn, author)
        return cancelled

    async def ledger(self, user_id: int, campaign_id: int, out: TextIO) -> int:
        """Write the delivery ledger as CSV: one line per recipient (pseudonymous), audited."""
        async with self._core.gate.acting(user_id, "campaign.ledger", f"C-{campaign_id}") as act:
            campaign = await self._get(act.conn, campaign_id)
            await self._core.audit.record(act.conn, act.actor, "campaign.ledger", campaign.ref)
        writer = csv.writer(out)
        writer.writerow(LEDGER_COLUMNS)
        rows = 0
        async with self._core.db.read() as conn:
            async for batch in self._outbox_repo.ledger(conn, campaign.ref):
                writer.writerows(
                    [
                        (
                            # A pseudonym per campaign: ledgers cannot be joined with each other.
                            self._core.pseudonyms.of_chat(f"{campaign.ref}:{e.recipient or e.chat_key}")[:12],
                            e.chat_kind,
                            e.status,
                            e.attempts,
                            e.created_at.isoformat(timespec="seconds"),
                            e.sent_at.isoformat(timespec="seconds") if e.sent_at else "",
                            e.last_error or "",
                        )
                        for e in batch
                    ]
                )
                rows += len(batch)
        return rows

    async def set_progress_message(self, campaign_id: int, message_id: int) -> None:
        """Remember the author's status message, which the broadcaster keeps up to date."""
        async with self._core.unit_of_work() as uow:
            await self._repo.set(
                uow.conn, campaign_id, self._core.clock.now(), progress_message_id=message_id
            )
            await uow.commit()

    # ------------------------------------------------------------ recipients' buttons

    async def act(
        self, user_id: int, chat_id: int, campaign_id: int, action: str
    ) -> tuple[str, Campaign, str | None]:
        """Record a recipient's press: "acted", "template", "remind" or "stop".

        Return the answer's text key, the campaign, and for "template" the template in the person's
        language (else English, else any).
        """
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            key, campaign, template = await self._press(uow.conn, pseudonym, chat_id, campaign_id, action)
            await uow.commit()
        if key in _STOPPED:
            # Stop ends every broadcast to them, as /unsubscribe does (followed cases included).
            await self.unsubscribe(user_id)
        return key, campaign, template

    async def _press(
        self, conn: AsyncConnection, pseudonym: str, chat_id: int, campaign_id: int, action: str
    ) -> tuple[str, Campaign, str | None]:
        """Record a press in the caller's transaction and return its answer; a Stop's unsubscribing is
        the caller's, once this is committed."""
        campaign = await self._get(conn, campaign_id)
        if campaign.status == "cancelled":
            return "campaign.was_cancelled", campaign, None
        if campaign.status not in LIVE:
            raise Refused("callback.stale")  # a draft's buttons (a preview, a guessed link) do nothing
        now = self._core.clock.now()
        if action == "acted":
            fresh = await self._repo.record_action(conn, campaign_id, pseudonym, "acted", now)
            # Whoever acted needs no reminder, even one already queued.
            await self._repo.mark_reminded(conn, campaign_id, [pseudonym], now)
            await self._core.outbox.cancel_for_ref(conn, pseudonym, reminder_ref(campaign))
            return ("campaign.acted" if fresh else "campaign.acted_before"), campaign, None
        if action == "template":
            templates = await self._repo.templates(conn, campaign_id)
            user = await self._users.get(conn, pseudonym)
            spoken = user.spoken if user is not None else None
            chosen = (
                templates.get(spoken or "") or templates.get("en") or next(iter(templates.values()), None)
            )
            if chosen is None:
                return "campaign.no_template", campaign, None
            await self._repo.record_action(conn, campaign_id, pseudonym, "template", now)
            return "campaign.template_sent", campaign, chosen
        if action == "remind":
            if campaign.deadline is None or campaign.deadline <= now:
                return "campaign.no_deadline", campaign, None
            sealed = self._seal_chat(pseudonym, chat_id)
            fresh = await self._repo.record_action(conn, campaign_id, pseudonym, "remind", now, chat=sealed)
            return ("campaign.remind_set" if fresh else "campaign.remind_before"), campaign, None
        if action != "stop":
            raise Refused("callback.stale")
        subscribed = await self._repo.subscription(conn, pseudonym) is not None
        return ("campaign.stopped" if subscribed else "campaign.stopped_already"), campaign, None

    # ---------------------------------------------------------------------- internals

    def _value(self, campaign: Campaign, pending: PendingInput, value: Input) -> dict[str, object]:
        field = pending.field
        if field == "image":
            if value.photo_file_id is None:
                raise Refused("campaign.not_an_image")
            return {"image_file_id": value.photo_file_id}
        if value.text is None:
            raise Refused("campaign.expects_text")
        typed = value.text.strip()
        if field == "text":
            body = (value.html or value.text).strip()
            self._check(body, TEXT_LIMIT)  # the whole message, as sent, is measured by _fits
            return {"body": body}
        if field == "template":
            template = clean_text(value.text)
            if not template:
                raise Refused("campaign.expects_text")
            if telegram_length(template) > TEMPLATE_LIMIT:
                raise Refused("campaign.too_long", limit=TEMPLATE_LIMIT)
            return {"template": template}
        if field == "link":
            if not _URL.match(typed):
                raise Refused("campaign.link_invalid")
            return {"link": typed}
        if field == "deadline":
            return {"deadline": self._future(typed)}
        if field == "case":
            if not typed.lstrip("#").isdigit() or len(typed) > 9:
                raise Refused("campaign.case_invalid")
            return {"audience": "case", "audience_value": typed.lstrip("#")}
        # schedule: validated now, applied by send()
        return {"send_at": self._future(typed)}

    def _check(self, body: str, limit: int) -> None:
        try:
            check_html(body, limit=limit)
        except HtmlProblem as problem:
            if problem.key == "html.too_long":
                raise Refused("campaign.too_long", limit=limit) from None
            raise Refused(problem.key, detail=problem.detail) from None

    def _future(self, typed: str) -> datetime:
        try:
            return self._hearings.parse_time(typed)
        except HearingInputError as error:
            raise Refused("campaign.past" if error.key == "hearings.past" else "campaign.bad_time") from None

    def _fits(self, campaign: Campaign) -> None:
        """Refuse a campaign whose message, as each language's readers get it (title, text, deadline
        line), would be over Telegram's limit: 4,096, or 1,024 as a photo's caption."""
        if campaign.body is None:
            return
        limit = CAPTION_LIMIT if campaign.image_file_id else TEXT_LIMIT
        for language in LANGUAGES:
            # Room for the longest safety word a recipient may have on top of their copy.
            header = safeword_header(self._core.texts, language, "W" * SAFEWORD_MAX)
            self._check(header + full_text(self._core.texts, language, campaign, self._core.zone), limit)

    def _ready(self, campaign: Campaign, when: datetime | None, now: datetime) -> None:
        if campaign.body is None:
            raise Refused("campaign.no_text")
        self._fits(campaign)
        if when is not None and when <= now:
            raise Refused("campaign.past")
        if campaign.deadline is not None and campaign.deadline <= (when or now):
            raise Refused("campaign.deadline_passed")

    async def _reach(self, conn: AsyncConnection, campaign: Campaign, sender: str | None = None) -> Reach:
        """Count whom the campaign reaches, alone and with the other campaigns of its author and of whoever
        sent it, going out within the window either side of it (per-language campaigns add up)."""
        people = await self._repo.audience_size(conn, campaign.audience, campaign.audience_value)
        senders = await self._repo.editors(conn, campaign.ref, ("campaign.send",))
        responsible = {campaign.created_by, *senders, *([sender] if sender else [])}
        at = campaign.send_at or self._core.clock.now()
        others = await self._repo.in_window(
            conn, responsible, at - self._approval_window, at + self._approval_window, campaign.id
        )
        window = await self._repo.people_reached(conn, [campaign, *others]) if others else people
        threshold = approval_threshold(self._approval_reach, await self._repo.everyone(conn))
        hours = self._approval_window.total_seconds() / 3600
        return Reach(people, window, campaign.include_channels, threshold, hours)

    async def _needs_approval(self, conn: AsyncConnection, reach: Reach) -> bool:
        if not reach.above or self._four_eyes == "off":
            return False
        # "auto" waits for a second admin: with one, nobody else might be there to approve.
        return self._four_eyes == "on" or await self._repo.count_role(conn, "admin") >= 2

    async def _draft(self, conn: AsyncConnection, campaign_id: int) -> Campaign:
        campaign = await self._get(conn, campaign_id)
        if campaign.status not in EDITABLE:
            raise Refused("campaign.not_draft", code=campaign.ref)
        return campaign

    async def _get(self, conn: AsyncConnection, campaign_id: int) -> Campaign:
        try:
            return await self._repo.get(conn, campaign_id)
        except CampaignNotFound:
            raise Refused("campaign.not_found", code=f"C-{campaign_id}") from None

    def _seal_chat(self, pseudonym: str, chat_id: int) -> bytes:
        return self._core.cipher.encrypt_text(str(chat_id), binding=subscriber_chat_binding(pseudonym))


def approval_threshold(approval_reach: int, everyone: int) -> int:
    """Return how many people one person's campaigns may reach within the window without a second pair of
    eyes: JARCHY_APPROVAL_REACH, or a tenth of everyone the bot can reach if that is fewer, never below
    APPROVAL_FLOOR (unless JARCHY_APPROVAL_REACH itself is lower)."""
    # A fixed number means nothing in a small organisation: at 50, one coordinator reaches all of 50
    # subscribers alone. A tenth keeps what one person can say in the organisation's name to a tenth of
    # its audience, however large or small; the floor keeps a tiny group from approving every message.
    return min(approval_reach, max(APPROVAL_FLOOR, everyone // 10))


def reminder_ref(campaign: Campaign) -> str:
    """Return the outbox ref of a campaign's deadline reminders (kept apart from its delivery counts)."""
    return f"{campaign.ref}:r"
