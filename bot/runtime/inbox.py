"""The durable inbox: store each update before acknowledging it to Telegram, then dispatch and mark done.

python-telegram-bot's own Updater confirms a batch of updates to Telegram before its handlers have run, so
a crash loses them. Here the offset only moves after the updates are committed to the `inbox` table, and a
row is marked done only after its handler has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.runtime.clock import Clock
from bot.runtime.flood import is_sos
from bot.runtime.leadership import Leadership
from bot.runtime.telegram_api import NotSent, OutcomeUnknown, TelegramApi
from bot.security import Cipher, DecryptionError
from bot.security.bindings import update_binding
from storage.database import Database
from storage.inbox import InboxRepository, InboxRow

log = logging.getLogger(__name__)

URGENT_CONCURRENCY = 32
# Several instances: a claim on an inbox row lasts this long and is renewed a third of the way through,
# so the rows of an instance that was killed are taken over within a claim.
CLAIM_S = 15.0
# How often an instance looks again at rows it could not take (another instance holds their chat, or
# they are sealed under a peer's transient key): nothing wakes it for those.
SKIPPED_RECHECK_S = 0.5
# The most due rows one dispatch pass reads; more are left for the next pass, which comes at once.
_PASS_ROWS = 200
# Done-marks of updates finishing within this long are written in one transaction. A crash inside it runs
# those updates again at the next start, as a crash between a handler and its mark always has (their gated
# actions are not repeated: bot.runtime.update_run).
MARK_DELAY_S = 0.1
# A database that stays locked or full is waited for this long, then the update is given up (logged):
# every retry is bounded, and a person who pressed something six hours ago has long tried again.
TRANSIENT_WINDOW = timedelta(hours=6)
ALLOWED_UPDATES = (
    "message",
    "edited_message",
    "callback_query",
    "channel_post",
    "my_chat_member",
    "chat_member",
)


class Dispatch(enum.Enum):
    """What became of one dispatched update."""

    DONE = "done"
    RETRY = "retry"  # a transient fault (database locked or full): keep it and try again


@dataclass(frozen=True)
class DispatchResult:
    """The outcome of dispatching one update, with the reason for a retry."""

    outcome: Dispatch
    error: str = ""
    # Telegram did not answer (rather than the database being locked or full): such a fault is counted
    # against the attempts, because a reply that timed out may have been delivered and the update's
    # other effects repeat with every run.
    counts: bool = False


Dispatcher = Callable[[dict[str, Any]], Awaitable[DispatchResult]]


# How often a refused token is tried again while a backup bot could take over.
REFUSED_RETRY_S = 30.0


class FatalPollingError(Exception):
    """Telegram refused the token or another instance owns the updates; polling cannot go on."""


class PollingRefused(FatalPollingError):
    """Telegram refused the token (401 or 404): revoked, deleted or banned."""


class PollingConflict(FatalPollingError):
    """Telegram ended this getUpdates because another one came (409): fatal unless polling is elected."""


class DurableInbox:
    """Fetches updates into the inbox and dispatches them from there."""

    def __init__(
        self,
        *,
        db: Database,
        repo: InboxRepository,
        api: TelegramApi,
        cipher: Cipher,
        clock: Clock,
        dispatch: Dispatcher,
        polling_timeout_s: int = 30,
        max_attempts: int = 5,
        concurrency: int = 16,
        owner: str | None = None,
        poller: Leadership | None = None,
        claim_s: float = CLAIM_S,
        claim_ahead: int | None = None,
        id_base: int = 0,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        """`owner` ("instance:run") turns on claims: several instances share one database, each handles
        the rows it claimed, one chat at a time, at most `claim_ahead` at once (twice its concurrency: the
        rest is left to the others). `poller`: only its holder calls getUpdates."""
        self._db = db
        self._repo = repo
        self._api = api
        self._cipher = cipher
        self._clock = clock
        self._dispatch = dispatch
        self._polling_timeout_s = polling_timeout_s
        self._max_attempts = max_attempts
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._mark_delay_s = MARK_DELAY_S
        self._marker: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        # An SOS has slots of its own: hundreds of submits waiting for Telegram's limits never hold one up.
        self._urgent_slots = asyncio.Semaphore(URGENT_CONCURRENCY)
        self._in_flight: set[int] = set()
        self._finished: set[int] = set()
        # The offset this poller last stored: read from the database only when it has none (a start, a
        # failed fetch, a turn standing by while another instance polled).
        self._offset: int | None = None
        # When the next pending row is due, read with the pass's own rows (one transaction, not two), and
        # whether that pass left due rows behind (its limit, or rows it may not take yet).
        self._next_due: datetime | None = None
        self._next_due_read = False
        self._left_behind = False
        # An update put off for later (a retry) moves the next due time: the dispatcher looks again.
        self._put_off = False
        # Handled updates whose done-mark is not written yet (it waits for others to share its write, or
        # the database is locked): never dispatched again by this process until it is.
        self._unmarked: set[int] = set()
        # One instance: what this process stores it hands straight to the chats' chains, without reading
        # it back, once a pass has found nothing older waiting (`_caught_up`: the updates an earlier run
        # put off are known, and the last pass left nothing behind), and only for a chat none of whose
        # updates waits in the database for a pass (`_held`: chat -> updates put off for a retry, or
        # stored while hand-over was off; `_held_chat`: update -> its chat).
        self._caught_up = False
        self._later_known = False
        self._held: dict[object, set[int]] = {}
        self._held_chat: dict[int, object] = {}
        self._chains: dict[object, asyncio.Task[None]] = {}
        self._queues: dict[object, deque[tuple[InboxRow, dict[str, Any] | None]]] = {}
        self._owner = owner
        self._instance = owner.rsplit(":", 1)[0] if owner is not None else None
        self._poller = poller
        self._claim_s = claim_s
        self._claim_ahead = claim_ahead if claim_ahead is not None else concurrency * 2
        self._skipped = 0
        self._peeked: dict[int, tuple[object, bool]] = {}
        # Every bot numbers its updates from its own start: a backup bot in use files them above its own
        # base (bot.runtime.fleet.inbox_id_base), so they never meet the main bot's in the inbox.
        self._id_base = id_base
        # With backup bots a refused token is not the end: polling waits while the fleet watch decides
        # whether to switch (bot.runtime.fleet_watch), and is told at once.
        self._on_refused = on_refused

    def stop(self) -> None:
        """Ask both loops to return after the current step."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Dispatch what was left from the last run, then fetch and dispatch until stopped."""
        dispatcher = asyncio.create_task(self._dispatch_loop())
        try:
            await self._fetch_loop()
        finally:
            self.stop()
            await dispatcher

    async def fetch_once(self, timeout_s: int | None = None) -> int:
        """Fetch one batch, store it, advance the offset; return how many updates came."""
        offset, self._offset = self._offset, None  # kept again only once this fetch has gone well
        if offset is None:
            async with self._db.read() as conn:
                offset = await self._repo.offset(conn)
        params: dict[str, Any] = {
            "timeout": self._polling_timeout_s if timeout_s is None else timeout_s,
            "allowed_updates": list(ALLOWED_UPDATES),
        }
        if offset is not None:
            params["offset"] = offset
        result = await self._api.call("getUpdates", params, read_timeout=params["timeout"] + 15)
        if not result.ok:
            if result.error_code in (401, 404):
                raise PollingRefused("Telegram rejected the bot token (401); check JARCHY_BOT_TOKEN")
            if result.error_code == 409 and "webhook" not in result.description.lower():
                raise PollingConflict(
                    "another bot instance is taking the updates (409); stop the other one, or give every "
                    "instance the same database so that one is elected to poll"
                )
            if result.error_code == 409:
                raise FatalPollingError(
                    "another bot instance or a webhook is taking the updates (409); stop the other one"
                )
            raise NotSent(f"getUpdates failed: {result.error_code} {result.description}")
        updates = [
            u for u in result.result or [] if isinstance(u, dict) and isinstance(u.get("update_id"), int)
        ]
        if not updates:
            self._offset = offset
            return 0
        next_offset = max(u["update_id"] for u in updates) + 1
        try:
            async with self._db.write() as conn:
                # Sealed inside the write transaction under the transient key (bot.services.upkeep.history).
                rows = [
                    (
                        self._id_base + u["update_id"],
                        self._cipher.encrypt_json(
                            u, binding=update_binding(self._id_base + u["update_id"]), transient=True
                        ),
                    )
                    for u in updates
                ]
                now = self._clock.now()
                new = await self._repo.store(conn, rows, next_offset, now)
        except BaseException:
            # Perhaps stored all the same (a commit that raised): the next pass reads them, in order.
            self._caught_up = False
            raise
        self._offset = next_offset
        # Only the rows this store inserted: one stored before (a webhook's, an offset older than what
        # was stored) is running, done or waiting for a pass already.
        self._hand_over(
            [
                (InboxRow(update_id, payload, 0, now), update)
                for (update_id, payload), update in zip(rows, updates, strict=True)
                if update_id in new
            ]
        )
        return len(updates)

    async def accept(self, update: dict[str, Any]) -> bool:
        """Store one update Telegram pushed (webhook mode) before it is answered; return False for one
        stored before (a resend), which is not handled again. Raises what the database raises: the caller
        answers with an error, and Telegram sends the update again."""
        update_id = self._id_base + update["update_id"]
        try:
            async with self._db.write() as conn:
                payload = self._cipher.encrypt_json(update, binding=update_binding(update_id), transient=True)
                now = self._clock.now()
                new = await self._repo.store_pushed(conn, update_id, payload, now)
        except BaseException:
            self._caught_up = False  # perhaps stored all the same: the next pass reads it, in order
            raise
        if new:
            self._hand_over([(InboxRow(update_id, payload, 0, now), update)])
        return new

    async def run_dispatch(self) -> None:
        """Dispatch until stopped, without polling (the webhook brings the updates: `accept`)."""
        await self._dispatch_loop()

    async def dispatch_pending(self) -> int:
        """Dispatch every update that is due now and wait until all are handled (start-up, tests)."""
        scheduled = await self._schedule_due()
        await self._drain_chains()
        if self._unmarked:
            await self._write_unmarked()
        return scheduled

    def _hand_over(self, stored: list[tuple[InboxRow, dict[str, Any]]]) -> None:
        """Give updates this process has just stored to their chats' chains, or wake the dispatcher to
        read them back when an older update might still be waiting (several instances: always)."""
        if self._owner is not None:
            self._wake.set()
            return
        for row, update in stored:
            key = _conversation_key(update)
            if self._caught_up and key not in self._held:
                self._enqueue(key, row, update)
            else:
                # An older update of this chat may wait in the database: a pass takes this one after it.
                self._hold(key, row.update_id)
                self._wake.set()

    def _hold(self, key: object, update_id: int) -> None:
        if self._owner is None:
            self._held.setdefault(key, set()).add(update_id)
            self._held_chat[update_id] = key

    def _release(self, update_id: int) -> None:
        key = self._held_chat.pop(update_id, None)
        held = self._held.get(key) if key is not None else None
        if held is not None:
            held.discard(update_id)
            if not held:
                del self._held[key]

    def _enqueue(self, key: object, row: InboxRow, update: dict[str, Any] | None) -> bool:
        if row.update_id in self._in_flight or row.update_id in self._unmarked:
            return False
        self._in_flight.add(row.update_id)
        self._queues.setdefault(key, deque()).append((row, update))
        if key not in self._chains:
            self._chains[key] = asyncio.create_task(self._run_chain(key))
        return True

    async def _schedule_due(self) -> int:
        """Hand due updates to their chat's chain; a slow handler delays only its own chat."""
        # An update finished before this read is seen by it as done; one finishing during the read may
        # still look pending to it, so it stays marked in flight until the next pass.
        settled = set(self._finished)
        self._next_due_read = self._put_off = False
        if self._unmarked:
            await self._write_unmarked()
        if self._owner is not None and self._instance is not None:
            chosen = await self._claim_due(self._owner, self._instance)
        else:
            # Marks written from here on (the marker runs meanwhile) still count as unwritten to this pass:
            # its rows may have been read before they were.
            marking = set(self._unmarked)
            now = self._clock.now()
            later: list[InboxRow] = []
            async with self._db.read() as conn:
                rows = await self._repo.due(conn, now, limit=_PASS_ROWS)
                self._next_due = await self._repo.next_due_at(conn)
                if not self._later_known:
                    later = await self._repo.later(conn, now, limit=_PASS_ROWS)
            self._next_due_read = True
            self._left_behind = len(rows) >= _PASS_ROWS
            if not self._later_known:
                # Updates an earlier run put off for later: their chats wait for them.
                for row in later:
                    update = self._open(row.update_id, row.payload)
                    self._hold(_key_of(row.update_id, update), row.update_id)
                self._later_known = len(later) < _PASS_ROWS
            chosen = [
                (row, self._open(row.update_id, row.payload))
                for row in rows
                if row.update_id not in self._in_flight
                and row.update_id not in self._unmarked
                and row.update_id not in marking
            ]
        self._in_flight -= settled
        self._finished -= settled
        scheduled = 0
        for row, update in chosen:
            key = _key_of(row.update_id, update)
            if self._enqueue(key, row, update):
                self._release(row.update_id)
                scheduled += 1
        if self._owner is None:
            self._caught_up = self._later_known and not self._left_behind
        return scheduled

    def _open(self, update_id: int, payload: bytes | None) -> dict[str, Any] | None:
        if payload is None:
            return None
        try:
            update: dict[str, Any] = self._cipher.decrypt_json(payload, binding=update_binding(update_id))
        except DecryptionError:
            return None
        return update

    async def _claim_due(self, owner: str, instance: str) -> list[tuple[InboxRow, dict[str, Any] | None]]:
        """Claim, in one write, the due rows this instance will handle: none of a chat another instance
        is handling, none this instance cannot decrypt (a peer's, sealed under its transient key), and
        no more than it has room for, so a second instance gets the rest (an SOS is always taken)."""
        now = self._clock.now()
        budget = self._claim_ahead - len(self._in_flight - self._finished)
        chosen: list[tuple[InboxRow, dict[str, Any] | None]] = []
        skipped = 0
        seen: dict[int, tuple[object, bool]] = {}
        async with self._db.write() as conn:
            rows = await self._repo.claimable(conn, now, instance, limit=_PASS_ROWS)
            held = await self._repo.held_by_others(conn, now, instance)
            busy = set()
            for other in held:
                peeked = self._peek(other.update_id, other.payload, seen)
                if peeked is not None:
                    busy.add(peeked[0])
            for row in rows:
                if row.update_id in self._in_flight or row.update_id in self._unmarked:
                    continue
                peeked = self._peek(row.update_id, row.payload, seen)
                if peeked is None:
                    if self._within_window(row, now):
                        # Perhaps a live peer's (its transient key): leave it to that instance. Only once
                        # no live instance could still be retrying it is it given up as undecryptable.
                        skipped += 1
                        continue
                    chosen.append((row, None))
                    continue
                key, urgent = peeked
                if key in busy or (budget <= 0 and not urgent):
                    # Another instance handles this chat (or this one is full): a later row of the same
                    # chat must not overtake this one either.
                    busy.add(key)
                    skipped += 1
                    continue
                update = self._open(row.update_id, row.payload)
                if update is None:
                    skipped += 1
                    continue
                chosen.append((row, update))
                budget -= 1
            await self._repo.claim(
                conn,
                [row.update_id for row, _ in chosen],
                owner,
                now + timedelta(seconds=self._claim_s),
            )
            self._next_due = await self._repo.next_due_at(conn, instance)
        self._next_due_read = True
        self._left_behind = skipped > 0 or len(rows) >= _PASS_ROWS
        self._skipped = skipped
        self._peeked = seen
        return chosen

    def _peek(
        self, update_id: int, payload: bytes | None, seen: dict[int, tuple[object, bool]]
    ) -> tuple[object, bool] | None:
        """Return an update's chat and whether it is an SOS, decrypting it only the first time: a pass
        looks at up to 200 waiting rows to claim a few, and would otherwise open all of them every time."""
        known = self._peeked.get(update_id)
        if known is None:
            update = self._open(update_id, payload)
            if update is None:
                return None  # not remembered: a lent key may open it at the next pass
            known = (_conversation_key(update), _is_sos(update))
        seen[update_id] = known
        return known

    async def _renew_claims(self, owner: str) -> None:
        # The rows this run holds stay claimed while they wait or run, however long a handler takes.
        while True:
            await asyncio.sleep(self._claim_s / 3)
            if not self._in_flight and not self._unmarked:
                continue
            now = self._clock.now()
            try:
                async with self._db.write() as conn:
                    await self._repo.renew(conn, owner, now + timedelta(seconds=self._claim_s))
            except Exception:
                log.warning("could not renew this instance's inbox claims; retrying")

    async def _release_claims(self) -> None:
        if self._owner is None:
            return
        try:
            async with self._db.write() as conn:
                await self._repo.release_owned(conn, self._owner)
        except Exception:
            log.warning("could not give back unhandled inbox claims; they pass to others when they expire")

    async def _run_chain(self, key: object) -> None:
        # Updates from one chat stay in order; different chats never wait for each other.
        queue = self._queues[key]
        try:
            # Stopping: what has not started stays pending for the next run (or another instance).
            while queue and not self._stopping.is_set():
                row, update = queue.popleft()
                slots = self._urgent_slots if update is not None and _is_sos(update) else self._slots
                try:
                    async with slots:
                        await self._handle(row, update)
                finally:
                    self._finished.add(row.update_id)
        finally:
            del self._chains[key]
            del self._queues[key]
            # Updates that came meanwhile woke the dispatcher already; a finished chain matters to it only
            # if the last pass left rows for lack of room, or an update here was put off.
            if self._left_behind or self._put_off:
                self._wake.set()

    async def _drain_chains(self) -> None:
        while self._chains:
            await asyncio.gather(*list(self._chains.values()), return_exceptions=True)

    async def _handle(self, row: InboxRow, update: dict[str, Any] | None) -> None:
        now = self._clock.now()
        if update is None:
            log.error("inbox update %s does not decrypt; dropping it", row.update_id)
            await self._record(
                lambda conn: self._repo.mark_failed(conn, row.update_id, now, "does not decrypt")
            )
            return
        counted = False
        try:
            result = await self._dispatch(update)
        except Exception as error:
            log.exception("dispatching update %s failed", row.update_id)
            result = DispatchResult(Dispatch.RETRY, f"{type(error).__name__}")
            counted = True
        if result.outcome is Dispatch.DONE:
            self._mark_done(row.update_id)
            return
        self._put_off = True
        if not counted and (not result.counts or _is_sos(update)) and self._within_window(row, now):
            # An SOS is never given up for Telegram's silence while the window lasts: the network coming
            # back is exactly when it must still go out.
            # A transient fault (database locked or full) is retried while it lasts, up to a bound: giving
            # up early would lose an update Telegram was already told had arrived.
            delay = timedelta(seconds=min(60.0, 2.0 ** min(row.attempts, 6)))
            log.warning("update %s will be retried: %s", row.update_id, result.error)
            self._retry_later_in_chat(update, row.update_id)
            await self._record(
                lambda conn: self._repo.retry_later(
                    conn, row.update_id, now + delay, result.error, count=False
                )
            )
        elif row.attempts + 1 >= self._max_attempts or not self._within_window(row, now):
            log.error(
                "giving up on update %s after %d attempts: %s", row.update_id, row.attempts + 1, result.error
            )
            await self._record(lambda conn: self._repo.mark_failed(conn, row.update_id, now, result.error))
        else:
            delay = timedelta(seconds=min(60.0, 2.0**row.attempts))
            log.warning("update %s will be retried: %s", row.update_id, result.error)
            self._retry_later_in_chat(update, row.update_id)
            await self._record(
                lambda conn: self._repo.retry_later(conn, row.update_id, now + delay, result.error)
            )

    def _retry_later_in_chat(self, update: dict[str, Any], update_id: int) -> None:
        # Until a pass takes it up again, the chat's newer updates go through the passes too, after it.
        self._hold(_conversation_key(update), update_id)

    def _mark_done(self, update_id: int) -> None:
        # Handled: never run again by this process (running it again would repeat its replies). The mark
        # is written with those of the updates finishing around it, in one transaction.
        self._unmarked.add(update_id)
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._write_marks_soon())

    async def _write_marks_soon(self) -> None:
        delay = self._mark_delay_s
        while self._unmarked:
            await asyncio.sleep(delay)
            written = await self._write_unmarked()
            # A locked database: back off (every dispatch pass tries as well).
            delay = self._mark_delay_s if written else min(5.0, max(0.2, delay * 2))

    async def _write_unmarked(self) -> bool:
        ids = sorted(self._unmarked)
        if not ids:
            return True
        now = self._clock.now()
        try:
            async with self._db.write() as conn:
                await self._repo.mark_done(conn, ids, now)
        except Exception:
            log.warning("done-marks for %d updates still not written; trying again", len(ids))
            return False
        self._unmarked.difference_update(ids)
        return True

    def _within_window(self, row: InboxRow, now: datetime) -> bool:
        return row.received_at is None or now - row.received_at < TRANSIENT_WINDOW

    async def _record(self, write: Callable[[Any], Awaitable[None]]) -> bool:
        # Recording the outcome may itself hit a locked database: try a few times, then say so.
        for attempt in range(5):
            try:
                async with self._db.write() as conn:
                    await write(conn)
                return True
            except Exception:
                if attempt == 4:
                    log.exception("could not record an inbox outcome")
                    return False
                await asyncio.sleep(0.2 * (attempt + 1))
        return False

    async def _fetch_loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            if self._poller is not None and not self._poller.is_leader:
                # Standing by: another instance polls; this one dispatches and takes over if it dies.
                self._offset = None
                await self._until_stopping(self._poller.wait_leader())
                continue
            fetch = asyncio.create_task(self.fetch_once())
            stopping = asyncio.create_task(self._stopping.wait())
            watched: set[asyncio.Task[Any]] = {fetch, stopping}
            lost = asyncio.create_task(self._poller.wait_lost()) if self._poller is not None else None
            if lost is not None:
                watched.add(lost)
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in watched - {fetch}:
                task.cancel()
            if fetch not in done:
                # Stopping (or no longer the poller) mid-poll: what Telegram sends now is not
                # acknowledged, so it comes again, to whoever polls next.
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                if stopping in done:
                    return
                continue
            try:
                fetch.result()
                backoff = 1.0
            except PollingConflict:
                if self._poller is None:
                    raise
                if self._poller.is_leader:
                    # Something outside the election polls too: let it be for a lease, then try again.
                    log.error("another poller outside this cluster takes the updates (409); standing by")
                    await self._poller.step_down()
            except PollingRefused as error:
                if self._on_refused is None:
                    raise
                self._on_refused()
                log.error("%s; polling waits for a switch to a backup bot", error)
                await self._pause(REFUSED_RETRY_S)
            except FatalPollingError:
                raise
            except (NotSent, OutcomeUnknown) as error:
                log.warning("getUpdates failed (%s); retrying in %.0f s", error, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:
                log.exception("storing updates failed; retrying in %.0f s", backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _until_stopping(self, waiting: Awaitable[None]) -> None:
        task = asyncio.ensure_future(waiting)
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stopping):
            pending.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)

    async def _dispatch_loop(self) -> None:
        renewer = asyncio.create_task(self._renew_claims(self._owner)) if self._owner is not None else None
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self._schedule_due()
                except Exception:
                    self._caught_up = False  # what it read may not be in the chains: the next pass sees to it
                    log.exception("inbox dispatch failed; retrying")
                await self._wait_for_work()
        finally:
            # Let handlers that already started finish; what is not started stays pending for next time.
            for queue in self._queues.values():
                queue.clear()
            await self._drain_chains()
            if self._marker is not None:
                self._marker.cancel()
                await asyncio.gather(self._marker, return_exceptions=True)
            for attempt in range(5):
                if not self._unmarked or await self._write_unmarked():
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
            await self._release_claims()

    async def _wait_for_work(self) -> None:
        wait = 1.0
        next_due = self._next_due
        if not self._next_due_read:  # the pass failed before it read it
            try:
                async with self._db.read() as conn:
                    next_due = await self._repo.next_due_at(conn, self._instance)
            except Exception:
                log.exception("reading the inbox failed; retrying")
                next_due = None
        if next_due is not None:
            until_due = (next_due - self._clock.now()).total_seconds()
            # Rows being handled right now are still pending and "due": a finishing chain wakes us.
            if until_due > 0 or not (self._in_flight or self._unmarked):
                wait = min(wait, max(0.01, until_due))
        if self._skipped:
            # Rows this instance may not take look due all the time: look again soon, not at once.
            wait = max(wait, SKIPPED_RECHECK_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


def _is_sos(update: dict[str, Any]) -> bool:
    query = update.get("callback_query")
    if isinstance(query, dict):
        # Only a press in a private chat can be someone's SOS; one in a group gets no urgent lane.
        chat = (query.get("message") or {}).get("chat") or {}
        data = query.get("data")
        return chat.get("type") == "private" and is_sos(data if isinstance(data, str) else "", None)
    message = update.get("message")
    if isinstance(message, dict) and (message.get("chat") or {}).get("type") == "private":
        text = message.get("text")
        return is_sos(None, text if isinstance(text, str) else "")
    return False


def _key_of(update_id: int, update: dict[str, Any] | None) -> object:
    # An update that does not decrypt is a chain of its own.
    return _conversation_key(update) if update else ("update", update_id)


def _conversation_key(update: dict[str, Any]) -> object:
    for field in (
        "message",
        "edited_message",
        "channel_post",
        "callback_query",
        "my_chat_member",
        "chat_member",
    ):
        body = update.get(field)
        if isinstance(body, dict):
            chat = body.get("chat") or (body.get("message") or {}).get("chat")
            if isinstance(chat, dict) and "id" in chat:
                return ("chat", chat["id"])
            sender = body.get("from")
            if isinstance(sender, dict) and "id" in sender:
                return ("user", sender["id"])
    return ("update", update.get("update_id"))
