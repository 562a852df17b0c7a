"""sessions: TradingView session check bookkeeping, retention index

Revision ID: 0003_sessions
Revises: 0002_ingest_fast_path
Create Date: 2026-12-01 10:00:00

user_config gains when the current cookies were set (a capture claimed earlier used the previous ones),
when a session check was last queued (the scheduler's "already asked" mark), and when and by which job
it was last claimed (one check of a user runs at a time). The partial indexes
serve the session check scheduler (configured sessions by last check) and the retention job (completed
screenshots by age). Only nullable columns are added, so ingest_webhook() needs no change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sessions"
down_revision = "0002_ingest_fast_path"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("user_config", sa.Column("tv_session_set_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "user_config", sa.Column("tv_check_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("user_config", sa.Column("tv_check_claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("user_config", sa.Column("tv_check_claimed_by", sa.Text(), nullable=True))
    op.execute(
        "UPDATE user_config SET tv_session_set_at = COALESCE(tv_cookies_changed_at, updated_at) "
        "WHERE tv_session_ciphertext IS NOT NULL"
    )
    op.create_index(
        "ix_user_config_session_checked",
        "user_config",
        ["tv_cookies_checked_at"],
        postgresql_where=sa.text("tv_session_ciphertext IS NOT NULL"),
    )
    op.create_index(
        "ix_screenshots_completed_at",
        "screenshots",
        ["completed_at"],
        postgresql_where=sa.text("status = 'completed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_screenshots_completed_at", table_name="screenshots")
    op.drop_index("ix_user_config_session_checked", table_name="user_config")
    op.drop_column("user_config", "tv_check_claimed_by")
    op.drop_column("user_config", "tv_check_claimed_at")
    op.drop_column("user_config", "tv_check_requested_at")
    op.drop_column("user_config", "tv_session_set_at")
