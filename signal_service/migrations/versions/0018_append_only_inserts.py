"""append-only inserts: a new screenshot and a new signal's body-hash entry land where the last ones did

At 3 M and 10 M signals every ingested webhook wrote about 1.3 full-page images to the WAL (13 KB of WAL
per webhook against 3.7 KB on an empty database; bench_scale --only ingest counts them by relation with
pg_walinspect, docs/perf/scale.md round 6):

- screenshots, one image per insert: the table had fillfactor 100, so its pages were filled to the last
  byte that fits a completed row, and a new PENDING row (smaller: no object key yet) fits in what is left.
  The free-space map hands every insert a different old page, which is read, dirtied and logged whole.
  fillfactor 90 keeps a tenth of each page for the row's own updates (claimed, completed, expired), and an
  insert now goes only to a page with that tenth free besides the row: at the end of the table.
- ix_signals_user_body (user_id, body_sha256, created_at), one image per few inserts: a hash is random,
  so each insert went to a random leaf of its user's range. ingest_webhooks() asks it for the same body
  within the dedupe window (60 s by default), which (user_id, created_at, body_sha256) answers as a range
  of the user's last minute with the hash checked in the index; inserts go to the end of the user's range.

Both indexes are built and dropped CONCURRENTLY, outside the migration's transaction, so ingest's writes
go on meanwhile. fillfactor applies to pages written from now on and to where inserts go; the pages
already full keep their rows.
"""

from __future__ import annotations

from alembic import op

revision = "0018_append_only_inserts"
down_revision = "0017_stale_pending_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE screenshots SET (fillfactor = 90)")
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_signals_user_created_body"
            " ON signals (user_id, created_at, body_sha256)"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_signals_user_body")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_signals_user_body"
            " ON signals (user_id, body_sha256, created_at)"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_signals_user_created_body")
    op.execute("ALTER TABLE screenshots RESET (fillfactor)")
