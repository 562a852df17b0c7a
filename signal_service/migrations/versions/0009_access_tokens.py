"""access tokens: a per-user instant before which every access token is refused

Revision ID: 0009_access_tokens
Revises: 0005_signal_parse_fields
Create Date: 2026-12-07 09:30:00

RevokeAccessTokens sets users.access_tokens_revoked_before; every signal replica reads the values newer
than the longest token lifetime each second, so verification itself never queries the database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_access_tokens"
down_revision = "0005_signal_parse_fields"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("access_tokens_revoked_before", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_users_access_tokens_revoked_before", "users", ["access_tokens_revoked_before"])


def downgrade() -> None:
    op.drop_index("ix_users_access_tokens_revoked_before", table_name="users")
    op.drop_column("users", "access_tokens_revoked_before")
