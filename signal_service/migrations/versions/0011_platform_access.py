"""platform access: revocable access tokens and API keys created at runtime

Revision ID: 0011_platform_access
Revises: 0010_capture_claims
Create Date: 2026-12-07 09:30:00

RevokeAccessTokens sets users.access_tokens_revoked_before; every signal replica reads the values newer
than the longest token lifetime each second, so verification itself never queries the database.
api_keys holds the keys ApiKeyService creates, hashed; every replica reloads the accepted ones each second.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0011_platform_access"
down_revision = "0010_capture_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("access_tokens_revoked_before", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_users_access_tokens_revoked_before", "users", ["access_tokens_revoked_before"])
    op.create_table(
        "api_keys",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("key_hash", sa.Text(), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_users_access_tokens_revoked_before", table_name="users")
    op.drop_column("users", "access_tokens_revoked_before")
