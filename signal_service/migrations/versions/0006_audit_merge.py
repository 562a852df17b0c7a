"""audit merge: refusals anyone can repeat are counted per minute instead of stored once each

Revision ID: 0006_audit_merge
Revises: 0005_signal_parse_fields
Create Date: 2026-12-07 09:00:00

Refused webhooks for unknown tokens and rate or quota refusals are kept as size and SHA-256 of the body,
without the body, and the repeats of one (user, source, outcome, reason) within a minute become one row:
repeat_window is that minute and repeat_count how many calls the row stands for. The partial unique
index is what concurrent writers (every signal replica) merge on, with INSERT ... ON CONFLICT; NULLs
are not distinct in it, so calls with no user or no source address merge too (PostgreSQL 15 or later).
Rows written before keep repeat_window NULL and count 1. ingest_webhook() names its audit columns, so it
needs no change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_audit_merge"
down_revision = "0005_signal_parse_fields"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_logs", sa.Column("repeat_window", sa.DateTime(timezone=True), nullable=True))
    op.add_column("audit_logs", sa.Column("repeat_count", sa.Integer(), nullable=False, server_default="1"))
    op.create_index(
        "ux_audit_logs_repeats",
        "audit_logs",
        ["repeat_window", "user_id", "source_ip", "outcome", "reason"],
        unique=True,
        postgresql_where=sa.text("repeat_window IS NOT NULL"),
        postgresql_nulls_not_distinct=True,
    )


def downgrade() -> None:
    op.drop_index("ux_audit_logs_repeats", table_name="audit_logs")
    op.drop_column("audit_logs", "repeat_count")
    op.drop_column("audit_logs", "repeat_window")
