"""Subscriptions, campaigns, their templates and the actions people take on them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    String,
    and_,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import NotFound
from storage.dialect import insert_or, new_id
from storage.schema import (
    audit_log,
    campaign_actions,
    campaign_inputs,
    campaign_templates,
    campaigns,
    follows,
    outbox,
    subscriptions,
    user_roles,
    users,
)

# The language someone reads: the one they chose, else Telegram's.
_spoken = func.coalesce(users.c.language, users.c.telegram_language)


def _has_topic(topic: str | None) -> ColumnElement[bool]:
    # Topics are stored comma-separated; commas around both sides make a LIKE match whole words only.
    return ("," + subscriptions.c.topics + ",").like(f"%,{topic},%")


def subscriber_filter(audience: str, value: str | None) -> tuple[str | None, str | None]:
    """Return the (topic, language) a subscriber audience selects: a chosen topic, else everyone who kept
    the campaigns topic on (in one language, for a language audience)."""
    if audience == "topic":
        return value, None
    return "campaigns", value if audience == "language" else None


# A campaign counts towards its author's reach once it is on its way (or approved to go).
UNDER_WAY = ("scheduled", "sending", "sent", "done")
# Outbox rows that reached someone, or may have (an unknown outcome, a send in flight).
_REACHED = ("pending", "sending", "sent", "unknown", "held")
# Who acted on a campaign, by the audit log: whoever created, edited or sent it answers for what it says.
HANDLED = ("campaign.new", "campaign.edit", "campaign.send")


def audience_people(audience: str, value: str | None) -> Select[tuple[str]]:
    """Return the pseudonyms a subscriber or case audience is delivered to now, chosen as the broadcaster
    chooses its recipients (one row per person)."""
    if audience == "case":
        return (
            select(follows.c.follower.label("pseudonym"))
            .outerjoin(users, users.c.pseudonym == follows.c.follower)
            .where(
                follows.c.case_id == int(value or 0),
                or_(users.c.active.is_(None), users.c.active.is_(True)),
            )
        )
    topic, language = subscriber_filter(audience, value)
    stmt = (
        select(subscriptions.c.pseudonym.label("pseudonym"))
        .join(users, users.c.pseudonym == subscriptions.c.pseudonym)
        .where(users.c.active.is_(True), _has_topic(topic))
    )
    return stmt.where(_spoken == language) if language is not None else stmt


def _ref() -> ColumnElement[str]:
    """Return a campaign's outbox ref (and audit target) in SQL: "C-" and its id."""
    return literal("C-", String) + cast(campaigns.c.id, String)


class CampaignNotFound(NotFound, LookupError):
    """No campaign has that number."""

    def __init__(self, number: int) -> None:
        super().__init__("campaign.not_found", code=f"C-{number}")
        self.number = number


@dataclass(frozen=True)
class Campaign:
    """A stored campaign."""

    id: int
    title: str
    body: str | None
    image_file_id: str | None
    link: str | None
    deadline: datetime | None
    audience: str
    audience_value: str | None
    include_channels: bool
    status: str
    created_by: str
    creator_chat: bytes
    approved_by: str | None
    send_at: datetime | None
    cursor: str | None
    channels_done: bool
    enqueued: int
    progress_message_id: int | None
    progress_text: str | None
    reminders_done: bool
    created_at: datetime
    finished_at: datetime | None

    @property
    def ref(self) -> str:
        """Return the outbox ref its messages carry (and the code people see)."""
        return campaign_ref(self.id)


@dataclass(frozen=True)
class Reach:
    """How many people a campaign would reach, alone and with its author's others in the window."""

    people: int  # its own audience now, channels not counted
    window: int  # distinct people its author's campaigns within the window reach, this one included
    channels: bool  # it also posts to channels and groups, whose readers nobody can count
    threshold: int  # above this, a second pair of eyes
    window_h: float

    @property
    def above(self) -> bool:
        """Tell whether the campaign reaches more people than one person may reach alone."""
        return self.channels or self.window > self.threshold

    @property
    def by_window(self) -> bool:
        """Tell whether it is the author's window total, not the campaign alone, that is above."""
        return not self.channels and self.people <= self.threshold < self.window

    def describe(self) -> str:
        """Return the audit detail: figures only."""
        channels = " channels" if self.channels else ""
        return f"reach {self.people} window {self.window} threshold {self.threshold}{channels}"


