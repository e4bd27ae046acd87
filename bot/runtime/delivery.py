"""The one delivery worker: claims due outbox rows with a lease, sends under the limiter, records outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.clock import Clock
from bot.runtime.leadership import Leadership
from bot.runtime.outbox import PRIORITY_SOS
from bot.runtime.ratelimit import SendLimiter
from bot.runtime.telegram_api import ApiResult, NotSent, OutcomeUnknown, TelegramApi
from bot.security import Cipher, DecryptionError
from bot.security.bindings import payload_binding
from storage.database import Database
from storage.outbox import UNREACHABLE, ClaimedRow, OutboxRepository, Outcome
from storage.users import UserRepository

log = logging.getLogger(__name__)

# Answers to deletes and edits that mean "the goal is already reached".
_ALREADY_DONE = ("message to delete not found", "message is not modified", "message can't be deleted")


@dataclass(frozen=True)
class DeliveryConfig:
    """Tuning of the worker; defaults suit Telegram's free limits."""

    concurrency: int = 4
    lease_s: float = 60.0
    # With backoff capped at backoff_max_s, 20 attempts keep retrying a transient fault for about two
    # hours: long enough to outlast an outage, short enough that a broken row ends visibly dead.
    max_attempts: int = 20
    claim_limit: int = 1000
    # A row whose chat is not free for this long goes back to the queue instead of holding up the batch
    # (and every row claimed after it: an SOS queued meanwhile waits for the batch to end).
    defer_after_s: float = 0.5
    flush_interval_s: float = 0.05
    idle_poll_s: float = 0.5
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    unknown_retry_s: float = 5.0
    paid_broadcast: bool = False
    # Other instances lend their transient keys (bot.runtime.key_exchange): a row sealed under an epoch
    # this one holds no key for may be a peer's whose key is on its way, so it waits instead of dying.
    peers_lend_keys: bool = False
    # Protected rows (alerts) never end: a transient fault retries at most this far apart, forever,
    # and after this many attempts the failure is reported (admins hear of a long outage).
    protected_backoff_max_s: float = 30.0
    protected_report_after: int = 4
    # A row held because its chat refused it is tried again (one probe) after this long.
    held_probe_s: float = 60.0
    # A row for a person no working bot can write to waits this long before it is looked at again (a
    # person pressing Start in a backup brings their rows forward at once: BackupService.started).
    unreachable_retry_s: float = 300.0


@dataclass(frozen=True)
class Failure:
    """A protected row (an alert) that its chat refused or that keeps failing: it is held, never
    final, and whoever registered on_failed is told in the transaction that records it."""

    kind: str
    ref: str | None
    chat_key: str
    error: str
    held: bool  # True: waits for a working destination; False: still retrying (a long outage)
    migrate_to: int | None = None  # the chat became a supergroup with this id


FailureHandler = Callable[[AsyncConnection, Sequence[Failure]], Awaitable[None]]
# Which bot sends each row (backup bots, bot.runtime.fleet): a client, or None when no working bot can
# reach the person; rows not named go through the bot in use.
Router = Callable[[Sequence[ClaimedRow]], Awaitable[dict[int, TelegramApi | None]]]
# What a 403 "blocked by the user" from one bot means (backup bots): the person is unreachable ("person":
# they are marked inactive and their rows end), only this row ends ("row"), or it waits for another bot.
Blocked = Literal["person", "row", "wait"]
ResendMark = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Receipt:
    """A sent row of a kind someone asked to hear about: where it went and its message id."""

    kind: str
    ref: str | None
    chat_id: int
    message_id: int
    via_bot: int | None = None  # the bot that sent it, when there are backup bots


ReceiptHandler = Callable[[AsyncConnection, Sequence[Receipt]], Awaitable[None]]


