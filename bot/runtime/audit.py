"""The audit log: who did what to which report or person, chained so tampering shows.

Each entry's hash is an HMAC (keyed from the data key) over its fields and the previous entry's hash, and the
newest id and hash are sealed in bot_state. Editing or deleting any row, or cutting rows off the end, breaks
the chain for anyone without the key; a seal and a log that disagree are written into the chain itself, and
the admins are told.

What the server alone cannot show is a chain cut back to an older seal restored from a copy, or wiped
together with its seal: so the head (the newest entry's number and hash, nothing else) goes to every admin in
private after each role change and at least daily, and `jarchy audit verify --expect-head HASH` proves that
the entry with that hash is still there and the chain runs unbroken from it to the seal. Entry numbers only
grow (they are contiguous from 1, and inside each entry's HMAC and the seal), so a head message that names a
later entry than the log ends at shows a rollback even to someone reading the numbers alone. Someone holding
the key could rewrite the whole chain; an anchored head at least pins everything up to it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import dates
from bot.runtime.clock import Clock
from bot.runtime.outbox import NOTICE_KIND, PRIORITY_ALERT, PRIORITY_PERSONAL, Outbox, OutgoingMessage
from bot.security import DataKey
from messages import Catalogs, Safe
from storage.audit import AuditEntry, AuditRepository
from storage.database import Database
from storage.state import StateRepository

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SEAL_BROKEN = "audit.seal_broken"
# Why a break was written into the chain (the detail of its SEAL_BROKEN entry); each has a text
# audit.<why>_notice for the admins. Entries written before this distinction have no detail: "seal".
BREAK_WIPED = "wiped"  # log and seal gone from a database that holds reports or a team
BREAK_SEAL = "seal"  # seal gone or forged while entries exist
BREAK_CUT = "cut"  # the seal vouches for an entry the log does not end with
HEAD_KIND = "audit_head"
HEAD_PREFIX_MIN = 16  # hex characters of a head typed by hand: 64 bits, no accidental match
ANCHOR_EVERY = timedelta(hours=24)
# A burst of role changes (an admin bringing in a few people) becomes one message: the newest head, which
# vouches for every entry before it. Short against the day the daily anchor leaves open.
HEAD_DELAY = timedelta(minutes=2)
_HEAD = "audit_head"
_ANNOUNCED = "audit_head_sent"


@dataclass(frozen=True)
class Verdict:
    """What `verify` found; `anchor` is the entry of the expected head, `last` the log's final entry."""

    entries: int
    head: str
    problems: tuple[str, ...]
    anchor: AuditEntry | None = None
    last: AuditEntry | None = None

    @property
    def intact(self) -> bool:
        """Tell whether the chain is whole."""
        return not self.problems


@dataclass(frozen=True)
class Anchoring:
    """Where the head goes to be kept off the server: every admin's private chat, through the outbox."""

    outbox: Outbox
    texts: Catalogs
    language: str
    admin_ids: frozenset[int]


@dataclass(frozen=True)
class _Announced:
    """The head last queued for the admins: when, and when it was due to go."""

    entry: int
    hash: str
    at: datetime
    due: datetime


def head_prefix(value: str) -> str:
    """Normalise a typed head (all of it, or its first 16+ hex characters); raise ValueError if not one."""
    prefix = value.strip().lower()
    if not HEAD_PREFIX_MIN <= len(prefix) <= len(GENESIS) or not set(prefix) <= set(string.hexdigits.lower()):
        raise ValueError(f"a head is {HEAD_PREFIX_MIN} to {len(GENESIS)} hex characters, not {value!r}")
    return prefix


