"""drop ingest_webhook v4: the one-webhook-per-call ingest function has no caller left

Revision ID: 0015_drop_ingest_webhook_v4
Revises: 0014_partitions
Create Date: 2026-12-07 15:20:00

Since 0013 the intake stores every batch with ingest_webhooks(), a lone webhook included, and group
commit's fallback stores a refused batch's rows again one by one through it as batches of one. 0013 kept
ingest_webhook() (v4) for the replicas of the release before it during the rolling update; none calls it
now. Its file (intake/sql/ingest_webhook_v4.sql) stays: older migrations load it, and so does this one's
downgrade.
"""

from __future__ import annotations

from alembic import op

from signal_service.intake.ingest_function import ingest_function_sql

revision = "0015_drop_ingest_webhook_v4"
down_revision = "0014_partitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP FUNCTION ingest_webhook")


def downgrade() -> None:
    op.execute(ingest_function_sql(4))
