"""signal parse fields: the catalog's key beside the indicator as written, bar and fire times, delayed feeds

Revision ID: 0005_signal_parse_fields
Revises: 0004_ingest_rate_limit
Create Date: 2026-12-07 09:00:00

signals.indicator now keeps the indicator as the alert named it; indicator_key holds the catalog's name
for it (what filters and stats group by), bar_time and fired_at TradingView's {{time}} and {{timenow}}
where the message tells them apart, and delayed_feed whether the exchange is a delayed feed ("_DLY").
Rows stored before this revision hold the catalog's name as their indicator, so those whose indicator is
a name in the deployment's catalog get it as their key. ingest_webhook() v3 takes and stores the new
fields.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

from signal_service.intake.ingest_function import ingest_function_sql
from signal_service.parsing import load_indicator_catalog

revision = "0005_signal_parse_fields"
down_revision = "0004_ingest_rate_limit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signals", sa.Column("indicator_key", sa.Text(), nullable=True))
    op.add_column("signals", sa.Column("bar_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("signals", sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "signals", sa.Column("delayed_feed", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    catalog = load_indicator_catalog(context.config.attributes.get("indicators_path"))
    op.get_bind().execute(
        sa.text("UPDATE signals SET indicator_key = indicator WHERE indicator = ANY(:names)").bindparams(
            sa.bindparam("names", type_=pg.ARRAY(sa.Text()))
        ),
        {"names": [spec.name for spec in catalog.indicators]},
    )
    op.execute("DROP FUNCTION ingest_webhook")
    op.execute(ingest_function_sql(3))


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_webhook")
    op.execute(ingest_function_sql(2))
    op.drop_column("signals", "delayed_feed")
    op.drop_column("signals", "fired_at")
    op.drop_column("signals", "bar_time")
    op.drop_column("signals", "indicator_key")
