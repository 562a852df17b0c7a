"""ingest fast path: one statement stores an accepted webhook

Revision ID: 0002_ingest_fast_path
Revises: 0001
Create Date: 2026-11-30 19:40:00

`ingest_webhook(...)` does in one round trip what WebhookIngestor used to do in about ten: lock the user,
re-verify what the caller read about it earlier (token, enabled, plan, allowlist), find a replay or a
duplicate, check and count the quota, and insert the signal, its screenshot and outbox rows, its event
(with the user's next seq and a pg_notify) and its audit row. Called as a single statement it is its
own transaction, so the caller is answered only after all of it has committed.

It returns `outcome`: 'accepted', 'duplicate', 'quota_exceeded' (nothing written), or 'stale' (nothing
written: the user changed since the caller read it, or no longer exists; the caller reads it again).
A migration that changes these tables must replace this function in the same revision.
"""

from __future__ import annotations

from alembic import op

from signal_service.intake.ingest_function import ingest_function_sql

revision = "0002_ingest_fast_path"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(ingest_function_sql(1))


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_webhook")
