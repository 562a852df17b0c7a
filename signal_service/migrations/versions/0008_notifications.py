"""notifications: the delivery ledger, the feed trigger, encrypted notification secrets

Revision ID: 0008_notifications
Revises: 0007_scale
Create Date: 2026-12-07 09:00:00

notification_deliveries is the ledger: one row per (signal, channel, kind), so a delivery is made once
whatever the workers' retries. A trigger on signal_events (notifications/sql/notify_feed_v1.sql) writes
the due rows and the notify workers' outbox message in the event's transaction; ingest_webhook() is
unchanged. user_config gains the ciphertext of the preferences' secrets (webhook secret, Discord URL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from signal_service.notifications.feed_function import feed_function_sql

revision = "0008_notifications"
down_revision = "0007_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "user_config", sa.Column("notification_secrets_ciphertext", sa.LargeBinary(), nullable=True)
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "signal_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("signals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.Text(), nullable=True),
        sa.Column("with_photo", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("claim_id", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("signal_id", "channel", "kind", name="uq_notification_deliveries_signal"),
    )
    op.create_index(
        "ix_notification_deliveries_open",
        "notification_deliveries",
        ["user_id", "channel", "id"],
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index(
        "ix_notification_deliveries_failed",
        "notification_deliveries",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('failed', 'dead')"),
    )
    for statement in feed_function_sql(1):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER signal_events_notify_feed ON signal_events")
    op.execute("DROP FUNCTION notify_feed()")
    op.execute("DROP FUNCTION notify_filter_allows(jsonb, text[])")
    op.drop_index("ix_notification_deliveries_failed", table_name="notification_deliveries")
    op.drop_index("ix_notification_deliveries_open", table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_column("user_config", "notification_secrets_ciphertext")
