"""Guided command flows: a coordinators' command sent alone asks for its fields one at a time.

The flow is the command's declaration (bot.services.cases.commands) walked step by step; each value goes
through the field's own parser, and Save hands the values to the same call the one-liner makes. Its state
is a draft row of kind "flow" (storage.drafts): encrypted, expiring, one per person, bound to them by the
row's owner and to its buttons by the nonce. Every step checks the role again through the gate.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import date_picker
from bot.domain.callbacks import DatePress, FlowPress
from bot.domain.commands import CommandError, CommandSpec, Field, parse_field
from bot.domain.errors import NotAllowed, Refused
from bot.runtime.update_run import current_run
from bot.security.bindings import draft_binding
from bot.services.cases.commands import CASE_EDIT, COMMANDS
from bot.services.cases.hearings import HearingInputError, HearingService
from bot.services.core import Core
from storage.cases import Case, CaseNotFound, CaseRepository, Hearing
from storage.drafts import DraftRepository, StoredDraft

KIND = "flow"
FLOW_TTL = timedelta(hours=6)
CASE_CHOICES = 8  # the newest open cases offered as buttons; any other is typed by number
HEARING_CHOICES = 8  # the soonest scheduled hearings of open cases, any other typed by number
HEARING_LOOKBACK = timedelta(days=14)  # a hearing held in the last two weeks may still wait for its outcome
T = TypeVar("T")


class FlowEnded(Exception):
    """A button or input for no flow of this person's at that step: ended, replaced, or someone else's."""


@dataclass
class Flow:
    """Where a guided command is: the step (an index into the fields; their count is the summary) and the
    values as typed or chosen, each read again by its parser on Save."""

    nonce: str
    command: str
    chat_id: int
    step: int = 0
    values: dict[str, str | None] = field(default_factory=dict)
    month: int | None = None  # the picker's month shown (yyyymm)
    day: int | None = None  # the picker's chosen day (yyyymmdd), then its hour
    hour: int | None = None
    typing: bool = False  # the person asked to type the time instead
    saving: int | None = None  # the update whose Save is running: its retry may run it again, no other
    seen: list[int] = field(default_factory=list)  # messages already taken (a retried update)
    filled_from: str | None = None  # the case whose values /case_edit's later fields start from

    @property
    def spec(self) -> CommandSpec:
        """The command's declaration."""
        return COMMANDS[self.command]

    @property
    def at_summary(self) -> bool:
        """Whether every field has been given."""
        return self.step >= len(self.spec.fields)

    @property
    def field(self) -> Field | None:
        """The field asked for now; None at the summary."""
        return None if self.at_summary else self.spec.fields[self.step]


@dataclass(frozen=True)
class FlowScreen:
    """What to show: the flow's step, with what was wrong with the last input and what to pick from."""

    flow: Flow
    today: date
    error: str | None = None
    cases: tuple[Case, ...] = ()
    hearings: tuple[Hearing, ...] = ()


