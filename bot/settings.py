"""One frozen Settings object, read once from JARCHY_* environment variables and an optional .env file."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain.languages import LANGUAGES

DEFAULT_API_URL = "https://api.telegram.org"
PROXY_SCHEMES = ("http", "https", "socks5")
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{10,100}$")
_T = TypeVar("_T")
# Triage changes a reporter may be told about: when their report is taken up, and when it is closed.
REPORTER_UPDATES = ("taken", "closed")
# The one value of JARCHY_KEY_BESIDE_DATA that lets `jarchy run` use a key kept inside the data directory.
KEY_BESIDE_DATA_CONSENT = "i-accept-that-a-seized-disk-reveals-everything"
# The name a key has as a systemd credential ($CREDENTIALS_DIRECTORY) or a docker secret (/run/secrets).
KEY_CREDENTIAL = "jarchy_key"
# Telegram lets a bot delete a message only within 48 hours of sending it; an hour is left for a deletion
# that waits behind a restart or a 429.
PHONE_KEEP_MAX_H = 47.0


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable and the fix."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        super().__init__(f"{variable}: {problem}. {fix}")
        self.variable = variable


class SecretStr:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """Return the secret itself; only for the code that must use it."""
        return self._value

    def masked(self) -> str:
        """Return a hint that identifies the secret without revealing it."""
        if not self._value:
            return "(empty)"
        return "*" * 8

    def __repr__(self) -> str:
        return "SecretStr('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything jarchy runs with; build it with `Settings.from_env()` or directly in tests."""

    bot_token: SecretStr
    data_dir: Path = Path("data")
    database_url: str = field(default="", repr=False)  # may carry a password
    api_url: str = DEFAULT_API_URL
    # Every connection to the Bot API goes through this proxy (http, https or socks5, with credentials).
    proxy_url: SecretStr | None = None
    # The Bot API server at api_url is a self-hosted telegram-bot-api started with --local: getFile answers
    # with a path on this machine's disk, and files over the public Bot API's 20 MB can be downloaded.
    api_local_mode: bool = False
    # A Telegram proxy link the organisation gives its people (tg://proxy?…, https://t.me/proxy?…, or the
    # socks forms), shown in /help's section on staying reachable where Telegram is blocked.
    proxy_link: str = ""
    admin_ids: frozenset[int] = frozenset()
    coordinator_chat_id: int | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Bishkek"))
    default_language: str = "en"
    key_file: Path | None = None
    # A key inside the data directory is refused by `jarchy run` unless JARCHY_KEY_BESIDE_DATA consents.
    key_beside_data: bool = False
    key_passphrase_file: Path | None = None
    # Where else the key is looked for: a systemd credential, a docker secret, the user's config directory.
    credentials_dir: Path | None = None
    secrets_dir: Path = Path("/run/secrets")
    config_dir: Path | None = None
    log_level: str = "INFO"
    event_loop: str = "auto"  # "auto": uvloop where it is installed; "asyncio": the standard loop
    # Telegram's documented limits; the delivery worker never exceeds them in any window.
    rate_global_per_s: float = 30.0
    rate_private_per_s: float = 1.0
    rate_group_per_min: float = 20.0
    paid_broadcast: bool = False
    outbox_concurrency: int = 4
    outbox_lease_s: float = 60.0
    outbox_max_attempts: int = 20
    inbox_max_attempts: int = 5
    polling_timeout_s: int = 30
    # While Telegram cannot be reached at start, getMe is tried again after 1 s, doubling up to this.
    start_retry_max_s: float = 60.0
    db_busy_timeout_ms: int = 5000
    draft_ttl_h: float = 24.0
    reports_per_hour: int = 5
    sos_per_minute: int = 1
    reminder_interval_s: float = 30.0
    flood_per_minute: int = 40
    invite_ttl_h: float = 24.0
    # How long the reporter's phone keeps the receipt, status updates, SOS screens and /myreports answers.
    # A day: long enough to read them on the next look at the phone, short enough that a phone seized the
    # day after shows nothing; at most PHONE_KEEP_MAX_H, or Telegram no longer lets the bot delete them.
    phone_keep_hours: float = 24.0
    # Which triage changes a contactable reporter hears about (neutral texts in messages/).
    reporter_updates: frozenset[str] = frozenset(REPORTER_UPDATES)
    # "auto": a broadcast to all subscribers needs a second person's approval once there are two admins.
    four_eyes: str = "auto"
    # A campaign, or one person's campaigns within approval_window_h, reaching more than this many people
    # needs a second person's approval (whatever the audience: per-language campaigns add up).
    approval_reach: int = 50
    approval_window_h: float = 24.0
    # The coordinators' group: how often its members are compared with the roles, and whether members
    # who hold no role are removed (not only reported to the admins).
    member_check_min: float = 60.0
    remove_strangers: bool = False
    broadcast_interval_s: float = 2.0
    # The coordinators' group's budget (rate_group_per_min, edits included) keeps slots no report card
    # may take: for SOS cards, and for digests that list many reports in one message.
    alert_sos_reserve: int = 8
    alert_digest_reserve: int = 6
    # An SOS nobody acknowledges is escalated after this long, then at doubling intervals up to the cap.
    sos_escalate_after_min: float = 5.0
    sos_escalate_cap_min: float = 30.0
    # Evidence bounds. Per person: files staged for drafts not yet submitted (five 20 MB videos, or a full
    # draft of phone photos); one person cannot park the disk. Overall: every file kept or staged, the
    # organisation's budget (raise it with the disk). Floor: uploads stop while less than this is free (plus
    # the SQLite files' own size, which VACUUM or a migration needs again), so the database, and with it
    # every SOS and text report, still has room.
    evidence_per_person_mb: int = 100
    evidence_total_mb: int = 10240
    disk_floor_mb: int = 1024
    # Files downloaded from Telegram at once (each person one at a time); bounds memory and bandwidth.
    evidence_downloads: int = 3
    # Names this instance's outbox leases; default: a random id kept in the data directory.
    instance_id: str | None = None
    # Webhook mode (`jarchy serve`): the public URL Telegram posts updates to, the address the bot's web
    # server listens on behind the reverse proxy, and the secret Telegram sends with every request
    # (default: derived from the data key, the same for every instance that shares the key).
    webhook_url: str = ""
    webhook_listen: tuple[str, int] = ("127.0.0.1", 8080)
    webhook_secret: SecretStr | None = None
    # Where /metrics is served (Prometheus's text format); off unless set. Keep it off the public internet.
    metrics_listen: tuple[str, int] | None = None
    # The organisation's other official bots (backup bots), as usernames; /verify and `jarchy
    # verify-statement` name them beside the running bot's own username.
    official_bots: tuple[str, ...] = ()
    # The Ed25519 key that signs the statement of official bots; default: the user's config directory.
    signing_key_file: Path | None = None
    # Backup bots (their tokens, in the order a switch tries them): they run beside the main bot over the
    # same database and keys, so people can press Start in them before they are needed (bot.runtime.fleet).
    backup_bot_tokens: tuple[SecretStr, ...] = ()
    # The bot in use has answered only 401/404 (revoked, deleted, banned) for this long: switch to a
    # backup that answers. 0: never by itself, only with `jarchy bot switch` or an admin's button.
    switch_after_min: float = 10.0
    # How often every bot is asked getMe (whether it answers, and its username).
    fleet_check_s: float = 30.0
    # Set by the runner when a backup is in use (bot.runtime.fleet.running_settings): bot_token is then
    # that backup's, and JARCHY_BOT_TOKEN's bot, the main one, is first among the backups.
    main_bot_id: int | None = None

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{self.data_dir / 'jarchy.db'}")

    @property
    def resolved_signing_key_file(self) -> Path | None:
        """Return where the statement signing key is (or would be created), or None if nowhere is known."""
        if self.signing_key_file is not None:
            return self.signing_key_file
        if self.config_dir is not None:
            return self.config_dir / "jarchy" / "statement-signing.key"
        return None

    @property
    def resolved_key_file(self) -> Path:
        """Return where the data key is (or would be created): see `key_location`."""
        return self.key_location.path

    @property
    def key_location(self) -> KeyLocation:
        """Find the data key: JARCHY_KEY_FILE, a credential, a docker secret, the old place in the data
        directory (refused by `run` unless consented to), else the user's configuration directory."""
        candidates: list[tuple[Path, str]] = []
        if self.credentials_dir is not None:
            candidates.append((self.credentials_dir / KEY_CREDENTIAL, "systemd credential"))
        candidates += [
            (self.secrets_dir / KEY_CREDENTIAL, "docker secret"),
            (self.data_dir / "jarchy.key", "data directory"),
        ]
        if self.key_file is not None:
            found = (self.key_file, "JARCHY_KEY_FILE")
        else:
            found = next(((p, s) for p, s in candidates if p.is_file()), (self.default_key_file, "default"))
        managed = found[0].parent in {self.secrets_dir, self.credentials_dir}
        return KeyLocation(found[0], found[1], managed)

    @property
    def default_key_file(self) -> Path:
        """Return where a first start puts the key: the user's configuration directory, not the data's."""
        if self.config_dir is not None:
            return self.config_dir / "jarchy" / "jarchy.key"
        try:
            home = Path.home()
        except RuntimeError:  # no HOME and no passwd entry (an arbitrary container uid)
            home = Path("/")
        return home / ".config" / "jarchy" / "jarchy.key"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: Path | None = None,
        require_token: bool = True,
    ) -> Settings:
        """Read settings from the environment (which wins) and an optional .env file."""
        env = dict(read_env_file(env_file or Path(".env")))
        env.update(os.environ if environ is None else environ)
        return cls._parse(env, require_token=require_token)

    @classmethod
    def _parse(cls, env: Mapping[str, str], *, require_token: bool) -> Settings:
        token = env.get("JARCHY_BOT_TOKEN", "").strip()
        if not token and require_token:
            raise SettingsError(
                "JARCHY_BOT_TOKEN",
                "is not set",
                "Create a bot with @BotFather in Telegram (/newbot) and set the token it gives you.",
            )
        if token and not _TOKEN_RE.match(token):
            raise SettingsError(
                "JARCHY_BOT_TOKEN",
                "does not look like a bot token",
                "It has the form 123456789:AA…; copy it again from @BotFather (/token).",
            )
        data_dir = Path(env.get("JARCHY_DATA_DIR", "data") or "data")
        api_url = env.get("JARCHY_API_URL", DEFAULT_API_URL).strip().rstrip("/") or DEFAULT_API_URL
        if not re.match(r"^https?://[^/\s]+", api_url):
            raise SettingsError(
                "JARCHY_API_URL", "is not an http(s) URL", f"Use the root, e.g. {DEFAULT_API_URL}."
            )
        database_url = env.get("JARCHY_DATABASE_URL", "").strip()
        if database_url and "://" not in database_url:
            raise SettingsError(
                "JARCHY_DATABASE_URL",
                "is not a database URL",
                "Use e.g. sqlite+aiosqlite:///data/jarchy.db, or leave it unset for the default.",
            )
        default_language = env.get("JARCHY_DEFAULT_LANGUAGE", "en").strip().lower() or "en"
        if default_language not in LANGUAGES:
            raise SettingsError(
                "JARCHY_DEFAULT_LANGUAGE",
                f"'{default_language}' is not supported",
                f"Use one of {', '.join(LANGUAGES)}.",
            )
        tz_name = env.get("JARCHY_TIMEZONE", "Asia/Bishkek").strip() or "Asia/Bishkek"
        try:
            timezone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                "JARCHY_TIMEZONE",
                f"'{tz_name}' is not a known time zone",
                "Use an IANA name such as Asia/Bishkek.",
            ) from None
        key_file = env.get("JARCHY_KEY_FILE", "").strip()
        passphrase_file = env.get("JARCHY_KEY_PASSPHRASE_FILE", "").strip()
        credentials = env.get("CREDENTIALS_DIRECTORY", "").strip()
        log_level = env.get("JARCHY_LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(
                "JARCHY_LOG_LEVEL", f"'{log_level}' is not a level", "Use DEBUG, INFO, WARNING or ERROR."
            )
        event_loop = env.get("JARCHY_EVENT_LOOP", "auto").strip().lower() or "auto"
        if event_loop not in {"auto", "asyncio"}:
            raise SettingsError(
                "JARCHY_EVENT_LOOP", f"'{event_loop}' is not an event loop", "Use auto or asyncio."
            )
        settings = cls(
            bot_token=SecretStr(token),
            data_dir=data_dir,
            database_url=database_url,
            api_url=api_url,
            proxy_url=_proxy_url(env),
            api_local_mode=_flag(env, "JARCHY_API_LOCAL_MODE"),
            proxy_link=_proxy_link(env),
            admin_ids=_ids(env, "JARCHY_ADMIN_IDS"),
            coordinator_chat_id=_optional(
                env, "JARCHY_COORDINATOR_CHAT_ID", int, "a whole number such as -1001234567890"
            ),
            timezone=timezone,
            default_language=default_language,
            key_file=Path(key_file) if key_file else None,
            key_beside_data=_key_beside_data(env),
            key_passphrase_file=Path(passphrase_file) if passphrase_file else None,
            credentials_dir=Path(credentials) if credentials else None,
            config_dir=_config_dir(env),
            log_level=log_level,
            event_loop=event_loop,
            rate_global_per_s=_number(env, "JARCHY_RATE_GLOBAL_PER_S", 30.0, float, minimum=0),
            rate_private_per_s=_number(env, "JARCHY_RATE_PRIVATE_PER_S", 1.0, float, minimum=0),
            rate_group_per_min=_number(env, "JARCHY_RATE_GROUP_PER_MIN", 20.0, float, minimum=0),
            paid_broadcast=_flag(env, "JARCHY_PAID_BROADCAST"),
            outbox_concurrency=_number(env, "JARCHY_OUTBOX_CONCURRENCY", 4, int, minimum=1),
            outbox_lease_s=_number(env, "JARCHY_OUTBOX_LEASE_S", 60.0, float, minimum=5),
            outbox_max_attempts=_number(env, "JARCHY_OUTBOX_MAX_ATTEMPTS", 20, int, minimum=1),
            polling_timeout_s=_number(env, "JARCHY_POLLING_TIMEOUT_S", 30, int, minimum=0),
            start_retry_max_s=_number(env, "JARCHY_START_RETRY_MAX_S", 60.0, float, minimum=1),
            db_busy_timeout_ms=_number(env, "JARCHY_DB_BUSY_TIMEOUT_MS", 5000, int, minimum=0),
            draft_ttl_h=_number(env, "JARCHY_DRAFT_TTL_H", 24.0, float, minimum=0.1),
            reports_per_hour=_number(env, "JARCHY_REPORTS_PER_HOUR", 5, int, minimum=1),
            sos_per_minute=_number(env, "JARCHY_SOS_PER_MINUTE", 1, int, minimum=1),
            reminder_interval_s=_number(env, "JARCHY_REMINDER_INTERVAL_S", 30.0, float, minimum=0.5),
            flood_per_minute=_number(env, "JARCHY_FLOOD_PER_MINUTE", 40, int, minimum=5),
            invite_ttl_h=_number(env, "JARCHY_INVITE_TTL_H", 24.0, float, minimum=0.1),
            phone_keep_hours=_phone_keep_hours(env),
            reporter_updates=_choices(env, "JARCHY_REPORTER_UPDATES", REPORTER_UPDATES),
            four_eyes=_one_of(env, "JARCHY_FOUR_EYES", ("auto", "on", "off"), "auto"),
            approval_reach=_number(env, "JARCHY_APPROVAL_REACH", 50, int, minimum=0),
            approval_window_h=_number(env, "JARCHY_APPROVAL_WINDOW_H", 24.0, float, minimum=0),
            member_check_min=_number(env, "JARCHY_MEMBER_CHECK_MIN", 60.0, float, minimum=1),
            remove_strangers=_flag(env, "JARCHY_REMOVE_STRANGERS"),
            broadcast_interval_s=_number(env, "JARCHY_BROADCAST_INTERVAL_S", 2.0, float, minimum=0.2),
            alert_sos_reserve=_number(env, "JARCHY_ALERT_SOS_RESERVE", 8, int, minimum=0),
            alert_digest_reserve=_number(env, "JARCHY_ALERT_DIGEST_RESERVE", 6, int, minimum=1),
            sos_escalate_after_min=_number(env, "JARCHY_SOS_ESCALATE_AFTER_MIN", 5.0, float, minimum=0.1),
            sos_escalate_cap_min=_number(env, "JARCHY_SOS_ESCALATE_CAP_MIN", 30.0, float, minimum=0.1),
            evidence_per_person_mb=_number(env, "JARCHY_EVIDENCE_PER_PERSON_MB", 100, int, minimum=1),
            evidence_total_mb=_number(env, "JARCHY_EVIDENCE_TOTAL_MB", 10240, int, minimum=1),
            disk_floor_mb=_number(env, "JARCHY_DISK_FLOOR_MB", 1024, int, minimum=0),
            evidence_downloads=_number(env, "JARCHY_EVIDENCE_DOWNLOADS", 3, int, minimum=1),
            instance_id=_instance_id(env),
            webhook_url=_webhook_url(env),
            webhook_listen=_listen(env, "JARCHY_WEBHOOK_LISTEN") or ("127.0.0.1", 8080),
            metrics_listen=_listen(env, "JARCHY_METRICS_LISTEN"),
            webhook_secret=_webhook_secret(env),
            official_bots=_usernames(env, "JARCHY_OFFICIAL_BOTS"),
            signing_key_file=_path(env, "JARCHY_SIGNING_KEY_FILE"),
            backup_bot_tokens=_backup_tokens(env, token),
            switch_after_min=_number(env, "JARCHY_SWITCH_AFTER_MIN", 10.0, float, minimum=0),
            fleet_check_s=_number(env, "JARCHY_FLEET_CHECK_S", 30.0, float, minimum=0.1),
        )
        if settings.api_local_mode and api_url == DEFAULT_API_URL:
            raise SettingsError(
                "JARCHY_API_LOCAL_MODE",
                f"is true, but JARCHY_API_URL is Telegram's own {DEFAULT_API_URL}, which has no local mode",
                "Set JARCHY_API_URL to your telegram-bot-api --local server, e.g. http://127.0.0.1:8081.",
            )
        reserved = settings.alert_sos_reserve + settings.alert_digest_reserve
        if 0 < settings.rate_group_per_min <= reserved:
            raise SettingsError(
                "JARCHY_ALERT_SOS_RESERVE",
                f"and JARCHY_ALERT_DIGEST_RESERVE together ({reserved}) leave no slot of the group's "
                f"{settings.rate_group_per_min:g} a minute for report cards",
                "Keep their sum below JARCHY_RATE_GROUP_PER_MIN (defaults: 8 + 6 of 20).",
            )
        return settings

    def describe(self) -> list[tuple[str, str]]:
        """Return what the bot would run with, as (name, value) pairs with secrets masked."""
        return [
            ("JARCHY_BOT_TOKEN", self.bot_token.masked()),
            ("JARCHY_API_URL", self.api_url),
            ("JARCHY_API_LOCAL_MODE", str(self.api_local_mode).lower()),
            (
                "JARCHY_PROXY_URL",
                _mask_url(self.proxy_url.get_secret_value()) if self.proxy_url else "not set (direct)",
            ),
            # Not printed: its MTProto secret is for the people it is given to, not for a log.
            ("JARCHY_PROXY_LINK", "set" if self.proxy_link else "not set"),
            ("JARCHY_DATA_DIR", str(self.data_dir)),
            ("JARCHY_DATABASE_URL", _mask_url(self.database_url)),
            ("JARCHY_KEY_FILE", f"{self.key_location.path} ({self.key_location.source})"),
            ("JARCHY_KEY_BESIDE_DATA", "consented" if self.key_beside_data else "not set"),
            ("JARCHY_KEY_PASSPHRASE_FILE", str(self.key_passphrase_file or "not set")),
            ("JARCHY_ADMIN_IDS", f"{len(self.admin_ids)} configured"),
            ("JARCHY_COORDINATOR_CHAT_ID", "set" if self.coordinator_chat_id is not None else "not set"),
            ("JARCHY_TIMEZONE", str(self.timezone)),
            ("JARCHY_DEFAULT_LANGUAGE", self.default_language),
            ("JARCHY_RATE_GLOBAL_PER_S", f"{self.rate_global_per_s:g}"),
            ("JARCHY_RATE_PRIVATE_PER_S", f"{self.rate_private_per_s:g}"),
            ("JARCHY_RATE_GROUP_PER_MIN", f"{self.rate_group_per_min:g}"),
            ("JARCHY_PAID_BROADCAST", str(self.paid_broadcast).lower()),
            ("JARCHY_OUTBOX_CONCURRENCY", str(self.outbox_concurrency)),
            ("JARCHY_DRAFT_TTL_H", f"{self.draft_ttl_h:g}"),
            ("JARCHY_REPORTS_PER_HOUR", str(self.reports_per_hour)),
            ("JARCHY_SOS_PER_MINUTE", str(self.sos_per_minute)),
            ("JARCHY_INVITE_TTL_H", f"{self.invite_ttl_h:g}"),
            ("JARCHY_PHONE_KEEP_HOURS", f"{self.phone_keep_hours:g}"),
            ("JARCHY_REPORTER_UPDATES", ",".join(sorted(self.reporter_updates)) or "none"),
            ("JARCHY_FOUR_EYES", self.four_eyes),
            ("JARCHY_APPROVAL_REACH", str(self.approval_reach)),
            ("JARCHY_APPROVAL_WINDOW_H", f"{self.approval_window_h:g}"),
            ("JARCHY_MEMBER_CHECK_MIN", f"{self.member_check_min:g}"),
            ("JARCHY_REMOVE_STRANGERS", str(self.remove_strangers).lower()),
            ("JARCHY_BROADCAST_INTERVAL_S", f"{self.broadcast_interval_s:g}"),
            ("JARCHY_ALERT_SOS_RESERVE", str(self.alert_sos_reserve)),
            ("JARCHY_ALERT_DIGEST_RESERVE", str(self.alert_digest_reserve)),
            ("JARCHY_SOS_ESCALATE_AFTER_MIN", f"{self.sos_escalate_after_min:g}"),
            ("JARCHY_SOS_ESCALATE_CAP_MIN", f"{self.sos_escalate_cap_min:g}"),
            ("JARCHY_EVIDENCE_PER_PERSON_MB", str(self.evidence_per_person_mb)),
            ("JARCHY_EVIDENCE_TOTAL_MB", str(self.evidence_total_mb)),
            ("JARCHY_DISK_FLOOR_MB", str(self.disk_floor_mb)),
            ("JARCHY_EVIDENCE_DOWNLOADS", str(self.evidence_downloads)),
            ("JARCHY_INSTANCE_ID", self.instance_id or "(kept in the data directory)"),
            ("JARCHY_WEBHOOK_URL", self.webhook_url or "not set (long polling)"),
            ("JARCHY_WEBHOOK_LISTEN", f"{self.webhook_listen[0]}:{self.webhook_listen[1]}"),
            ("JARCHY_WEBHOOK_SECRET", "set" if self.webhook_secret else "derived from the data key"),
            (
                "JARCHY_METRICS_LISTEN",
                f"{self.metrics_listen[0]}:{self.metrics_listen[1]}" if self.metrics_listen else "off",
            ),
            ("JARCHY_OFFICIAL_BOTS", ", ".join(f"@{name}" for name in self.official_bots) or "none"),
            ("JARCHY_SIGNING_KEY_FILE", str(self.resolved_signing_key_file or "not set")),
            (
                "JARCHY_BACKUP_BOT_TOKENS",
                f"{len(self.backup_bot_tokens)} configured",
            ),
            ("JARCHY_SWITCH_AFTER_MIN", f"{self.switch_after_min:g}"),
            ("JARCHY_FLEET_CHECK_S", f"{self.fleet_check_s:g}"),
            ("JARCHY_LOG_LEVEL", self.log_level),
            ("JARCHY_EVENT_LOOP", self.event_loop),
        ]


