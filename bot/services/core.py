"""What nearly every service is built from: one frozen Core, passed first, beside the few collaborators
each service names explicitly (its repositories, the other services it calls, its own settings)."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bot.runtime.audit import AuditLog
from bot.runtime.clock import Clock
from bot.runtime.outbox import Outbox
from bot.runtime.unit_of_work import UnitOfWork
from bot.security import Cipher, Pseudonymizer
from bot.services.access.roles import Gate
from bot.settings import Settings
from messages import Catalogs
from storage.database import Database


@dataclass(frozen=True)
class Core:
    """The process's shared machinery: settings, time, the database, keys, the outbox, the audit log and
    the gate."""

    settings: Settings
    clock: Clock
    db: Database
    cipher: Cipher
    pseudonyms: Pseudonymizer
    outbox: Outbox
    audit: AuditLog
    gate: Gate
    texts: Catalogs

    @property
    def zone(self) -> ZoneInfo:
        """The time zone dates are shown in."""
        return self.settings.timezone

    @property
    def language(self) -> str:
        """The language of what is not addressed to one person (the coordinators' chat, channels)."""
        return self.settings.default_language

    def unit_of_work(self) -> UnitOfWork:
        """Begin a unit of work: a write transaction whose after-commit work runs only once committed."""
        return UnitOfWork(self.db, self.outbox, self.audit)