class CommandFlows:
    """Start, advance, cancel and save guided commands."""

    def __init__(
        self,
        core: Core,
        *,
        drafts: DraftRepository,
        cases: CaseRepository,
        hearings: HearingService,
    ) -> None:
        self._core = core
        self._drafts = drafts
        self._cases = cases
        self._hearings = hearings

    async def begin(self, user_id: int, chat_id: int, command: str) -> FlowScreen:
        """Start a command's flow, replacing any earlier one (coordinators)."""
        spec = COMMANDS[command]
        async with self._core.gate.acting(user_id, spec.action, once=False) as act:
            flow = Flow(nonce=secrets.token_hex(8), command=command, chat_id=chat_id)
            await self._store(act.conn, act.actor, flow, create=True)
            return await self._screen(act.conn, flow)

    async def press(self, user_id: int, data: FlowPress | DatePress) -> FlowScreen:
        """Apply a button of the current step; FlowEnded if it is not one."""
        async with self._step(user_id, data.nonce, data.step) as (conn, actor, flow):
            error = self._apply(flow, data)
            await self._prefill(conn, flow)
            await self._store(conn, actor, flow)
            return await self._screen(conn, flow, error)

    async def input_text(self, user_id: int, text: str, message_id: int) -> FlowScreen | None:
        """Take typed text for the step that waits for it; None when no flow of the person's waits."""
        if not await self._core.gate.holds(user_id):
            return None  # anyone's text passes here: only a coordinator can have a flow to give it to
        async with self._core.gate.acting(user_id, "flow.input", once=False) as act:
            flow = await self._load(act.conn, act.actor)
            if flow is None:
                return None
            if message_id in flow.seen:
                return await self._screen(act.conn, flow)  # its update was retried: already taken
            flow.seen = [*flow.seen, message_id][-20:]
            error = self._give(flow, text)
            await self._prefill(act.conn, flow)
            await self._store(act.conn, act.actor, flow)
            return await self._screen(act.conn, flow, error)

    async def set_aside(self, user_id: int) -> None:
        """End the person's flow, if any, because they started a report: what they type next is the report's,
        and a flow left open must not swallow it (nor keep it off the list the phone is cleaned of)."""
        if not await self._core.gate.holds(user_id):
            return  # only a coordinator can have a flow
        try:
            async with self._core.gate.acting(user_id, "flow.input", once=False) as act:
                stored = await self._drafts.get(act.conn, act.actor, KIND, self._core.clock.now())
                if stored is not None:
                    await self._drafts.delete(act.conn, act.actor, stored.nonce)
        except NotAllowed:
            return  # the role went a moment ago: the flow is dead anyway, and the report goes on

    async def cancel(self, user_id: int, nonce: str, step: int) -> None:
        """End the flow; nothing is saved."""
        async with self._step(user_id, nonce, step) as (conn, actor, _):
            await self._drafts.delete(conn, actor, nonce)

    async def save(
        self,
        user_id: int,
        nonce: str,
        step: int,
        execute: Callable[[CommandSpec, dict[str, object]], Awaitable[T]],
    ) -> T:
        """Run the command with the flow's values, through `execute` (the one-liner's own call), then end
        the flow. Refused input puts the flow back at its summary with the error (HearingInputError)."""
        run = current_run()
        update_id = run.update_id if run is not None else None
        async with self._step(user_id, nonce, step, saving=update_id) as (conn, actor, flow):
            if not flow.at_summary:
                raise FlowEnded
            flow.saving = update_id
            await self._store(conn, actor, flow)
        try:
            values = {f.name: _read(flow.spec, f, flow.values.get(f.name)) for f in flow.spec.fields}
            result = await execute(flow.spec, values)
        except (CommandError, Refused):
            await self._unsave(user_id, flow)
            raise
        # The command ran (and its own gate checked the role): ending the flow needs no role, or a role lost
        # a moment later would tell the person their saved command was not saved.
        async with self._core.unit_of_work() as uow:
            await self._drafts.delete(uow.conn, self._core.pseudonyms.of_user(user_id), nonce)
            await uow.commit()
        return result

    # ------------------------------------------------------------------ internals

    def _apply(self, flow: Flow, data: FlowPress | DatePress) -> str | None:
        current = flow.field
        if isinstance(data, FlowPress):
            if data.action == "back":
                flow.step = max(0, flow.step - 1)
                flow.typing, flow.day, flow.hour = False, None, None
                return None
            if current is None:
                raise FlowEnded  # cancel and save are not applied here; nothing else is at the summary
            if data.action == "skip" and current.optional:
                flow.values[current.name] = None
                flow.step += 1
                return None
            if data.action == "skip" and flow.values.get(current.name) is not None:
                flow.step += 1  # Keep: a required field's value as it is (the case being edited)
                return None
            if data.action == "pick" and current.kind in ("choice", "case", "hearing"):
                return self._give(flow, data.value)
            raise FlowEnded
        if current is None or current.kind != "datetime":
            raise FlowEnded
        return self._pick_time(flow, data)

    def _pick_time(self, flow: Flow, data: DatePress) -> str | None:
        first = date_picker.today(self._core.clock.now(), self._core.zone)
        if data.action == "type":
            flow.typing = True
        elif data.action == "month":
            month = date_picker.Month.from_code(data.value)
            if month is None or month.code < date_picker.Month.of(first).code:
                raise FlowEnded
            flow.month, flow.day, flow.hour = month.code, None, None
        elif data.action == "day":
            day = date_picker.day_from_code(data.value)
            if day is None or not date_picker.selectable(day, first):
                raise FlowEnded
            flow.day, flow.hour = data.value, None
        elif data.action == "hour" and flow.day is not None and data.value in date_picker.HOURS:
            flow.hour = data.value
        elif data.action == "minute" and flow.hour is not None and data.value in date_picker.MINUTES:
            day = date_picker.day_from_code(flow.day or 0)
            if day is None:
                raise FlowEnded
            # Written as a typed time would be, and read by the same parser.
            return self._give(flow, date_picker.written(day, flow.hour, data.value))
        else:
            raise FlowEnded
        return None

    def _give(self, flow: Flow, text: str) -> str | None:
        """Read a value for the current field: on success move on, else return the error's key."""
        current = flow.field
        if current is None:
            return "flow.use_buttons"
        try:
            value = parse_field(flow.spec, current, text)
            if current.kind == "datetime":
                self._hearings.parse_time(str(value))  # the past is refused here too, in the same zone
        except CommandError as error:
            return error.key
        except HearingInputError as error:
            flow.day = flow.hour = None
            return error.key
        if value is None and not current.optional:
            return "cmd.empty"
        flow.values[current.name] = text.strip()
        flow.step += 1
        flow.typing, flow.month, flow.day, flow.hour = False, None, None, None
        return None

    async def _prefill(self, conn: AsyncConnection, flow: Flow) -> None:
        """Start /case_edit's fields from the case picked (again, if another one is picked after Back), so
        only what changes is typed."""
        picked = flow.values.get("case")
        if flow.command != CASE_EDIT.name or picked is None or picked == flow.filled_from:
            return
        try:
            case = await self._cases.case(conn, int(picked))
        except (CaseNotFound, ValueError):
            return  # Save refuses it as the one-liner would
        flow.values.update(
            names=case.title,
            description=case.description,
            charges=case.charges,
            visibility="public" if case.public else "private",
        )
        flow.filled_from = picked

    async def _unsave(self, user_id: int, flow: Flow) -> None:
        async with self._core.gate.acting(user_id, "flow.input", once=False) as act:
            stored = await self._load(act.conn, act.actor)
            if stored is not None and stored.nonce == flow.nonce:
                stored.saving = None
                await self._store(act.conn, act.actor, stored)

    @asynccontextmanager
    async def _step(
        self, user_id: int, nonce: str, step: int, saving: int | None = None
    ) -> AsyncIterator[tuple[AsyncConnection, str, Flow]]:
        """The transaction of one press: the role checked by the gate, then the person's flow at that step
        (a press meant for another flow, step or person finds none: FlowEnded, nothing changes)."""
        async with self._core.gate.acting(user_id, "flow.press", once=False) as act:
            flow = await self._load(act.conn, act.actor)
            if flow is None or flow.nonce != nonce or flow.step != step:
                raise FlowEnded
            if flow.saving is not None and flow.saving != saving:
                raise FlowEnded  # a Save is running (or ran) in another update
            yield act.conn, act.actor, flow

    async def _screen(self, conn: AsyncConnection, flow: Flow, error: str | None = None) -> FlowScreen:
        first = date_picker.today(self._core.clock.now(), self._core.zone)
        current = flow.field
        cases: tuple[Case, ...] = ()
        hearings: tuple[Hearing, ...] = ()
        if current is not None and current.kind == "case":
            cases = tuple(await self._cases.open_cases(conn, CASE_CHOICES))
        if current is not None and current.kind == "hearing":
            since = self._core.clock.now() - HEARING_LOOKBACK
            hearings = tuple(await self._cases.hearings_to_pick(conn, since, HEARING_CHOICES))
        return FlowScreen(flow, first, error, cases, hearings)

    async def _load(self, conn: AsyncConnection, pseudonym: str) -> Flow | None:
        stored = await self._drafts.get(conn, pseudonym, KIND, self._core.clock.now())
        if stored is None:
            return None
        data = self._core.cipher.decrypt_json(
            stored.payload, binding=draft_binding(pseudonym, KIND, stored.nonce)
        )
        flow = data.get("flow")
        if not isinstance(flow, dict) or flow.get("command") not in COMMANDS:
            return None  # written by another version: as good as ended
        known = set(Flow.__dataclass_fields__)
        return Flow(**{k: v for k, v in flow.items() if k in known})

    async def _store(
        self, conn: AsyncConnection, pseudonym: str, flow: Flow, *, create: bool = False
    ) -> None:
        now = self._core.clock.now()
        # The envelope is a report draft's (nonce, kind, chat, no messages to delete): the drafts' purge
        # and /forget handle a flow's row like any other draft's.
        envelope = {"nonce": flow.nonce, "kind": KIND, "chat_id": flow.chat_id, "messages": []}
        payload = self._core.cipher.encrypt_json(
            {**envelope, "flow": asdict(flow)},
            binding=draft_binding(pseudonym, KIND, flow.nonce),
            transient=True,
        )
        expires = now + FLOW_TTL
        if create:
            await self._drafts.put(conn, StoredDraft(pseudonym, flow.nonce, KIND, payload, expires), now)
        elif not await self._drafts.save(conn, pseudonym, flow.nonce, payload, now, expires, kind=KIND):
            raise FlowEnded


def _read(spec: CommandSpec, field_: Field, text: str | None) -> object:
    return None if text is None else parse_field(spec, field_, text)