@dataclass(frozen=True)
class KeyLocation:
    """Where the data key is, how it was found, and whether a service manager provides it (read-only)."""

    path: Path
    source: str  # "JARCHY_KEY_FILE", "systemd credential", "docker secret", "data directory" or "default"
    managed: bool


def _key_beside_data(env: Mapping[str, str]) -> bool:
    raw = env.get("JARCHY_KEY_BESIDE_DATA", "").strip()
    if raw and raw != KEY_BESIDE_DATA_CONSENT:
        raise SettingsError(
            "JARCHY_KEY_BESIDE_DATA",
            "is set but does not say what it costs",
            f"Keep the key apart from the data (see README), or set it to {KEY_BESIDE_DATA_CONSENT}.",
        )
    return bool(raw)


def _config_dir(env: Mapping[str, str]) -> Path | None:
    # The XDG base directory rules: a relative XDG_CONFIG_HOME is ignored.
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    home = env.get("HOME", "").strip()
    return Path(home) / ".config" if home else None


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=value lines of a .env file; a missing file is empty."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _instance_id(env: Mapping[str, str]) -> str | None:
    raw = env.get("JARCHY_INSTANCE_ID", "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", raw):
        raise SettingsError(
            "JARCHY_INSTANCE_ID",
            "is not 1-16 letters, digits, _ or -",
            "Give each instance a short name of its own, e.g. bishkek-1, or leave it unset.",
        )
    return raw


