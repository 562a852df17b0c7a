"""telegram links: one-time codes that bind a Telegram chat to a user

Revision ID: 0012_telegram_links
Revises: 0011_platform_access
Create Date: 2026-12-07 11:15:00

UserService.CreateTelegramLink issues a code (only its SHA-256 is stored) that the trader sends to the
platform's bot as `/start <code>`; the first valid use binds the chat and marks the code used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0012_telegram_links"
down_revision = "0011_platform_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telegram_links",
        sa.Column("code_hash", sa.Text(), primary_key=True),
        sa.Column(
            "user_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("chat_id", sa.Text(), nullable=True),
    )
    op.create_index("ix_telegram_links_user_id", "telegram_links", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_telegram_links_user_id", table_name="telegram_links")
    op.drop_table("telegram_links")