class AuditLog:
    """Appends chained entries, checks the chain and sends its head to the admins."""

    def __init__(
        self,
        db: Database,
        repo: AuditRepository,
        state: StateRepository,
        key: DataKey,
        clock: Clock,
        anchoring: Anchoring | None = None,
    ):
        self._db = db
        self._repo = repo
        self._state = state
        self._key = key.derive("audit.chain")
        self._clock = clock
        self._anchoring = anchoring

    async def record(
        self,
        conn: AsyncConnection,
        actor: str,
        action: str,
        target: str | None = None,
        *,
        outcome: str = "ok",
        detail: str | None = None,
    ) -> None:
        """Append an entry in the caller's write transaction (so it commits with the action)."""
        await self._append(conn, await self._tip(conn), actor, action, target, outcome, detail)

    async def _tip(self, conn: AsyncConnection) -> tuple[int, str]:
        """Return where the chain goes on; first write any disagreement between seal and log into it."""
        # The sealed head, not the last row alone, says where the chain goes on: rows cut off the end leave
        # a gap the next entry cannot paper over. A concurrent appender waits on the seal's row lock
        # (PostgreSQL) or collides on the id and rolls the action back rather than forking the chain.
        sealed = self._open_seal(await self._repo.seal(conn, _HEAD))
        last = await self._repo.last(conn)
        tip = (last.id, last.hash) if last is not None else None
        if sealed is not None and sealed == tip:
            return sealed
        if sealed is None:
            if tip is not None:
                return await self._break(conn, tip, BREAK_SEAL)
            if not await self._repo.in_use(conn):
                return 0, GENESIS  # a new database: the chain begins
            # Never a quiet new beginning on a database with reports or a team: the log was wiped.
            return await self._break(conn, (0, GENESIS), BREAK_WIPED)
        # Rows cut off the end: go on from the seal, so the gap shows. An older seal restored over newer
        # rows: go on from the rows, or every entry from now on would collide on its id.
        return await self._break(conn, sealed if tip is None or sealed[0] >= tip[0] else tip, BREAK_CUT)

    async def _break(self, conn: AsyncConnection, head: tuple[int, str], why: str) -> tuple[int, str]:
        """Write a break into the chain (for good: verify reports it ever after) and tell every admin."""
        head = await self._append(conn, head, "system", SEAL_BROKEN, None, "refused", why)
        log.error("the audit log was tampered with (%s); the break is entry %d", why, head[0])
        if self._anchoring is not None:
            text = self._anchoring.texts.text(self._anchoring.language, f"audit.{why}_notice")
            # The outbox's poll picks these up within a second: the caller's transaction has not committed.
            dedupe = f"audit.broken:{head[0]}"
            await self._tell_admins(conn, self._anchoring, text, NOTICE_KIND, dedupe, PRIORITY_ALERT)
        return head

    async def _append(
        self,
        conn: AsyncConnection,
        head: tuple[int, str],
        actor: str,
        action: str,
        target: str | None,
        outcome: str,
        detail: str | None,
    ) -> tuple[int, str]:
        entry_id, prev = head[0] + 1, head[1]
        at = self._clock.now()
        digest = self._digest(entry_id, prev, at, actor, action, target, outcome, detail)
        await self._repo.append(
            conn,
            entry_id=entry_id,
            at=at,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
            prev_hash=prev,
            hash_=digest,
        )
        await self._state.put(conn, _HEAD, self._seal(entry_id, digest))
        return entry_id, digest

    async def refused(
        self, actor: str, action: str, target: str | None = None, detail: str | None = None
    ) -> None:
        """Record a refused attempt in a transaction of its own (the attempt's own was rolled back)."""
        async with self._db.write() as conn:
            await self.record(conn, actor, action, target, outcome="refused", detail=detail)

    async def latest(self, limit: int = 20) -> list[AuditEntry]:
        """Return the newest entries, newest first."""
        async with self._db.read() as conn:
            return await self._repo.latest(conn, limit)

    # ------------------------------------------------------------------ anchoring the head off the server

    async def anchor(self, conn: AsyncConnection) -> int:
        """Queue the head for every admin in the caller's transaction, after a role change was recorded in
        it; return how many messages were queued."""
        last = await self._repo.last(conn)
        if last is None or self._open_seal(await self._state.get(conn, _HEAD)) != (last.id, last.hash):
            return 0  # not a head anyone should keep; the next entry writes the break into the chain
        # Due when the head it replaces was: a steady stream of changes cannot keep pushing the send back.
        now, previous = self._clock.now(), self._open_announced(await self._state.get(conn, _ANNOUNCED))
        due = previous.due if previous is not None and previous.due > now else now + HEAD_DELAY
        return await self._queue_head(conn, last, "team", due)

    async def anchor_daily(self) -> int:
        """Queue the head for every admin if it changed and a day has passed since one was last queued (or
        since the chain began); return how many messages were queued. A break found is written first."""
        if self._anchoring is None or not self._anchoring.admin_ids:
            return 0
        now = self._clock.now()
        async with self._db.write() as conn:
            # Checking the seal here finds a cut within a day even when nothing else is audited.
            head = await self._tip(conn)
            last, first = await self._repo.last(conn), await self._repo.first(conn)
            if last is None or first is None or (last.id, last.hash) != head:
                return 0
            announced = self._open_announced(await self._state.get(conn, _ANNOUNCED))
            if announced is not None and announced.hash == last.hash:
                return 0  # the admins hold this head already
            if now - (announced.at if announced is not None else first.at) < ANCHOR_EVERY:
                return 0
            return await self._queue_head(conn, last, "daily", now)

    async def _queue_head(self, conn: AsyncConnection, entry: AuditEntry, why: str, due: datetime) -> int:
        if self._anchoring is None or not self._anchoring.admin_ids:
            return 0
        anchoring, language = self._anchoring, self._anchoring.language
        # A newer head vouches for every entry before it: an older one not yet sent need not go.
        await anchoring.outbox.cancel_ref(conn, HEAD_KIND, kinds=(HEAD_KIND,))
        text = anchoring.texts.text(
            language,
            "audit.head",
            hash=entry.hash,
            entry=entry.id,
            at=dates.utc_moment(entry.at),
            why=Safe(anchoring.texts.text(language, f"audit.head_why_{why}")),
        )
        queued = await self._tell_admins(
            conn, anchoring, text, HEAD_KIND, f"audit.head:{entry.hash[:32]}", PRIORITY_PERSONAL, due
        )
        record = {"entry": entry.id, "hash": entry.hash, "at": self._clock.now().isoformat()}
        await self._state.put(conn, _ANNOUNCED, json.dumps({**record, "due": due.isoformat()}))
        return queued

    async def _tell_admins(
        self,
        conn: AsyncConnection,
        anchoring: Anchoring,
        text: str,
        kind: str,
        dedupe: str,
        priority: int,
        due: datetime | None = None,
    ) -> int:
        """Queue one message to every admin in private (their user id is their private chat's id)."""
        messages = [
            OutgoingMessage(
                "sendMessage",
                {"chat_id": admin, "text": text},
                kind=kind,
                recipient_user_id=admin,
                priority=priority,
                due_at=due,
                # Once per admin even if the same transaction is tried twice or two instances run the
                # daily pass; keyed, so no admin's Telegram id is written in clear.
                dedupe_key=f"{dedupe}:{self._tag(admin)}",
                ref=HEAD_KIND if kind == HEAD_KIND else None,
            )
            for admin in sorted(anchoring.admin_ids)
        ]
        return await anchoring.outbox.enqueue(conn, messages)

    # ------------------------------------------------------------------ checking

    async def verify(self, expect_head: str | None = None) -> Verdict:
        """Recompute the whole chain; report every break found. With `expect_head` (a head an admin kept,
        or its first 16+ hex characters), also prove that entry is still in the chain; the rest of the
        check proves the chain runs unbroken from it to the seal."""
        wanted = head_prefix(expect_head) if expect_head is not None else None
        problems: list[str] = []
        prev, expected_id, count = GENESIS, 1, 0
        anchors: list[AuditEntry] = []
        last: AuditEntry | None = None
        async with self._db.read() as conn:
            async for entry in self._repo.walk(conn):
                count += 1
                if entry.id != expected_id:
                    problems.append(f"entries {expected_id}–{entry.id - 1} are missing")
                if entry.prev_hash != prev:
                    problems.append(f"entry {entry.id} does not follow the one before it")
                digest = self._digest(
                    entry.id,
                    entry.prev_hash,
                    entry.at,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.outcome,
                    entry.detail,
                )
                if not hmac.compare_digest(digest, entry.hash):
                    problems.append(f"entry {entry.id} was altered")
                elif entry.action == SEAL_BROKEN:
                    problems.append(_break_problem(entry))
                if wanted is not None and entry.hash.startswith(wanted):
                    anchors.append(entry)
                prev, expected_id, last = entry.hash, entry.id + 1, entry
            sealed = self._open_seal(await self._state.get(conn, _HEAD))
            in_use = count == 0 and await self._repo.in_use(conn)
        last_id = expected_id - 1
        if count == 0 and sealed is None:
            # A bot writes its first entry when it starts: an empty log means it never ran, or was wiped.
            problems.append(
                "the log is empty, but the database holds reports or a team: it was wiped"
                if in_use
                else "the log is empty (no bot has started on this database, or it was wiped)"
            )
        elif sealed is None or sealed != (last_id, prev):
            problems.append(f"the log does not end where it was sealed (last entry {last_id}): rows were cut")
        if wanted is not None:
            problems.extend(_anchor_problems(wanted, anchors, last))
        return Verdict(count, prev, tuple(problems), anchors[0] if len(anchors) == 1 else None, last)

    # ------------------------------------------------------------------ hashing

    def _digest(
        self,
        entry_id: int,
        prev: str,
        at: datetime,
        actor: str,
        action: str,
        target: str | None,
        outcome: str,
        detail: str | None,
    ) -> str:
        fields = [
            entry_id,
            prev,
            at.isoformat(timespec="microseconds"),
            actor,
            action,
            target,
            outcome,
            detail,
        ]
        message = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _seal(self, entry_id: int, digest: str) -> str:
        mac = hmac.new(self._key, f"head:{entry_id}:{digest}".encode(), hashlib.sha256).hexdigest()
        return f"{entry_id}:{digest}:{mac}"

    def _open_seal(self, sealed: str | None) -> tuple[int, str] | None:
        """Return the (id, hash) a seal vouches for, or None if there is none or it is forged."""
        if sealed is None:
            return None
        parts = sealed.split(":")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        if not hmac.compare_digest(self._seal(int(parts[0]), parts[1]), sealed):
            return None
        return int(parts[0]), parts[1]

    def _tag(self, admin: int) -> str:
        return hmac.new(self._key, f"admin:{admin}".encode(), hashlib.sha256).hexdigest()[:16]

    @staticmethod
    def _open_announced(raw: str | None) -> _Announced | None:
        """Read which head was last queued for the admins (not a security record: at worst one more send)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            at = datetime.fromisoformat(data["at"])
            return _Announced(int(data["entry"]), str(data["hash"]), at, datetime.fromisoformat(data["due"]))
        except (ValueError, KeyError, TypeError):
            return None


def _break_problem(entry: AuditEntry) -> str:
    if entry.detail == BREAK_WIPED:
        return f"entry {entry.id}: the log and its seal were wiped from a database in use, a new log begun"
    if entry.detail == BREAK_CUT:
        return f"before entry {entry.id} entries were cut off the end, or an older seal was restored"
    return f"before entry {entry.id} the seal was removed or forged"


def _anchor_problems(wanted: str, anchors: list[AuditEntry], last: AuditEntry | None) -> list[str]:
    ends = f"entry {last.id}, {dates.utc_moment(last.at)}" if last is not None else "no entries"
    if not anchors:
        return [
            f"the expected head {wanted[:HEAD_PREFIX_MIN]}… is not in the log: it was cut back to before "
            f"that head, rewritten or begun anew (the log now ends at {ends})"
        ]
    if len(anchors) > 1:
        return [f"the expected head {wanted}… matches {len(anchors)} entries: give more of it"]
    return []
