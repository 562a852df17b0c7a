"""batch ingest: one statement stores a whole group commit's webhooks

Revision ID: 0013_batch_ingest
Revises: 0011_platform_access
Create Date: 2026-12-07 11:30:00

ingest_webhooks(ingest_webhook_row[]) takes a batch of webhooks and gives each the outcome
ingest_webhook() gave it when called once per row: it locks the batch's users in id order, reads them,
their configuration and the signals each row may duplicate in one query, decides every row in memory,
then writes with one set-based statement per table (users, signals, screenshots, outbox, signal_events,
audit_logs) and one notification per user rather than per signal. Before, a batch was one call of the
one-row function per webhook inside an explicit transaction, each call running about ten statements.

ingest_webhook() (v4) stays: replicas of the previous release call it until the rolling update has
replaced them. The next migration that touches intake drops it.
"""

from __future__ import annotations

from alembic import op

from signal_service.intake.ingest_function import batch_ingest_sql

revision = "0013_batch_ingest"
down_revision = "0012_telegram_links"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in batch_ingest_sql(5):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_webhooks(ingest_webhook_row[], text, integer)")
    op.execute("DROP TYPE ingest_webhook_row")