def _webhook_url(env: Mapping[str, str]) -> str:
    raw = env.get("JARCHY_WEBHOOK_URL", "").strip()
    if raw and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", raw):
        raise SettingsError(
            "JARCHY_WEBHOOK_URL",
            "is not an http(s) URL without a query",
            "Use the public address Telegram will post to, e.g. https://bot.example.org/telegram.",
        )
    return raw


def _listen(env: Mapping[str, str], name: str) -> tuple[str, int] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(
            name, f"'{raw}' is not host:port", "Use e.g. 127.0.0.1:8080 (or 0.0.0.0:8080 in a container)."
        )
    return host, int(port)


WEBHOOK_SECRET_MIN = 32


def _webhook_secret(env: Mapping[str, str]) -> SecretStr | None:
    raw = env.get("JARCHY_WEBHOOK_SECRET", "").strip()
    if not raw:
        return None
    # Anyone who can reach the webhook may guess: a short secret falls to a brute force (2 characters to
    # 4096 requests), and the requests refused are only counted in the log.
    if not re.fullmatch(rf"[A-Za-z0-9_-]{{{WEBHOOK_SECRET_MIN},256}}", raw):
        raise SettingsError(
            "JARCHY_WEBHOOK_SECRET",
            f"is not {WEBHOOK_SECRET_MIN}-256 letters, digits, _ or - (at least {WEBHOOK_SECRET_MIN}, so it "
            "cannot be guessed; at most 256 of the characters Telegram allows)",
            "Generate one, e.g. with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))', "
            "or leave it unset to derive it from the data key.",
        )
    return SecretStr(raw)


