"""Open every resource the bot needs, in order, and close them in reverse."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from bot.runtime.audit import Anchoring, AuditLog
from bot.runtime.clock import Clock
from bot.runtime.delivery import Blocked, DeliveryConfig, DeliveryWorker
from bot.runtime.fleet import Fleet, FleetBot
from bot.runtime.fleet_watch import FleetWatch
from bot.runtime.flood import FloodGuard
from bot.runtime.instance import InstanceClaim, claim_instance_id
from bot.runtime.key_exchange import KeyExchange
from bot.runtime.leadership import LEASE_S, RENEW_S, SENDER_LEASE_S, SENDER_RENEW_S, Leadership
from bot.runtime.outbox import Outbox
from bot.runtime.ratelimit import SendLimiter
from bot.runtime.standby import StandbyListener, offset_key
from bot.runtime.telegram_api import TelegramApi
from bot.security import Cipher, DataKey, Pseudonymizer
from bot.security.key_guard import guard_key, read_key, refuse_retired
from bot.security.owner_tags import OwnerTags
from bot.security.transient import TransientKeys
from bot.services.access.backups import BackupService
from bot.services.access.identity import OfficialBots, SafewordService
from bot.services.access.members import MemberService
from bot.services.access.roles import Gate
from bot.services.access.team import TeamService
from bot.services.access.users import UserService
from bot.services.campaigns.broadcast import Broadcaster
from bot.services.campaigns.compose import CampaignService
from bot.services.cases.flows import CommandFlows
from bot.services.cases.hearings import HearingService
from bot.services.contact import QUESTION_KIND, UPDATE_KIND, ContactService
from bot.services.core import Core
from bot.services.desk.browse import DeskService
from bot.services.desk.export import ExportService
from bot.services.desk.export import sweep as sweep_exports
from bot.services.desk.stats import StatsService
from bot.services.reports.evidence import EvidenceStore, evidence_limits
from bot.services.reports.intake import Limits, ReporterCodes, ReportService
from bot.services.reports.seal import reseal_legacy_bodies
from bot.services.triage.actions import TriageService
from bot.services.triage.alerts import ALERT_KINDS, CARD_KIND, AlertService
from bot.services.triage.duty import DutyService
from bot.services.triage.planner import AlertPlanner
from bot.services.triage.watch import AlertWatch
from bot.services.upkeep.history import HistoryScrubber
from bot.services.upkeep.retention import Retention
from bot.settings import Settings
from messages import catalogs
from storage import migrations
from storage.alert_copies import AlertCopyRepository, DutyRepository
from storage.audit import AuditRepository
from storage.campaigns import CampaignRepository
from storage.cases import CaseRepository
from storage.channels import ChannelRepository
from storage.database import Database
from storage.drafts import DraftRepository
from storage.inbox import InboxRepository
from storage.leases import LeaseRepository, PassLocks
from storage.members import MemberRepository
from storage.outbox import OutboxRepository
from storage.reach import ReachRepository
from storage.report_queries import ReportQueries
from storage.reports import ActionRepository, ReportRepository
from storage.state import COORDINATOR_CHAT, StateRepository
from storage.team import TeamRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)

TRANSIENT_KEYS_FILE = "transient.keys"


@dataclass
class Services:
    """The application's resources and domain services, built once per process."""

    settings: Settings
    clock: Clock
    db: Database
    key: DataKey
    cipher: Cipher
    pseudonyms: Pseudonymizer
    api: TelegramApi
    limiter: SendLimiter
    users: UserService
    outbox: Outbox
    outbox_repo: OutboxRepository
    inbox_repo: InboxRepository
    delivery: DeliveryWorker
    retention: Retention
    alerts: AlertService
    reports: ReportService
    hearings: HearingService
    flows: CommandFlows
    flood: FloodGuard
    audit: AuditLog
    gate: Gate
    team: TeamService
    contact: ContactService
    triage: TriageService
    desk: DeskService
    exports: ExportService
    stats: StatsService
    campaigns: CampaignService
    broadcaster: Broadcaster
    planner: AlertPlanner
    watch: AlertWatch
    duty: DutyService
    instance: InstanceClaim
    history: HistoryScrubber
    members: MemberService
    safewords: SafewordService
    official: OfficialBots
    # Several instances on one PostgreSQL: who polls Telegram, and who sends the outbox (and plans the
    # coordinators' budget). On SQLite there is one instance, always both.
    poller: Leadership
    sender: Leadership
    passes: PassLocks
    # The main bot and its backups: which is in use, who can be reached by which, the switch.
    fleet: Fleet
    backups: BackupService
    fleet_watch: FleetWatch
    standby: tuple[StandbyListener, ...]
    exchange: KeyExchange | None = None  # lends transient keys to the other instances (PostgreSQL)

    async def close(self) -> None:
        """Release the HTTP pools, the database and the instance name."""
        await self.fleet.close()
        await self.api.close()
        await self.history.close()
        await self.passes.close()
        await self.db.close()
        self.instance.release()


