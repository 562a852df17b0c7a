"""rate limit in the ingest statement: per-user GCRA under the user's row lock

Revision ID: 0004_ingest_rate_limit
Revises: 0003_sessions
Create Date: 2026-11-29 22:30:00

The per-user rate limit moves from a Redis script into ingest_webhook(): users.rate_tat holds the GCRA
theoretical arrival time, checked and advanced under the row lock the statement already takes. An accepted
webhook then costs one round trip (to PostgreSQL) instead of two, the limit is exact across replicas, and
it no longer fails open when Redis is away. New outcome 'rate_limited' (nothing written) with
retry_after_seconds. Tokens that match no user are still limited per source address in Redis, before any
statement runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signal_service.intake.ingest_function import ingest_function_sql

revision = "0004_ingest_rate_limit"
down_revision = "0003_sessions"
branch_labels = None
depends_on = None

_PREVIOUS_SIGNATURE = (
    "uuid, text, text, text[], timestamptz, timestamptz, text, bytea, timestamptz, timestamptz, uuid, text, "
    "text, text, text, text, numeric, text, text, timestamptz, text, jsonb, jsonb, bytea, text, text, "
    "timestamptz, text, text, text, jsonb, jsonb, text, text, text, double precision, text, bytea, bigint"
)


def upgrade() -> None:
    op.add_column("users", sa.Column("rate_tat", sa.DateTime(timezone=True), nullable=True))
    op.execute(f"DROP FUNCTION ingest_webhook({_PREVIOUS_SIGNATURE})")
    op.execute(ingest_function_sql(2))


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_webhook")
    op.execute(ingest_function_sql(1))
    op.drop_column("users", "rate_tat")
