"""Every column encrypted under the data key, and what each value's encryption is bound to.

`jarchy rotate-key` re-encrypts exactly these; the start-up key guard opens a few of them to test the key of a
database written before key checks existed. tests/bot/services/upkeep/test_key_rotation.py fails when an
encrypted (LargeBinary) column of the schema is not listed here, and checks every binding against rows the
real services wrote. Values sealed under a transient epoch key (bot.security.transient) live in some of these
columns too, and staged evidence migrated by revision 0010 is clear JSON: neither depends on the data key, and
both are left as they are (see `under_data_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, or_, select, update
from sqlalchemy.sql.dml import Update

from bot.security.bindings import (
    contact_chat_binding,
    copy_chat_binding,
    creator_chat_binding,
    draft_binding,
    duty_chat_binding,
    file_ref_binding,
    follow_chat_binding,
    note_binding,
    payload_binding,
    reach_binding,
    report_body_binding,
    safeword_binding,
    sealed_body_binding,
    staged_binding,
    subscriber_chat_binding,
    team_name_binding,
    telegram_id_binding,
    update_binding,
)
from bot.security.crypto import Cipher, DecryptionError
from storage import schema

# The first byte of a value sealed under the data key (bot.security.crypto: format 1).
_DATA_KEY_FORMAT = b"\x01"
# LargeBinary columns that hold no value sealed under the data key, and why (checked by a test).
NOT_SEALED = {
    "evidence.mac": "a MAC under the long-lived evidence.bind subkey: still valid after a rotation",
    # Always sealed under a transient epoch key, whose slot rotation re-wraps: nothing to re-encrypt.
    "drafts.owner": "sealed under a transient key (its slot is re-wrapped by the rotation)",
    "evidence_staged.owner_seal": "sealed under a transient key (its slot is re-wrapped by the rotation)",
    # Kept only while instances run: each re-announces within seconds, and a share that no longer opens
    # is dropped and lent again (bot.runtime.key_exchange).
    "transient_peers.public_key": "re-announced under the new key by its running instance",
    "transient_shares.sealed": "dropped when it no longer opens, and lent again",
}


def under_data_key(value: bytes) -> bool:
    """Tell whether a stored value is sealed under the data key (not a transient key, not clear text)."""
    return value[:1] == _DATA_KEY_FORMAT


def open_under(cipher: Cipher, value: bytes, bindings: Sequence[str]) -> tuple[str, bytes] | None:
    """Return the binding a value opens under and its plaintext, or None if it opens under none."""
    for binding in bindings:
        try:
            return binding, cipher.decrypt(value, binding=binding)
        except DecryptionError:
            continue
    return None


@dataclass(frozen=True)
class SealedField:
    """One encrypted column: the row key that pages through it, and how a row's binding is built."""

    table: Table
    column: str
    key: tuple[str, ...]  # a unique key of the row, in paging order
    # What a row's value may be bound to, newest format first: from a row of `page` (key columns,
    # `sealed`, `extra` columns).
    bindings: Callable[[Any], tuple[str, ...]]
    extra: tuple[str, ...] = ()  # more columns of the table the binding needs
    # A column of another table the binding needs, joined through a foreign key (report_notes → reports.code).
    joined: tuple[Table, str, str] | None = None  # (table, its column, our foreign-key column to its id)

    @property
    def name(self) -> str:
        """Return "table.column"."""
        return f"{self.table.name}.{self.column}"

    def page(self, after: Sequence[Any] | None, limit: int) -> Select[Any]:
        """Select the next `limit` rows holding a value, after the row keyed `after`, in key order."""
        keys = [self.table.c[k] for k in self.key]
        columns: list[Any] = [*keys, self.table.c[self.column].label("sealed")]
        columns += [self.table.c[c] for c in self.extra if c not in self.key]
        source: Any = self.table
        if self.joined is not None:
            other, wanted, foreign = self.joined
            columns.append(other.c[wanted].label(f"joined_{wanted}"))
            source = self.table.join(other, other.c.id == self.table.c[foreign])
        stmt = select(*columns).select_from(source).where(self.table.c[self.column].is_not(None))
        if after is not None:
            stmt = stmt.where(_after(keys, list(after)))
        return stmt.order_by(*keys).limit(limit)

    def replace(self, row: Any, sealed: bytes) -> Update:
        """Update one row's value, only if it still holds what was read (nothing else writes meanwhile)."""
        where = [self.table.c[k] == getattr(row, k) for k in self.key]
        return (
            update(self.table)
            .where(*where, self.table.c[self.column] == row.sealed)
            .values({self.column: sealed})
        )

    def key_of(self, row: Any) -> tuple[Any, ...]:
        """Return the paging key of a row."""
        return tuple(getattr(row, k) for k in self.key)