def _phone_keep_hours(env: Mapping[str, str]) -> float:
    hours = _number(env, "JARCHY_PHONE_KEEP_HOURS", 24.0, float, minimum=0.1)
    if hours > PHONE_KEEP_MAX_H:
        raise SettingsError(
            "JARCHY_PHONE_KEEP_HOURS",
            f"{hours:g} is too long: Telegram lets a bot delete its messages for 48 hours only",
            f"Use at most {PHONE_KEEP_MAX_H:g} (default 24).",
        )
    return hours


def _proxy_url(env: Mapping[str, str]) -> SecretStr | None:
    raw = env.get("JARCHY_PROXY_URL", "").strip()
    if not raw:
        return None
    fix = "Use e.g. socks5://user:password@proxy.example.org:1080 or http://proxy.example.org:3128."
    parts = urlsplit(raw)
    # Never quote the value back, not even its "scheme": a value without one may start with a password.
    if parts.scheme.lower() not in PROXY_SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in PROXY_SCHEMES)
        raise SettingsError("JARCHY_PROXY_URL", f"does not start with {schemes}", fix)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError("JARCHY_PROXY_URL", "is not scheme://[user:password@]host:port", fix)
    return SecretStr(raw)


def _proxy_link(env: Mapping[str, str]) -> str:
    raw = env.get("JARCHY_PROXY_LINK", "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    kind = parts.netloc if parts.scheme == "tg" else parts.path.strip("/")
    official = parts.scheme == "tg" or (parts.scheme == "https" and parts.netloc == "t.me")
    query = parse_qs(parts.query)
    if not official or kind not in ("proxy", "socks") or not query.get("server") or not query.get("port"):
        raise SettingsError(
            "JARCHY_PROXY_LINK",
            "is not a Telegram proxy link with a server and a port",
            "Use the link your proxy gives, e.g. https://t.me/proxy?server=proxy.example.org&port=443&secret=…",
        )
    return raw


def _mask_url(url: str) -> str:
    # A PostgreSQL URL may carry a password: user:password@host.
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:********@", url)


def _ids(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = env.get(name, "").strip()
    if not raw:
        return frozenset()
    try:
        return frozenset(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(
            name,
            "must be Telegram user ids separated by commas",
            "For example 12345678,87654321 (ask @userinfobot).",
        ) from None


def _optional(env: Mapping[str, str], name: str, kind: Callable[[str], _T], example: str) -> _T | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(name, f"'{raw}' is malformed", f"Use {example}.") from None


def _number(
    env: Mapping[str, str], name: str, default: _T, kind: Callable[[str], _T], *, minimum: float
) -> _T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(name, f"'{raw}' is not a number", f"Use a number, default {default}.") from None
    if float(value) < minimum:  # type: ignore[arg-type]
        raise SettingsError(name, f"{raw} is too small", f"Use at least {minimum:g}.")
    return value


def _one_of(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in allowed:
        raise SettingsError(name, f"is {value!r}", f"Use one of {', '.join(allowed)}.")
    return value


def _choices(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> frozenset[str]:
    raw = env.get(name)
    if raw is None:
        return frozenset(allowed)
    chosen = {part.strip().lower() for part in raw.split(",") if part.strip()}
    chosen.discard("none")
    unknown = chosen - set(allowed)
    if unknown:
        raise SettingsError(
            name,
            f"has unknown values {', '.join(sorted(unknown))}",
            f"Use some of {', '.join(allowed)}, or none.",
        )
    return frozenset(chosen)


def _backup_tokens(env: Mapping[str, str], main: str) -> tuple[SecretStr, ...]:
    name = "JARCHY_BACKUP_BOT_TOKENS"
    tokens: list[str] = []
    for raw in re.split(r"[\s,]+", env.get(name, "").strip()):
        if not raw:
            continue
        if not _TOKEN_RE.match(raw):
            # Never the value: it is a secret, and a typo in it is still most of one.
            raise SettingsError(
                name,
                f"entry {len(tokens) + 1} does not look like a bot token",
                "Give the backup bots' tokens from @BotFather, separated by commas.",
            )
        if raw == main or raw.split(":", 1)[0] == main.split(":", 1)[0]:
            raise SettingsError(
                name, "names the main bot", "List only other bots; the main one is JARCHY_BOT_TOKEN."
            )
        if raw.split(":", 1)[0] in {t.split(":", 1)[0] for t in tokens}:
            raise SettingsError(name, "names one bot twice", "List each backup bot once.")
        tokens.append(raw)
    return tuple(SecretStr(t) for t in tokens)


def _usernames(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in env.get(name, "").replace(";", ",").replace(" ", ",").split(","):
        raw = part.strip().removeprefix("@")
        if not raw:
            continue
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{4,31}", raw):
            raise SettingsError(
                name, f"'{part.strip()}' is not a Telegram username", "Use e.g. @ourbackup_bot."
            )
        if raw.lower() not in names:
            names.append(raw.lower())
    return tuple(names)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise SettingsError(name, f"'{raw}' is not true or false", "Use true or false.")