@dataclass(frozen=True)
class Recipient:
    """Someone a broadcast goes to: pseudonym, encrypted chat, language."""

    pseudonym: str
    chat: bytes
    language: str | None


@dataclass(frozen=True)
class PendingInput:
    """The draft field a coordinator's next message fills in."""

    campaign_id: int
    field: str
    language: str | None
    expires_at: datetime


class CampaignRepository:
    """SQL for subscriptions and campaigns."""

    # ------------------------------------------------------------------ subscriptions

    async def subscription(self, conn: AsyncConnection, pseudonym: str) -> str | None:
        """Return a subscriber's topics (comma-separated), or None if not subscribed."""
        return (
            await conn.execute(select(subscriptions.c.topics).where(subscriptions.c.pseudonym == pseudonym))
        ).scalar()

    async def subscribe(
        self, conn: AsyncConnection, pseudonym: str, chat: bytes, topics: str, now: datetime
    ) -> None:
        """Create or update a subscription."""
        stmt = insert_or(conn, subscriptions).values(
            pseudonym=pseudonym, chat=chat, topics=topics, created_at=now, updated_at=now
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[subscriptions.c.pseudonym],
                set_={"chat": chat, "topics": topics, "updated_at": now},
            )
        )

    async def unsubscribe(self, conn: AsyncConnection, pseudonym: str) -> bool:
        """Delete a subscription; False if there was none."""
        result = await conn.execute(delete(subscriptions).where(subscriptions.c.pseudonym == pseudonym))
        return bool(result.rowcount)

    async def subscribers(
        self,
        conn: AsyncConnection,
        *,
        after: str | None,
        limit: int,
        topic: str | None = None,
        language: str | None = None,
    ) -> list[Recipient]:
        """Return active subscribers after a pseudonym, in pseudonym order (keyset batches)."""
        stmt = (
            select(subscriptions.c.pseudonym, subscriptions.c.chat, _spoken.label("language"))
            .join(users, users.c.pseudonym == subscriptions.c.pseudonym)
            .where(users.c.active.is_(True))
            .order_by(subscriptions.c.pseudonym)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(subscriptions.c.pseudonym > after)
        if topic is not None:
            stmt = stmt.where(_has_topic(topic))
        if language is not None:
            stmt = stmt.where(_spoken == language)
        return [Recipient(r.pseudonym, r.chat, r.language) for r in await conn.execute(stmt)]

    async def case_followers(
        self, conn: AsyncConnection, case_id: int, *, after: str | None, limit: int
    ) -> list[Recipient]:
        """Return active followers of a case after a pseudonym (keyset batches)."""
        stmt = (
            select(follows.c.follower, follows.c.chat, _spoken.label("language"))
            .outerjoin(users, users.c.pseudonym == follows.c.follower)
            .where(follows.c.case_id == case_id, or_(users.c.active.is_(None), users.c.active.is_(True)))
            .order_by(follows.c.follower)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(follows.c.follower > after)
        return [Recipient(r.follower, r.chat, r.language) for r in await conn.execute(stmt)]

    # ---------------------------------------------------------------------- campaigns

    async def create(
        self, conn: AsyncConnection, title: str, created_by: str, creator_chat: bytes, now: datetime
    ) -> int:
        """Create a draft; return its id."""
        result = await conn.execute(
            campaigns.insert().values(
                title=title, created_by=created_by, creator_chat=creator_chat, created_at=now, updated_at=now
            )
        )
        return new_id(result)

    async def get(self, conn: AsyncConnection, campaign_id: int) -> Campaign:
        """Return a campaign, or raise CampaignNotFound."""
        row = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).first()
        if row is None:
            raise CampaignNotFound(campaign_id)
        return _campaign(row)

    async def recent(self, conn: AsyncConnection, limit: int = 10) -> list[Campaign]:
        """Return the newest campaigns."""
        rows = await conn.execute(select(campaigns).order_by(campaigns.c.id.desc()).limit(limit))
        return [_campaign(r) for r in rows]

    async def set(self, conn: AsyncConnection, campaign_id: int, now: datetime, **values: Any) -> None:
        """Change a campaign's fields."""
        await conn.execute(
            update(campaigns).where(campaigns.c.id == campaign_id).values(**values, updated_at=now)
        )

    async def move(
        self,
        conn: AsyncConnection,
        campaign_id: int,
        from_statuses: tuple[str, ...],
        now: datetime,
        **values: Any,
    ) -> bool:
        """Change a campaign only if it is in one of `from_statuses`; False if it moved on meanwhile."""
        result = await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id, campaigns.c.status.in_(from_statuses))
            .values(**values, updated_at=now)
        )
        return bool(result.rowcount)

    async def due(self, conn: AsyncConnection, now: datetime) -> list[Campaign]:
        """Return campaigns whose sending should start or go on."""
        rows = await conn.execute(
            select(campaigns).where(
                or_(
                    and_(campaigns.c.status == "scheduled", campaigns.c.send_at <= now),
                    campaigns.c.status == "sending",
                )
            )
        )
        return [_campaign(r) for r in rows]

    async def in_delivery(self, conn: AsyncConnection, finished_since: datetime) -> list[Campaign]:
        """Return campaigns still being enqueued or delivered, and those finished since a moment (their
        status message may not show the final figures yet)."""
        rows = await conn.execute(
            select(campaigns).where(
                or_(
                    campaigns.c.status.in_(("sending", "sent")),
                    and_(
                        campaigns.c.status.in_(("done", "cancelled")),
                        campaigns.c.finished_at >= finished_since,
                    ),
                )
            )
        )
        return [_campaign(r) for r in rows]

    async def with_deadline_between(
        self, conn: AsyncConnection, start: datetime, end: datetime
    ) -> list[Campaign]:
        """Return sent campaigns whose deadline falls in [start, end) and whose reminders are not done."""
        rows = await conn.execute(
            select(campaigns).where(
                campaigns.c.status.in_(("sending", "sent", "done")),
                campaigns.c.reminders_done.is_(False),
                campaigns.c.deadline >= start,
                campaigns.c.deadline < end,
            )
        )
        return [_campaign(r) for r in rows]

    async def count_role(self, conn: AsyncConnection, role: str) -> int:
        """Return how many people hold a role (the four-eyes rule starts at two admins)."""
        stmt = select(func.count()).select_from(user_roles).where(user_roles.c.role == role)
        return int((await conn.execute(stmt)).scalar() or 0)

    async def audience_size(self, conn: AsyncConnection, audience: str, value: str | None) -> int:
        """Return how many people a campaign would reach now (channels not counted)."""
        return await self._count(conn, [audience_people(audience, value)])

    async def people_reached(self, conn: AsyncConnection, reaching: Sequence[Campaign]) -> int:
        """Return how many distinct people these campaigns reach or would reach (channels not counted):
        a cancelled one the people it was delivered to, any other its audience now."""
        selects: list[Select[tuple[str]]] = []
        audiences: set[tuple[str, str | None]] = set()
        for campaign in reaching:
            if campaign.status == "cancelled":
                selects.append(
                    select(outbox.c.recipient.label("pseudonym")).where(
                        outbox.c.ref == campaign.ref,
                        outbox.c.recipient.is_not(None),
                        outbox.c.status.in_(_REACHED),
                    )
                )
            elif (campaign.audience, campaign.audience_value) not in audiences:
                audiences.add((campaign.audience, campaign.audience_value))
                selects.append(audience_people(campaign.audience, campaign.audience_value))
        return await self._count(conn, selects)

    async def everyone(self, conn: AsyncConnection) -> int:
        """Return how many distinct people any campaign could reach: active subscribers and followers."""
        followers = (
            select(follows.c.follower.label("pseudonym"))
            .outerjoin(users, users.c.pseudonym == follows.c.follower)
            .where(or_(users.c.active.is_(None), users.c.active.is_(True)))
        )
        subscribers = (
            select(subscriptions.c.pseudonym.label("pseudonym"))
            .join(users, users.c.pseudonym == subscriptions.c.pseudonym)
            .where(users.c.active.is_(True))
        )
        return await self._count(conn, [subscribers, followers])

    async def _count(self, conn: AsyncConnection, selects: Sequence[Select[tuple[str]]]) -> int:
        # UNION, not UNION ALL: someone in two audiences is one person reached.
        if not selects:
            return 0
        people = (selects[0] if len(selects) == 1 else union(*selects)).subquery()
        return int((await conn.execute(select(func.count()).select_from(people))).scalar() or 0)

    async def in_window(
        self,
        conn: AsyncConnection,
        people: Collection[str],
        start: datetime,
        end: datetime,
        exclude: int,
    ) -> list[Campaign]:
        """Return the campaigns going out in (start, end) that these people created or sent: those on
        their way, and cancelled ones of which something was queued."""
        sent_by = select(audit_log.c.target).where(
            audit_log.c.action == "campaign.send",
            audit_log.c.outcome == "ok",
            audit_log.c.actor.in_(list(people)),
        )
        rows = await conn.execute(
            select(campaigns).where(
                campaigns.c.id != exclude,
                campaigns.c.send_at > start,
                campaigns.c.send_at < end,
                or_(
                    campaigns.c.status.in_(UNDER_WAY),
                    and_(campaigns.c.status == "cancelled", campaigns.c.enqueued > 0),
                ),
                or_(campaigns.c.created_by.in_(list(people)), _ref().in_(sent_by)),
            )
        )
        return [_campaign(r) for r in rows]

    async def handled_by(
        self, conn: AsyncConnection, pseudonym: str, statuses: Sequence[str]
    ) -> list[Campaign]:
        """Return the campaigns in these statuses that a person created, edited, sent or approved."""
        touched = select(audit_log.c.target).where(
            audit_log.c.actor == pseudonym,
            audit_log.c.outcome == "ok",
            audit_log.c.action.in_(HANDLED),
        )
        rows = await conn.execute(
            select(campaigns)
            .where(
                campaigns.c.status.in_(statuses),
                or_(
                    campaigns.c.created_by == pseudonym,
                    campaigns.c.approved_by == pseudonym,
                    _ref().in_(touched),
                ),
            )
            .order_by(campaigns.c.id)
        )
        return [_campaign(r) for r in rows]

    # ---------------------------------------------------------------------- templates

    async def set_template(self, conn: AsyncConnection, campaign_id: int, language: str, body: str) -> None:
        """Store the letter or petition template in one language."""
        stmt = insert_or(conn, campaign_templates).values(
            campaign_id=campaign_id, language=language, body=body
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[campaign_templates.c.campaign_id, campaign_templates.c.language],
                set_={"body": body},
            )
        )

    async def templates(self, conn: AsyncConnection, campaign_id: int) -> dict[str, str]:
        """Return the templates by language."""
        rows = await conn.execute(
            select(campaign_templates.c.language, campaign_templates.c.body).where(
                campaign_templates.c.campaign_id == campaign_id
            )
        )
        return {r.language: r.body for r in rows}

    # ------------------------------------------------------------------------ actions

    async def record_action(
        self,
        conn: AsyncConnection,
        campaign_id: int,
        pseudonym: str,
        kind: str,
        now: datetime,
        chat: bytes | None = None,
    ) -> bool:
        """Record an action once per person and kind; False if it was recorded before."""
        stmt = insert_or(conn, campaign_actions).values(
            campaign_id=campaign_id, pseudonym=pseudonym, kind=kind, chat=chat, at=now
        )
        return bool((await conn.execute(stmt.on_conflict_do_nothing())).rowcount)

    async def action_counts(self, conn: AsyncConnection, campaign_id: int) -> dict[str, int]:
        """Return how many people took each kind of action."""
        rows = await conn.execute(
            select(campaign_actions.c.kind, func.count())
            .where(campaign_actions.c.campaign_id == campaign_id)
            .group_by(campaign_actions.c.kind)
        )
        return {kind: int(count) for kind, count in rows}

    async def reminders_to_send(
        self, conn: AsyncConnection, campaign_id: int, limit: int
    ) -> list[tuple[str, bytes, str | None]]:
        """Return (pseudonym, chat, language) of people who asked for a reminder, have not acted and have
        not been reminded."""
        acted = select(campaign_actions.c.pseudonym).where(
            campaign_actions.c.campaign_id == campaign_id, campaign_actions.c.kind == "acted"
        )
        rows = await conn.execute(
            select(campaign_actions.c.pseudonym, campaign_actions.c.chat, _spoken.label("language"))
            .outerjoin(users, users.c.pseudonym == campaign_actions.c.pseudonym)
            .where(
                campaign_actions.c.campaign_id == campaign_id,
                campaign_actions.c.kind == "remind",
                campaign_actions.c.done_at.is_(None),
                campaign_actions.c.pseudonym.not_in(acted),
            )
            .limit(limit)
        )
        return [(r.pseudonym, r.chat, r.language) for r in rows if r.chat is not None]

    async def mark_reminded(
        self, conn: AsyncConnection, campaign_id: int, pseudonyms: list[str], now: datetime
    ) -> None:
        """Record that these people's reminders are queued (or not needed); their chat is no longer kept."""
        if pseudonyms:
            await conn.execute(
                update(campaign_actions)
                .where(
                    campaign_actions.c.campaign_id == campaign_id,
                    campaign_actions.c.kind == "remind",
                    campaign_actions.c.pseudonym.in_(pseudonyms),
                )
                .values(done_at=now, chat=None)
            )

    async def forget(self, conn: AsyncConnection, pseudonym: str, *, actions: bool = False) -> None:
        """Delete a person's subscription, pending input and reminder requests (/unsubscribe); with
        `actions`, also what they did (/forget)."""
        await conn.execute(delete(subscriptions).where(subscriptions.c.pseudonym == pseudonym))
        await conn.execute(delete(campaign_inputs).where(campaign_inputs.c.pseudonym == pseudonym))
        stmt = delete(campaign_actions).where(campaign_actions.c.pseudonym == pseudonym)
        if not actions:
            stmt = stmt.where(campaign_actions.c.kind == "remind")
        await conn.execute(stmt)

    # ------------------------------------------------------------------ pending input

    async def expect_input(
        self,
        conn: AsyncConnection,
        pseudonym: str,
        campaign_id: int,
        field: str,
        language: str | None,
        expires_at: datetime,
    ) -> None:
        """Remember that this person's next message fills a draft's field."""
        stmt = insert_or(conn, campaign_inputs).values(
            pseudonym=pseudonym,
            campaign_id=campaign_id,
            field=field,
            language=language,
            expires_at=expires_at,
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[campaign_inputs.c.pseudonym],
                set_={
                    "campaign_id": campaign_id,
                    "field": field,
                    "language": language,
                    "expires_at": expires_at,
                },
            )
        )

    async def pending_input(self, conn: AsyncConnection, pseudonym: str) -> PendingInput | None:
        """Return what this person's next message fills in, if anything."""
        row = (
            await conn.execute(select(campaign_inputs).where(campaign_inputs.c.pseudonym == pseudonym))
        ).first()
        return PendingInput(row.campaign_id, row.field, row.language, row.expires_at) if row else None

    async def clear_inputs_for(self, conn: AsyncConnection, campaign_id: int) -> None:
        """Forget every pending input into a campaign (it was sent or cancelled)."""
        await conn.execute(delete(campaign_inputs).where(campaign_inputs.c.campaign_id == campaign_id))

    async def editors(
        self, conn: AsyncConnection, ref: str, actions: Sequence[str] = HANDLED
    ) -> frozenset[str]:
        """Return who created, edited or sent a campaign (from the audit log): none of them may approve it.
        With `actions`, who took only those."""
        rows = await conn.execute(
            select(audit_log.c.actor).where(
                audit_log.c.target == ref,
                audit_log.c.outcome == "ok",
                audit_log.c.action.in_(actions),
            )
        )
        return frozenset(rows.scalars())

    async def clear_input(self, conn: AsyncConnection, pseudonym: str) -> None:
        """Forget the pending input."""
        await conn.execute(delete(campaign_inputs).where(campaign_inputs.c.pseudonym == pseudonym))


def _campaign(row: Row[Any]) -> Campaign:
    return Campaign(
        id=row.id,
        title=row.title,
        body=row.body,
        image_file_id=row.image_file_id,
        link=row.link,
        deadline=row.deadline,
        audience=row.audience,
        audience_value=row.audience_value,
        include_channels=bool(row.include_channels),
        status=row.status,
        created_by=row.created_by,
        creator_chat=row.creator_chat,
        approved_by=row.approved_by,
        send_at=row.send_at,
        cursor=row.cursor,
        channels_done=bool(row.channels_done),
        enqueued=row.enqueued,
        progress_message_id=row.progress_message_id,
        progress_text=row.progress_text,
        reminders_done=bool(row.reminders_done),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def campaign_ref(campaign_id: int) -> str:
    """The outbox ref of a campaign's messages (and the code people see)."""
    return f"C-{campaign_id}"
