"""retention bytes: HOT screenshot-status updates on signals, no body copy in accepted audit rows

Revision ID: 0016_retention_bytes
Revises: 0015_drop_ingest_webhook_v4
Create Date: 2026-12-07 14:30:00

Every change of a signal's screenshot_status (a capture's claim and report, retention's expiry) rewrote the
row into all nine of signals' indexes: ix_signals_screenshot_open named the column in its predicate, which
rules out a heap-only (HOT) update, and with fillfactor 100 the page had no room for the new version
anyway. That index served one query, the list of failed captures; it moves to screenshots, whose
status is in its other indexes' predicates already (so nothing there could be HOT before either), as
ix_screenshots_failed (user_id) WHERE status = 'failed'. signals gets fillfactor 90: ingest leaves a
tenth of each page for the updated versions. This applies to pages written from now on; the pages
already full keep their rows until they are rewritten (VACUUM FULL, pg_repack), which this migration
does not do.

ix_screenshots_user_id goes: no query reads screenshots by user alone (retention reads the partial
ix_screenshots_user_completed, a user's deletion cascades by signal_id).

ingest_webhooks() v6 (intake/sql/ingest_webhooks_v6.sql) writes no body into an accepted call's audit row:
the signal's raw_body holds the same bytes, and the row keeps signal_id, body_sha256 and body_size.
Duplicates keep their excerpt. Same row type and signature as v5, so replicas of either release can call
either version during a rolling update.

Locks: creating ix_screenshots_failed holds off writes to screenshots (and so ingest) while it reads the
whole table; run it at a quiet hour on a large installation.
"""

from __future__ import annotations

from alembic import op

from signal_service.intake.ingest_function import batch_function_sql

revision = "0016_retention_bytes"
down_revision = "0015_drop_ingest_webhook_v4"
branch_labels = None
depends_on = None

_INGEST_SIGNATURE = "ingest_webhooks(ingest_webhook_row[], text, integer)"


def upgrade() -> None:
    op.execute("ALTER TABLE signals SET (fillfactor = 90)")
    op.execute("DROP INDEX ix_signals_screenshot_open")
    op.execute("CREATE INDEX ix_screenshots_failed ON screenshots (user_id) WHERE status = 'failed'")
    op.execute("DROP INDEX ix_screenshots_user_id")
    op.execute(f"DROP FUNCTION {_INGEST_SIGNATURE}")
    op.execute(batch_function_sql(6))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_INGEST_SIGNATURE}")
    op.execute(batch_function_sql(5))
    op.execute("CREATE INDEX ix_screenshots_user_id ON screenshots (user_id)")
    op.execute("DROP INDEX ix_screenshots_failed")
    op.execute(
        "CREATE INDEX ix_signals_screenshot_open ON signals (screenshot_status)"
        " WHERE screenshot_status IN ('pending', 'processing', 'failed')"
    )
    op.execute("ALTER TABLE signals RESET (fillfactor)")