def _after(keys: list[Any], after: list[Any]) -> ColumnElement[bool]:
    # (a, b) > (x, y) spelled out: row values are not compared the same way by every backend.
    clauses = []
    for i, column in enumerate(keys):
        clauses.append(and_(*[keys[j] == after[j] for j in range(i)], column > after[i]))
    return or_(*clauses)


def _report_body(r: Any) -> tuple[str, ...]:
    # Bound to the clear columns since sealed_body_binding; to the code alone before.
    columns = (r.kind, r.category, r.occurred_at, r.occurred_precision, r.region, r.contactable, r.created_at)
    return sealed_body_binding(r.code, *columns), report_body_binding(r.code)


_BODY_COLUMNS = (
    "code",
    "kind",
    "category",
    "occurred_at",
    "occurred_precision",
    "region",
    "contactable",
    "created_at",
)


SEALED_FIELDS: tuple[SealedField, ...] = (
    SealedField(schema.reports, "body", ("id",), _report_body, _BODY_COLUMNS),
    SealedField(
        schema.reports, "contact_chat", ("id",), lambda r: (contact_chat_binding(r.code),), ("code",)
    ),
    SealedField(
        schema.report_notes,
        "body",
        ("id",),
        lambda r: (note_binding(r.joined_code, r.kind),),
        ("kind",),
        joined=(schema.reports, "code", "report_id"),
    ),
    SealedField(schema.evidence, "file_ref", ("id",), lambda r: (file_ref_binding(r.uid),), ("uid",)),
    # Drafts and staged rows: bound to the pseudonym, which the row holds in clear only from before owner
    # tags (0011); a tagged row is sealed under a transient key (skipped by rotation) and its owner is
    # opened from `owner` / `owner_seal` (bot.security.owner_tags).
    SealedField(
        schema.evidence_staged,
        "details",
        ("id",),
        lambda r: (staged_binding(r.owner),),
        ("owner", "owner_seal"),
    ),
    SealedField(schema.outbox, "payload", ("id",), lambda r: (payload_binding(r.uid),), ("uid",)),
    SealedField(schema.inbox, "payload", ("update_id",), lambda r: (update_binding(r.update_id),)),
    SealedField(
        schema.drafts,
        "payload",
        ("pseudonym", "kind"),
        lambda r: (draft_binding(r.pseudonym, r.kind, r.nonce),),
        ("nonce", "owner"),
    ),
    SealedField(schema.alert_copies, "chat", ("id",), lambda r: (copy_chat_binding(r.uid),), ("uid",)),
    SealedField(schema.duty, "chat", ("pseudonym",), lambda r: (duty_chat_binding(r.pseudonym),)),
    SealedField(schema.team, "display_name", ("pseudonym",), lambda r: (team_name_binding(r.pseudonym),)),
    SealedField(
        schema.coordinator_ids, "telegram_id", ("pseudonym",), lambda r: (telegram_id_binding(r.pseudonym),)
    ),
    SealedField(
        schema.follows,
        "chat",
        ("case_id", "follower"),
        lambda r: (follow_chat_binding(r.follower, r.case_id),),
    ),
    SealedField(schema.users, "safeword", ("pseudonym",), lambda r: (safeword_binding(r.pseudonym),)),
    SealedField(schema.reach, "sealed", ("pseudonym",), lambda r: (reach_binding(r.pseudonym),)),
    SealedField(
        schema.subscriptions, "chat", ("pseudonym",), lambda r: (subscriber_chat_binding(r.pseudonym),)
    ),
    SealedField(
        schema.campaigns,
        "creator_chat",
        ("id",),
        lambda r: (creator_chat_binding(r.created_by),),
        ("created_by",),
    ),
    SealedField(
        schema.campaign_actions,
        "chat",
        ("campaign_id", "pseudonym", "kind"),
        lambda r: (subscriber_chat_binding(r.pseudonym),),
    ),
)
