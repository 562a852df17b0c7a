"""client certificate requirement: a user may accept only webhooks that carry TradingView's certificate

Revision ID: 0009_client_certificate
Revises: 0008_notifications
Create Date: 2026-12-07 09:30:00

user_config.require_tradingview_client_certificate (default false, so nothing changes for existing users):
when set, intake refuses a webhook unless the edge reports that Envoy verified TradingView's webhook client
certificate on its connection. Intake checks it beside the IP allowlist before storing; ingest_webhook()
v4 re-checks that the requirement it was decided on is still the row's under the user's lock (answering
'stale' otherwise), as it does for the allowlist, so enabling it applies at once to users intake cached.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signal_service.intake.ingest_function import ingest_function_sql

revision = "0009_client_certificate"
down_revision = "0008_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "user_config",
        sa.Column(
            "require_tradingview_client_certificate", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )
    op.execute("DROP FUNCTION ingest_webhook")
    op.execute(ingest_function_sql(4))


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_webhook")
    op.execute(ingest_function_sql(3))
    op.drop_column("user_config", "require_tradingview_client_certificate")
