"""Evidence staged for drafts gets a table of its own; kept evidence loses its owner and gains a MAC.

Staged rows move to `evidence_staged`. They cannot be encrypted here (migrations never see the data key),
so they are written as clear JSON, exactly what the old row held in clear already; the bot seals new
ones. Kept rows get `mac` NULL; the bot binds them to their reports once, at its next start.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import base64
import json

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LEGACY_MARK = "evidence.legacy_upto"  # bot.services.evidence.LEGACY_MARK (migrations import no bot code)


def upgrade() -> None:
    op.create_table(
        "evidence_staged",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("details", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evidence_staged"),
    )
    op.create_index("ix_evidence_staged_owner", "evidence_staged", ["owner"])
    bind = op.get_bind()
    staged = bind.execute(
        sa.text(
            "SELECT id, uid, owner, kind, sha256, size, received_at, file_ref FROM evidence "
            "WHERE report_id IS NULL ORDER BY id"
        )
    ).all()
    for row in staged:
        if row.owner is None:
            continue  # neither staged for anyone nor kept with a report: nothing refers to it
        details = {
            "uid": row.uid,
            "kind": row.kind,
            "sha256": row.sha256,
            "size": row.size,
            "received_at": row.received_at,
            "file_ref": base64.b64encode(row.file_ref).decode(),
        }
        bind.execute(
            sa.text("INSERT INTO evidence_staged (owner, details) VALUES (:owner, :details)"),
            {"owner": row.owner, "details": json.dumps(details, separators=(",", ":")).encode()},
        )
    bind.execute(sa.text("DELETE FROM evidence WHERE report_id IS NULL"))
    op.drop_index("ix_evidence_owner", "evidence")
    with op.batch_alter_table("evidence") as batch:
        batch.drop_column("owner")
        batch.alter_column("report_id", existing_type=sa.Integer, nullable=False)
        batch.add_column(sa.Column("mac", sa.LargeBinary, nullable=True))
    # The bot binds the rows kept so far (ids up to this one) once, then deletes the mark: a row without a
    # MAC found later was written by hand and stays flagged.
    last = bind.execute(sa.text("SELECT MAX(id) FROM evidence")).scalar()
    if last is not None:
        bind.execute(
            sa.text("INSERT INTO bot_state (key, value) VALUES (:key, :value)"),
            {"key": LEGACY_MARK, "value": str(last)},
        )


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM bot_state WHERE key = :key"), {"key": LEGACY_MARK})
    with op.batch_alter_table("evidence") as batch:
        batch.drop_column("mac")
        batch.alter_column("report_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
    op.create_index("ix_evidence_owner", "evidence", ["owner"])
    bind = op.get_bind()
    for row in bind.execute(sa.text("SELECT owner, details FROM evidence_staged ORDER BY id")).all():
        if not bytes(row.details).startswith(b"{"):
            # Sealed by the bot under the data key, which migrations never see: the draft loses this file.
            continue
        details = json.loads(bytes(row.details))
        bind.execute(
            sa.text(
                "INSERT INTO evidence (uid, owner, kind, sha256, size, received_at, file_ref) "
                "VALUES (:uid, :owner, :kind, :sha256, :size, :received_at, :file_ref)"
            ),
            {**details, "owner": row.owner, "file_ref": base64.b64decode(details["file_ref"])},
        )
    op.drop_index("ix_evidence_staged_owner", "evidence_staged")
    op.drop_table("evidence_staged")