def load_key(settings: Settings) -> DataKey:
    """Read the data key (never create one); prefer `guard_key`, which also checks it against the database."""
    return read_key(settings)


async def open_services(
    settings: Settings, clock: Clock, limiter: SendLimiter, *, create_key: bool = True
) -> Services:
    """Check the key against the database, migrate it, and build the services.

    The key guard runs first and only reads: a wrong or missing key stops here, before a migration or a
    service could mark, rewrite or delete a row it cannot decrypt. `create_key`: an empty database may get
    a new key (`jarchy run`); other commands pass False.
    """
    refuse_retired(settings)  # before the engine is made: closing it would create an empty file
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        grant = await guard_key(settings, db, create=create_key)
        await migrations.upgrade(db)
        await grant.settle(db)
    except BaseException:
        await db.close()
        raise
    key = grant.key
    cipher = Cipher(key, TransientKeys(settings.data_dir / TRANSIENT_KEYS_FILE, key))
    pseudonyms = Pseudonymizer(key)
    instance = claim_instance_id(settings.data_dir, settings.instance_id)
    # Only PostgreSQL is shared by several instances; one SQLite file has one bot.
    exchange = (
        KeyExchange(db=db, cipher=cipher, instance=instance.name, clock=clock) if db.is_postgresql else None
    )
    history = HistoryScrubber(db, cipher, peers=exchange)
    if exchange is not None:
        exchange.on_scrub_elsewhere(history.follow)
    await reseal_legacy_bodies(db, cipher)
    api = TelegramApi(
        settings.api_url,
        settings.bot_token,
        connections=settings.outbox_concurrency + 2,
        proxy_url=settings.proxy_url,
    )
    fleet = Fleet(settings, api, connections=2)
    outbox_repo, user_repo = OutboxRepository(), UserRepository()
    inbox_repo = InboxRepository(offset_key(fleet.active))
    lease_repo = LeaseRepository()
    poller, sender = (
        Leadership(
            db=db,
            repo=lease_repo,
            clock=clock,
            name=name,
            holder=instance.name,
            lease_s=lease_s,
            renew_s=renew_s,
            always=not db.is_postgresql,
        )
        for name, lease_s, renew_s in (
            ("poller", LEASE_S, RENEW_S),
            ("sender", SENDER_LEASE_S, SENDER_RENEW_S),
        )
    )
    delivery = DeliveryWorker(
        leader=sender if db.is_postgresql else None,
        instance=instance.name,
        db=db,
        outbox=outbox_repo,
        users=user_repo,
        api=api,
        cipher=cipher,
        limiter=limiter,
        clock=clock,
        config=DeliveryConfig(
            concurrency=settings.outbox_concurrency,
            lease_s=settings.outbox_lease_s,
            max_attempts=settings.outbox_max_attempts,
            paid_broadcast=settings.paid_broadcast,
            peers_lend_keys=exchange is not None,
        ),
    )
    outbox = Outbox(
        outbox_repo, cipher, pseudonyms, clock, on_enqueued=delivery.wake, on_withdrawn=delivery.withdraw
    )
    report_repo = ReportRepository()
    duty_repo, copies_repo = DutyRepository(), AlertCopyRepository()
    state = StateRepository()
    audit_repo = AuditRepository()
    anchoring = Anchoring(outbox, catalogs(), settings.default_language, settings.admin_ids)
    audit = AuditLog(db, audit_repo, state, key, clock, anchoring)
    gate = Gate(db, user_repo, pseudonyms, audit, clock, outbox)
    core = Core(settings, clock, db, cipher, pseudonyms, outbox, audit, gate, catalogs())
    safewords = SafewordService(core, repo=user_repo)
    alerts = AlertService(
        core,
        duty=duty_repo,
        sos_reserve=settings.alert_sos_reserve,
        digest_reserve=settings.alert_digest_reserve,
        state=state,
        reports=report_repo,
        users=user_repo,
        configured_chat=settings.coordinator_chat_id,
        admin_ids=settings.admin_ids,
    )
    team_repo = TeamRepository()
    members = MemberService(
        core,
        repo=MemberRepository(),
        users=user_repo,
        team=team_repo,
        alerts=alerts,
        state=state,
        api=api,
        admin_ids=settings.admin_ids,
        bot_id=fleet.active.bot_id,
        remove_strangers=settings.remove_strangers,
    )
    contact = ContactService(
        core,
        reports=report_repo,
        actions=ActionRepository(),
        users=user_repo,
        alerts=alerts,
        codes=ReporterCodes(key),
        phone_keep=timedelta(hours=settings.phone_keep_hours),
        safewords=safewords,
    )
    hearings = HearingService(
        core,
        cases=CaseRepository(),
        state=state,
        users=user_repo,
        safewords=safewords,
        interval=timedelta(seconds=settings.reminder_interval_s),
    )
    campaign_repo = CampaignRepository()
    campaigns = CampaignService(
        core,
        repo=campaign_repo,
        users=user_repo,
        outbox_repo=outbox_repo,
        hearings=hearings,
        four_eyes=settings.four_eyes,
        approval_reach=settings.approval_reach,
        approval_window=timedelta(hours=settings.approval_window_h),
    )
    team = TeamService(
        core,
        repo=team_repo,
        users=user_repo,
        audit_repo=audit_repo,
        reports=report_repo,
        invite_ttl=timedelta(hours=settings.invite_ttl_h),
        settings_admins=settings.admin_ids,
        duty=duty_repo,
        copies=copies_repo,
        members=members,
        campaigns=campaigns,
        contact=contact,
    )
    # One store for every service: its download slots and quotas are per process, not per service.
    evidence = EvidenceStore(
        settings.data_dir / "evidence",
        key,
        cipher=cipher,
        limits=evidence_limits(settings),
        # Staged rows name their owner: sealed transiently, rewritten by each scrub
        # (bot.services.upkeep.history).
        transient_staging=True,
    )
    triage = TriageService(
        core,
        reports=report_repo,
        users=user_repo,
        team=team,
        alerts=alerts,
        contact=contact,
        reporter_updates=settings.reporter_updates,
        copies=copies_repo,
        evidence=evidence,
    )
    delivery.on_sent(CARD_KIND, triage.card_sent)
    drafts = DraftRepository(OwnerTags(cipher))
    reports = ReportService(
        core,
        drafts=drafts,
        reports=report_repo,
        actions=ActionRepository(),
        users=user_repo,
        alerts=alerts,
        evidence=evidence,
        limits=Limits(
            draft_ttl=timedelta(hours=settings.draft_ttl_h),
            reports_per_hour=settings.reports_per_hour,
            sos_per_minute=settings.sos_per_minute,
            sos_escalate_after=timedelta(minutes=settings.sos_escalate_after_min),
            phone_keep=timedelta(hours=settings.phone_keep_hours),
        ),
        codes=ReporterCodes(key),
        cards=triage,
        on_anonymous=history.request,
    )
    delivery.on_sent(QUESTION_KIND, contact.question_sent)
    # A status update's message id is known once it is sent: its deletion from the phone is queued then.
    delivery.on_sent(UPDATE_KIND, contact.update_sent)
    queries = ReportQueries()
    desk = DeskService(
        core, reports=report_repo, queries=queries, team=team, team_repo=team_repo, evidence=evidence
    )
    exports = ExportService(core, queries=queries, team=team, evidence=evidence)
    stats = StatsService(core, queries=queries)
    flows = CommandFlows(core, drafts=drafts, cases=CaseRepository(), hearings=hearings)
    broadcaster = Broadcaster(
        core, repo=campaign_repo, outbox_repo=outbox_repo, users=user_repo, safewords=safewords
    )
    watch = AlertWatch(core, alerts=alerts, outbox_repo=outbox_repo, state=state)
    planner = AlertPlanner(
        core,
        alerts=alerts,
        outbox_repo=outbox_repo,
        reports=report_repo,
        limiter=limiter,
        sos_reserve=settings.alert_sos_reserve,
        digest_reserve=settings.alert_digest_reserve,
    )
    duty = DutyService(
        core,
        duty=duty_repo,
        reports=report_repo,
        alerts=alerts,
        triage=triage,
        admin_ids=settings.admin_ids,
        escalate_after=timedelta(minutes=settings.sos_escalate_after_min),
        escalate_cap=timedelta(minutes=settings.sos_escalate_cap_min),
    )
    # An alert is never final until the coordinators' chat has it; SOS keep room in its window.
    delivery.protect(alerts.protects)
    delivery.reserve(alerts.headroom)
    delivery.on_wake(planner.wake)
    delivery.on_resend(CARD_KIND, alerts.mark_repeat)
    delivery.on_failed(watch.failed)
    for kind in ALERT_KINDS:
        delivery.on_sent(kind, watch.delivered)
    backups = BackupService(
        core,
        fleet=fleet,
        repo=ReachRepository(),
        users=user_repo,
        state=state,
        channels=ChannelRepository(),
        outbox_repo=outbox_repo,
        alerts=alerts,
        campaigns=campaign_repo,
        on_reached=delivery.reached,
    )

    def refused(api: TelegramApi) -> None:
        if fleet.refuse(api) is not None:
            fleet_watch.refused()

    recording: set[asyncio.Task[None]] = set()

    def blocked(api: TelegramApi, chat_key: str) -> Blocked:
        bot = fleet.bot_of(api)
        if bot is None or (bot.main and fleet.active.main):
            return "person"  # as without backups: the person blocked the bot, they are inactive
        if bot.main:
            return "row"  # they blocked the main bot; the backup in use may still reach them
        task = asyncio.get_running_loop().create_task(backups.blocked(bot.bot_id, chat_key))
        recording.add(task)
        task.add_done_callback(recording.discard)
        return "wait"

    def bot_of(api: TelegramApi) -> int | None:
        bot = fleet.bot_of(api)
        return bot.bot_id if bot is not None else None

    if fleet.enabled:
        # Without a backup nothing of this is wired: rows, receipts and refusals are as they always were.
        delivery.route_by(backups.route, refused, blocked, bot_of)
        outbox.bot_id, outbox.main_bot_id = fleet.active.bot_id, fleet.main.bot_id

    async def switch(bot: FleetBot, reason: str) -> bool:
        actor = "cli" if reason == "cli" else "system"
        return (await backups.switch(bot, actor=actor, reason=reason)).changed

    async def in_use() -> int:
        async with db.read() as conn:
            return await backups.in_use(conn)

    fleet_watch = FleetWatch(
        fleet=fleet,
        db=db,
        state=state,
        clock=clock,
        switch_after=timedelta(minutes=settings.switch_after_min) if settings.switch_after_min > 0 else None,
        switch=switch,
        in_use=in_use,
        check_every_s=settings.fleet_check_s,
    )
    standby = tuple(
        StandbyListener(
            fleet=fleet,
            bot=bot,
            db=db,
            state=state,
            clock=clock,
            started=backups.standby_started,
            left=backups.left,
            polling_timeout_s=settings.polling_timeout_s,
        )
        for bot in fleet.standby()
    )
    services = Services(
        settings=settings,
        clock=clock,
        db=db,
        key=key,
        cipher=cipher,
        pseudonyms=pseudonyms,
        api=api,
        limiter=limiter,
        users=UserService(core, repo=user_repo),
        outbox=outbox,
        outbox_repo=outbox_repo,
        inbox_repo=inbox_repo,
        delivery=delivery,
        retention=Retention(db, inbox_repo, clock, reports, outbox_repo, history),
        alerts=alerts,
        reports=reports,
        flood=FloodGuard(clock, settings.flood_per_minute),
        audit=audit,
        gate=gate,
        team=team,
        contact=contact,
        triage=triage,
        desk=desk,
        exports=exports,
        stats=stats,
        hearings=hearings,
        flows=flows,
        campaigns=campaigns,
        broadcaster=broadcaster,
        planner=planner,
        watch=watch,
        duty=duty,
        instance=instance,
        history=history,
        exchange=exchange,
        members=members,
        safewords=safewords,
        official=OfficialBots(settings.official_bots, fleet=fleet.usernames),
        poller=poller,
        sender=sender,
        passes=PassLocks(db),
        fleet=fleet,
        backups=backups,
        fleet_watch=fleet_watch,
        standby=standby,
    )
    # Export files a crash left behind hold decrypted reports.
    sweep_exports(settings.data_dir / "exports")
    # Partial evidence files a crash left behind, and rows kept before evidence was bound (once).
    evidence.sweep_partial()
    await evidence.bind_legacy(db)
    async with core.unit_of_work() as uow:
        if await audit_repo.last(uow.conn) is None:
            # The chain's first entry: a wiped log then shows as empty, which a started bot never is.
            await audit.record(uow.conn, "system", "audit.start")
        await uow.commit()
    removed = await services.users.bootstrap_admins(settings.admin_ids, on_removed=team.admin_removed)
    await members.capture_admins(settings.admin_ids)
    if removed:
        async with core.unit_of_work() as uow:
            await audit.anchor(uow.conn)  # a role change: the admins who remain get the head
            await uow.commit()
    if settings.coordinator_chat_id is not None:
        async with db.read() as conn:
            bound = await state.get(conn, COORDINATOR_CHAT)
        if bound is not None and int(bound) != settings.coordinator_chat_id:
            # Since #12 the setting pins the chat; before, a /bind elsewhere overrode it.
            log.warning(
                "alerts go to JARCHY_COORDINATOR_CHAT_ID; the chat bound earlier with /bind is no longer used"
            )
    if fleet.enabled:
        async with db.read() as conn:
            await fleet.load_refused(conn, state)
        # Rows that waited for a refused token (the last run's bot, or a switch the last run made while
        # its sends were still answered 401) are tried at once by the bot in use now.
        async with core.unit_of_work() as uow:
            await outbox_repo.due_now_after_switch(uow.conn, clock.now())
            await uow.commit()
    # Alerts held while no coordinators' chat was known go out once one is configured.
    await services.alerts.release_held()
    return services


def build_limiter(settings: Settings, clock: Clock) -> SendLimiter:
    """Build the one send limiter from the settings (paid broadcasts lift the overall cap to 1,000/s)."""
    overall = (
        max(settings.rate_global_per_s, 1000.0) if settings.paid_broadcast else settings.rate_global_per_s
    )
    return SendLimiter(
        clock,
        global_per_s=overall,
        private_per_s=settings.rate_private_per_s,
        group_per_min=settings.rate_group_per_min,
    )
