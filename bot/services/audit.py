"""The audit log: who did what to which report or person, chained so tampering shows.

Each entry's hash is an HMAC (keyed from the data key) over its fields and the previous entry's hash, and the
newest id and hash are sealed in bot_state. Editing or deleting any row, or cutting rows off the end, breaks
the chain for anyone without the key; someone holding the key could rewrite it all, which is why admins
should note the head `jarchy audit verify` prints somewhere off the server now and then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.security import DataKey
from storage.audit import AuditEntry, AuditRepository
from storage.database import Database
from storage.state import StateRepository

GENESIS = "0" * 64
SEAL_BROKEN = "audit.seal_broken"
_HEAD = "audit_head"


@dataclass(frozen=True)
class Verdict:
    """What `verify` found."""

    entries: int
    head: str
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        """Tell whether the chain is whole."""
        return not self.problems


class AuditLog:
    """Appends chained entries and checks the chain."""

    def __init__(
        self, db: Database, repo: AuditRepository, state: StateRepository, key: DataKey, clock: Clock
    ):
        self._db = db
        self._repo = repo
        self._state = state
        self._key = key.derive("audit.chain")
        self._clock = clock

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
        # The sealed head, not the last row, says where the chain goes on: rows cut off the end leave a
        # gap the next entry cannot paper over. A concurrent appender (PostgreSQL) collides on the id and
        # rolls the action back rather than forking the chain.
        head = self._open_seal(await self._state.get(conn, _HEAD))
        if head is None:
            last = await self._repo.last(conn)
            head = (last.id, last.hash) if last is not None else (0, GENESIS)
            if last is not None:
                # The seal is gone or forged while entries exist: say so in the chain itself, for good.
                head = await self._append(conn, head, "system", SEAL_BROKEN, None, "refused", None)
        await self._append(conn, head, actor, action, target, outcome, detail)

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

    async def verify(self) -> Verdict:
        """Recompute the whole chain; report every break found."""
        problems: list[str] = []
        prev, expected_id, count = GENESIS, 1, 0
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
                    problems.append(f"before entry {entry.id} the seal was removed or forged")
                prev, expected_id = entry.hash, entry.id + 1
            sealed = self._open_seal(await self._state.get(conn, _HEAD))
        last_id = expected_id - 1
        if count == 0 and sealed is None:
            # A bot writes its first entry when it starts: an empty log means it never ran, or was wiped.
            return Verdict(
                0, GENESIS, ("the log is empty (no bot has started on this database, or it was wiped)",)
            )
        if sealed is None or sealed != (last_id, prev):
            problems.append(f"the log does not end where it was sealed (last entry {last_id}): rows were cut")
        return Verdict(count, prev, tuple(problems))

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