class DeliveryWorker:
    """Sends outbox rows; a crash loses nothing and duplicates at most what was in flight."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: OutboxRepository,
        users: UserRepository,
        api: TelegramApi,
        cipher: Cipher,
        limiter: SendLimiter,
        clock: Clock,
        config: DeliveryConfig | None = None,
        instance: str | None = None,
        leader: Leadership | None = None,
    ) -> None:
        """`leader`: several instances elect one sender (the lease "sender"), so Telegram's limits, which
        are per bot, are kept by one limiter; the others stand by and take over when it stops."""
        self._db = db
        self._outbox = outbox
        self._users = users
        self._api = api
        self._cipher = cipher
        self._limiter = limiter
        self._clock = clock
        self._config = config or DeliveryConfig()
        self._leader = leader
        self._router: Router | None = None
        self._on_refused: Callable[[TelegramApi], None] = lambda api: None
        self._on_blocked: Callable[[TelegramApi, str], Blocked] = lambda api, chat_key: "person"
        self._bot_of: Callable[[TelegramApi], int | None] = lambda api: None
        self._routes: dict[int, TelegramApi | None] = {}
        # An owner is this instance and this run: a restarted instance takes back its previous run's
        # leases at once, and never another live instance's.
        self.instance = instance or secrets.token_hex(8)
        self.owner = f"{self.instance}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self._config.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._blocked: set[str] = set()
        self._receipt_handlers: dict[str, list[ReceiptHandler]] = {}
        self._failure_handlers: list[FailureHandler] = []
        self._failures: list[Failure] = []
        self._resend_marks: dict[str, ResendMark] = {}
        self._protected: Callable[[ClaimedRow], bool] = lambda row: False
        self._headroom: Callable[[ClaimedRow], int] = lambda row: 0
        # Cancelled broadcasts and people who unsubscribed, with when: rows of theirs claimed before that
        # moment are dropped, not sent. Entries expire after a lease (any older claim is gone by then).
        self._withdrawn_refs: dict[str, float] = {}
        self._withdrawn_recipients: dict[tuple[str, str], float] = {}
        self._claimed_at: dict[int, float] = {}
        # Private chats whose person just became reachable (started a backup bot), with when: a row of
        # theirs judged unreachable on a claim made before that moment is tried again at once.
        self._reached: dict[str, float] = {}
        self._awaiting_reach: dict[int, tuple[str, float]] = {}
        self._receipts: list[Receipt] = []
        self._flush_lock = asyncio.Lock()
        self._preempt = False
        self._wake_listeners: list[Callable[[], None]] = []
        self._seq = 0
        # Running totals for /metrics (bot.metrics): rows sent, and 429s Telegram answered.
        self.sent_count = 0
        self.too_many_count = 0

    def on_sent(self, kind: str, handler: ReceiptHandler) -> None:
        """Call `handler` with the message ids of sent rows of `kind`, in the transaction recording them
        (several handlers may listen to one kind)."""
        self._receipt_handlers.setdefault(kind, []).append(handler)

    def on_failed(self, handler: FailureHandler) -> None:
        """Call `handler` with protected rows that were refused or keep failing, in the transaction that
        records them (a savepoint: a handler that fails never holds back the outcomes)."""
        self._failure_handlers.append(handler)

    def on_resend(self, kind: str, mark: ResendMark) -> None:
        """Let `mark` change the parameters of a row of `kind` that may have gone out before (a lease
        taken back after a crash, a timeout): a resent alert card says it may be a repeat."""
        self._resend_marks[kind] = mark

    def route_by(
        self,
        router: Router,
        on_refused: Callable[[TelegramApi], None],
        on_blocked: Callable[[TelegramApi, str], Blocked],
        bot_of: Callable[[TelegramApi], int | None],
    ) -> None:
        """Let `router` choose, per claimed batch, which bot sends each row (backup bots); `on_refused`
        hears of the client whose token Telegram refused; `on_blocked(client, chat_key)` of a person who
        blocked a bot, and what it means (Blocked); `bot_of`
        names the bot behind a client, for receipts (a later edit must go through the same bot)."""
        self._router = router
        self._on_refused = on_refused
        self._on_blocked = on_blocked
        self._bot_of = bot_of

    def protect(self, predicate: Callable[[ClaimedRow], bool]) -> None:
        """Rows for which `predicate` holds are never final until sent: refused ones are held with their
        payload, transient faults retry forever."""
        self._protected = predicate

    def reserve(self, headroom: Callable[[ClaimedRow], int]) -> None:
        """Leave `headroom(row)` slots of a chat's window unused by this row (room kept for SOS)."""
        self._headroom = headroom

    def withdraw(
        self, *, ref: str | None = None, recipient: str | None = None, kinds: Sequence[str] = ()
    ) -> None:
        """Drop rows already claimed for a cancelled aggregate, or a person's rows of these kinds (call
        after the cancelling transaction committed: their pending rows are cancelled in the database)."""
        now = self._clock.monotonic()
        self._expire_withdrawals(now)
        if ref is not None:
            self._withdrawn_refs[ref] = now
        if recipient is not None:
            for kind in kinds:
                self._withdrawn_recipients[(recipient, kind)] = now

    def _withdrawn(self, row: ClaimedRow) -> bool:
        claimed = self._claimed_at.get(row.id, 0.0)
        by_ref = row.ref is not None and self._withdrawn_refs.get(row.ref, -1.0) >= claimed
        by_person = (
            row.recipient is not None
            and self._withdrawn_recipients.get((row.recipient, row.kind), -1.0) >= claimed
        )
        return by_ref or by_person

    def _expire_withdrawals(self, now: float) -> None:
        horizon = now - self._config.lease_s
        self._withdrawn_refs = {k: t for k, t in self._withdrawn_refs.items() if t >= horizon}
        self._withdrawn_recipients = {k: t for k, t in self._withdrawn_recipients.items() if t >= horizon}

    def wake(self, urgent: bool = False) -> None:
        """Look for due rows now rather than at the next poll; `urgent` (an SOS was queued) also stops the
        batch being paced out, so the SOS is claimed ahead of what remains of it."""
        if urgent:
            self._preempt = True
        self._wake.set()
        for listener in self._wake_listeners:
            listener()

    async def hurry(self, kind: str, within: timedelta, wait_s: float) -> int:
        """Send this kind's rows due within `within` now, and wait at most `wait_s` for them to go; return
        how many had not gone by then (a stop uses it: see bot.runner)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            ids = await self._outbox.bring_forward(conn, kind, now, now + within)
        if not ids:
            return 0
        self.wake()
        deadline = self._clock.monotonic() + wait_s
        while True:
            async with self._db.read() as conn:
                left = await self._outbox.unfinished(conn, ids)
            if left == 0 or self._clock.monotonic() >= deadline:
                return left
            await asyncio.sleep(0.05)

    def on_wake(self, listener: Callable[[], None]) -> None:
        """Also call `listener` whenever new rows are committed (the alert planner looks at them)."""
        self._wake_listeners.append(listener)

    def stop(self) -> None:
        """Ask the worker to finish what is in flight and return."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Send until stopped; on the way out, record outcomes and give back unsent claims."""
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            await self._reclaim_previous_run()
            await self._reclaim_expired()
            next_reclaim = self._clock.monotonic() + self._config.lease_s / 4
            failures = 0
            while not self._stopping.is_set():
                if self._leader is not None and not self._leader.is_leader:
                    await self._stand_by(self._leader)
                    continue
                if self._clock.monotonic() >= next_reclaim:
                    await self._reclaim_expired()
                    next_reclaim = self._clock.monotonic() + self._config.lease_s / 4
                try:
                    busy = await self.run_once()
                    failures = 0
                except Exception:
                    # A locked or full database must not end delivery: wait and claim again.
                    failures += 1
                    log.exception("claiming outbox rows failed; retrying")
                    await self._pause(min(30.0, 0.5 * 2**failures))
                    continue
                if not busy:
                    await self._idle()
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self._finish()

    async def run_once(self) -> bool:
        """Claim one batch and send it; return False when nothing was due."""
        now = self._clock.now()
        self._preempt = False
        async with self._db.write() as conn:
            rows = await self._outbox.claim(
                conn, self.owner, now, now + timedelta(seconds=self._config.lease_s), self._claim_size()
            )
        if not rows:
            return False
        claimed = self._clock.monotonic()
        self._claimed_at = {row.id: claimed for row in rows}
        self._routes = await self._route(rows)
        await self._pump(rows)
        return True

    async def drain(self) -> None:
        """Send everything due now and wait for the outcomes to be written (for tests and the CLI)."""
        while await self.run_once():
            pass
        await self._wait_in_flight()
        await self.flush()

    async def flush(self) -> None:
        """Write the outcomes gathered so far in one transaction."""
        async with self._flush_lock:
            if not self._outcomes and not self._blocked:
                return
            outcomes, self._outcomes = self._outcomes, []
            blocked, self._blocked = self._blocked, set()
            receipts, self._receipts = self._receipts, []
            failures, self._failures = self._failures, []
            try:
                async with self._db.write() as conn:
                    outcomes = self._reach_now(outcomes)
                    await self._outbox.apply(conn, self.owner, outcomes)
                    if blocked:
                        await self._users.mark_inactive(conn, sorted(blocked), self._clock.now())
                        await self._outbox.block_pending_for(conn, sorted(blocked))
                    await self._deliver_receipts(conn, receipts)
                    await self._report_failures(conn, failures)
            except BaseException:
                # Keep them for the next flush (also when cancelled mid-write at shutdown); the rows
                # stay leased to us meanwhile.
                self._outcomes = outcomes + self._outcomes
                self._blocked |= blocked
                self._receipts = receipts + self._receipts
                self._failures = failures + self._failures
                raise

    async def _report_failures(self, conn: AsyncConnection, failures: list[Failure]) -> None:
        if not failures:
            return
        for handler in self._failure_handlers:
            try:
                async with conn.begin_nested():
                    await handler(conn, failures)
            except Exception:
                log.exception("failed alerts could not be reported; they stay held")

    async def _deliver_receipts(self, conn: AsyncConnection, receipts: list[Receipt]) -> None:
        """Hand receipts to their handlers, all of a kind at once in one savepoint per handler (a burst of
        alerts makes one flush of dozens of cards). If that fails, each receipt is tried alone in a
        savepoint of its own: one that fails is logged and dropped, so it can never hold back the outcomes
        of every other message, nor the other receipts."""
        by_kind: dict[str, list[Receipt]] = {}
        for receipt in receipts:
            if receipt.kind in self._receipt_handlers:
                by_kind.setdefault(receipt.kind, []).append(receipt)
        for kind, batch in by_kind.items():
            for handler in self._receipt_handlers[kind]:
                try:
                    async with conn.begin_nested():
                        await handler(conn, batch)
                    continue
                except Exception:
                    if len(batch) == 1:
                        log.exception("a %s receipt could not be recorded; dropped", kind)
                        continue
                for receipt in batch:
                    try:
                        async with conn.begin_nested():
                            await handler(conn, [receipt])
                    except Exception:
                        log.exception("a %s receipt could not be recorded; dropped", kind)

    async def _route(self, rows: Sequence[ClaimedRow]) -> dict[int, TelegramApi | None]:
        if self._router is None:
            return {}
        try:
            return await self._router(rows)
        except Exception:
            # The bot in use sends them: at worst a person it cannot reach answers 403 and the row waits.
            log.exception("could not choose a bot for each row; the bot in use sends them")
            return {}

    def _claim_size(self) -> int:
        # Claim about a second's worth: a smaller claim lets a fresh alert overtake a long broadcast, and
        # a crash leaves fewer rows waiting for their lease to expire.
        rate = self._limiter.global_rate
        return self._config.claim_limit if rate <= 0 else max(1, min(self._config.claim_limit, int(rate)))

    async def _pump(self, rows: list[ClaimedRow]) -> None:
        queue: deque[ClaimedRow] = deque(rows)
        waiting: list[tuple[float, int, ClaimedRow]] = []
        while queue or waiting:
            if self._stopping.is_set():
                self._give_back(queue, waiting)
                return
            if self._leader is not None and not self._leader.is_leader:
                # Another instance is the sender now (or will be within its lease): not one more send.
                self._give_back(queue, waiting)
                return
            if self._preempt and any(r.priority < PRIORITY_SOS for r in queue):
                # An SOS was queued meanwhile: give the rest back and claim again, most urgent first.
                self._give_back(queue, waiting)
                return
            row = self._next_ready(queue, waiting)
            if row is None:
                if not waiting:
                    return  # every row was deferred: nothing of this batch can go now
                await self._pause(max(0.0, waiting[0][0] - self._clock.monotonic()))
                continue
            if self._withdrawn(row):
                self._outcomes.append(
                    Outcome(id=row.id, status="cancelled", error="withdrawn while queued", attempts_delta=-1)
                )
                continue
            if row.id in self._routes and self._routes[row.id] is None:
                self._outcomes.append(
                    self._unreachable(
                        row, "no working bot can write to this person", self._claimed_at.get(row.id, 0.0)
                    )
                )
                continue
            # A free slot first, then the limiter: a send approved by the limiter leaves at once, so a
            # 429 pause or a chat's pace cannot be overtaken while it waits for a slot.
            await self._slots.acquire()
            now = self._clock.monotonic()
            ready = self._limiter.global_ready_at(now)
            if ready > now:
                self._slots.release()
                queue.appendleft(row)
                if ready - now > self._config.lease_s / 2:
                    # A long 429 pause: give the rows back rather than let their leases run out.
                    self._give_back(queue, waiting, until=ready - now)
                    return
                await self._pause(ready - now)
                continue
            chat_ready = self._limiter.chat_ready_at(row.chat_key, row.chat_kind, now, self._headroom(row))
            if chat_ready > now:
                # The chat was used meanwhile (a direct reply to the same person).
                self._slots.release()
                self._push_waiting(waiting, chat_ready, row)
                continue
            self._limiter.record(row.chat_key, row.chat_kind, now)
            # The bot is chosen now: the next batch's routes replace these while this send is in flight.
            task = asyncio.create_task(
                self._send(row, self._routes.get(row.id) or self._api, self._claimed_at.get(row.id, 0.0))
            )
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def _give_back(
        self, queue: deque[ClaimedRow], waiting: list[tuple[float, int, ClaimedRow]], until: float = 0.0
    ) -> None:
        for row in [*queue, *(entry[2] for entry in waiting)]:
            self._defer(row, until)
        queue.clear()
        waiting.clear()

    def _next_ready(
        self, queue: deque[ClaimedRow], waiting: list[tuple[float, int, ClaimedRow]]
    ) -> ClaimedRow | None:
        now = self._clock.monotonic()
        if waiting and waiting[0][0] <= now:
            return heapq.heappop(waiting)[2]
        while queue:
            row = queue.popleft()
            ready = self._limiter.chat_ready_at(row.chat_key, row.chat_kind, now, self._headroom(row))
            if ready <= now:
                return row
            if ready - now > self._config.defer_after_s:
                self._defer(row, ready - now)
            else:
                self._push_waiting(waiting, ready, row)
        return None

    def _push_waiting(
        self, waiting: list[tuple[float, int, ClaimedRow]], ready: float, row: ClaimedRow
    ) -> None:
        self._seq += 1
        heapq.heappush(waiting, (ready, self._seq, row))

    def _defer(self, row: ClaimedRow, seconds: float) -> None:
        due = self._clock.now() + timedelta(seconds=seconds)
        self._outcomes.append(Outcome(id=row.id, status="pending", due_at=due, attempts_delta=-1))

    async def _send(self, row: ClaimedRow, api: TelegramApi, claimed: float) -> None:
        try:
            outcome = await self._attempt(row, api, claimed)
        except Exception as error:  # never let one row kill the worker
            log.exception("outbox row %s failed unexpectedly", row.id)
            outcome = self._retry_or_dead(row, f"internal error: {type(error).__name__}")
        finally:
            self._slots.release()
        self._outcomes.append(outcome)

    async def _attempt(self, row: ClaimedRow, api: TelegramApi, claimed: float) -> Outcome:
        try:
            params = self._cipher.decrypt_json(row.payload, binding=payload_binding(row.uid))
        except DecryptionError:
            if self._config.peers_lend_keys and not self._cipher.can_open_epoch(row.payload):
                return self._retry_or_dead(row, "sealed under another instance's key, not lent yet")
            if self._protected(row):
                # Perhaps the wrong key was loaded: keep the alert for a start with the right one.
                return self._hold(row, "payload does not decrypt under this key")
            return Outcome(id=row.id, status="dead", error="payload does not decrypt under this key")
        mark = self._resend_marks.get(row.kind)
        if mark is not None and row.unknown_outcomes > 0:
            params = mark(params)
        if self._config.paid_broadcast and row.method.startswith(("send", "copy")):
            params["allow_paid_broadcast"] = True
        try:
            result = await api.call(row.method, params)
        except OutcomeUnknown as error:
            return self._unknown(row, str(error))
        except NotSent as error:
            return self._retry_or_dead(row, str(error))
        chat = params.get("chat_id")
        wanted = row.kind in self._receipt_handlers
        if wanted and result.ok and result.message_id is not None and isinstance(chat, int):
            self._receipts.append(Receipt(row.kind, row.ref, chat, result.message_id, self._bot_of(api)))
        return self._judge(row, result, api, claimed)

    def _judge(
        self, row: ClaimedRow, result: ApiResult, api: TelegramApi | None = None, claimed: float = 0.0
    ) -> Outcome:
        if result.ok:
            self.sent_count += 1
            return Outcome(id=row.id, status="sent", message_id=result.message_id, sent_at=self._clock.now())
        code, description = result.error_code, result.description
        if code == 429:
            self.too_many_count += 1
            wait = result.retry_after if result.retry_after is not None else 1.0
            everyone = self._limiter.too_many(row.chat_key, row.chat_kind, wait)
            log.warning(
                "Telegram asked to wait %.0f s (429, %s)", wait, "everyone" if everyone else "one chat"
            )
            return Outcome(
                id=row.id,
                status="pending",
                due_at=self._clock.now() + timedelta(seconds=wait),
                error=f"429: {description}",
                attempts_delta=-1,
            )
        if code in (401, 404):
            # The token was revoked or the API address is wrong: not this row's fault, and no row should
            # die of it. Keep it and try again in a minute; the poller stops the bot on a 401 (or, with
            # backup bots, the fleet watch hears of it and may switch).
            log.error("Telegram rejected the bot token or address (%s); outbox rows wait", code)
            self._on_refused(api or self._api)
            return Outcome(
                id=row.id,
                status="pending",
                due_at=self._clock.now() + timedelta(seconds=60),
                error=f"{code}: {description}",
                attempts_delta=-1,
            )
        already = code == 400 and any(phrase in description.lower() for phrase in _ALREADY_DONE)
        if code is not None and 400 <= code < 500 and not already and self._protected(row):
            # An alert is never final until a coordinator can see it: hold it with its payload.
            return self._hold(row, f"{code}: {description}", migrate_to=result.migrate_to_chat_id)
        if code == 403 and self._router is not None and "initiate conversation" in description.lower():
            # This bot was never started by the person (a backup after a switch): not a refusal of
            # theirs. The row waits for a bot that can write to them.
            return self._unreachable(row, f"403: {description}", claimed)
        if code == 403 and row.chat_kind == "private" and self._router is not None:
            verdict = self._on_blocked(api or self._api, row.chat_key)
            if verdict == "wait" and row.via_bot is None:
                # A backup bot the person blocked: another working bot may still reach them.
                return self._unreachable(row, f"403: {description}", claimed)
            if verdict != "person":
                # Only this bot is refused (an edit or deletion only it could make, or the main bot
                # while a backup that reaches them is in use): this row ends, the person's others do not.
                return Outcome(id=row.id, status="blocked", error=f"403: {description}")
        if code == 403:
            if row.recipient is not None:
                self._blocked.add(row.recipient)
            return Outcome(id=row.id, status="blocked", error=f"403: {description}")
        if code == 400 and any(phrase in description.lower() for phrase in _ALREADY_DONE):
            return Outcome(id=row.id, status="sent", sent_at=self._clock.now(), error=f"400: {description}")
        if code is not None and 400 <= code < 500:
            # The request itself is wrong (bad chat, bad markup): retrying cannot help.
            return Outcome(id=row.id, status="dead", error=f"{code}: {description}")
        return self._retry_or_dead(row, f"{code}: {description}")

    def reached(self, chat_key: str) -> None:
        """A person is becoming reachable (call inside the transaction that records it, before it commits):
        their rows claimed before now and found unreachable are tried again at once, not after the wait."""
        now = self._clock.monotonic()
        horizon = now - self._config.lease_s
        self._reached = {k: t for k, t in self._reached.items() if t >= horizon}
        self._reached[chat_key] = now
        self.wake()

    def _unreachable(self, row: ClaimedRow, error: str, claimed: float) -> Outcome:
        self._awaiting_reach[row.id] = (row.chat_key, claimed)
        due = self._clock.now() + timedelta(seconds=self._config.unreachable_retry_s)
        return Outcome(id=row.id, status="pending", due_at=due, error=UNREACHABLE + error, attempts_delta=-1)

    def _reach_now(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Within the write that records them: a row found unreachable whose person became reachable
        since it was claimed is due at once. Checked under the write lock, so a person's start either
        committed before (and is seen here) or comes after (and its own update brings the row forward)."""
        if not self._awaiting_reach:
            return outcomes
        horizon = self._clock.monotonic() - self._config.lease_s
        self._reached = {k: t for k, t in self._reached.items() if t >= horizon}
        now = self._clock.now()
        out = []
        for outcome in outcomes:
            waiting = self._awaiting_reach.pop(outcome.id, None)
            if waiting is not None and self._reached.get(waiting[0], -1.0) >= waiting[1]:
                outcome = dataclasses.replace(outcome, due_at=now)
            out.append(outcome)
        return out

    def _hold(self, row: ClaimedRow, error: str, migrate_to: int | None = None) -> Outcome:
        self._failures.append(Failure(row.kind, row.ref, row.chat_key, error, True, migrate_to))
        due = self._clock.now() + timedelta(seconds=self._config.held_probe_s)
        return Outcome(id=row.id, status="held", due_at=due, error=error)

    def _unknown(self, row: ClaimedRow, error: str) -> Outcome:
        # A duplicate beats a miss (a hearing reminder), but one retry is enough: never loop forever.
        # An alert retries until it is known to be there (every copy of a card is a live view).
        if row.unknown_outcomes >= 1 and not self._protected(row):
            return Outcome(
                id=row.id, status="unknown", error=f"outcome unknown twice: {error}", unknown_delta=1
            )
        due = self._clock.now() + timedelta(seconds=self._config.unknown_retry_s)
        return Outcome(
            id=row.id, status="pending", due_at=due, error=f"outcome unknown: {error}", unknown_delta=1
        )

    def _retry_or_dead(self, row: ClaimedRow, error: str) -> Outcome:
        if self._protected(row):
            if row.attempts == self._config.protected_report_after:
                self._failures.append(Failure(row.kind, row.ref, row.chat_key, error, held=False))
            delay = min(
                self._config.protected_backoff_max_s, self._config.backoff_base_s * 2 ** (row.attempts - 1)
            )
            due = self._clock.now() + timedelta(seconds=delay)
            return Outcome(id=row.id, status="pending", due_at=due, error=error)
        if row.attempts >= self._config.max_attempts:
            return Outcome(id=row.id, status="dead", error=f"gave up after {row.attempts} attempts: {error}")
        delay = min(self._config.backoff_max_s, self._config.backoff_base_s * 2 ** (row.attempts - 1))
        return Outcome(
            id=row.id, status="pending", due_at=self._clock.now() + timedelta(seconds=delay), error=error
        )

    async def _idle(self) -> None:
        # Cleared before looking, so a wake that arrives while we look is not lost.
        self._wake.clear()
        await self.flush_quietly()
        try:
            async with self._db.read() as conn:
                next_due = await self._outbox.next_due_at(conn)
        except Exception:
            log.exception("reading the outbox failed; retrying")
            next_due = None
        wait = self._config.idle_poll_s
        if next_due is not None:
            wait = min(wait, max(0.0, (next_due - self._clock.now()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.01))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def flush_quietly(self) -> None:
        """Flush, logging instead of raising (the outcomes are kept for the next try)."""
        try:
            await self.flush()
        except Exception:
            log.exception("could not record delivery outcomes; will retry")

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.flush_interval_s)
            await self.flush_quietly()

    async def _wait_in_flight(self) -> None:
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _stand_by(self, leader: Leadership) -> None:
        """Hand back what this instance holds, wait to be elected, then take over the old sender's rows."""
        await self._wait_in_flight()
        await self.flush_quietly()
        await self._release_owned()
        stopping = asyncio.create_task(self._stopping.wait())
        elected = asyncio.create_task(leader.wait_leader())
        await asyncio.wait({stopping, elected}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, elected):
            task.cancel()
        await asyncio.gather(stopping, elected, return_exceptions=True)
        if self._stopping.is_set() or not leader.is_leader:
            return
        # Only the sender sends, and the previous one stopped before its lease ran out: the rows it had
        # claimed are taken back now, not when their own (longer) outbox leases expire.
        try:
            async with self._db.write() as conn:
                count = await self._outbox.reclaim_others(conn, exclude_owner=self.owner)
        except Exception:
            log.exception("could not take over the previous sender's rows; they come back on expiry")
            return
        if count:
            log.warning("took over %d outbox rows the previous sender had claimed", count)

    async def _release_owned(self) -> None:
        try:
            async with self._db.write() as conn:
                await self._outbox.release_owned(conn, self.owner)
        except Exception:
            log.exception("could not release claimed outbox rows; their leases will expire")

    async def _reclaim_previous_run(self) -> None:
        try:
            async with self._db.write() as conn:
                count = await self._outbox.reclaim_instance(conn, self.instance, exclude_owner=self.owner)
        except Exception:
            log.exception("could not take back the previous run's outbox leases; they will expire")
            return
        if count:
            log.warning("took back %d outbox rows this instance was sending when it stopped", count)

    async def _reclaim_expired(self) -> None:
        try:
            async with self._db.write() as conn:
                count = await self._outbox.reclaim_expired(conn, self._clock.now(), exclude_owner=self.owner)
        except Exception:
            log.exception("could not reclaim expired outbox leases")
            return
        if count:
            log.warning("reclaimed %d outbox rows whose worker stopped mid-send", count)

    async def _finish(self) -> None:
        await self._wait_in_flight()
        await self.flush_quietly()
        await self._release_owned()
