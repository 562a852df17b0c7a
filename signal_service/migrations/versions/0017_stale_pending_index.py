"""stale pending captures by index: the sweeper no longer reads all of screenshots every 30 s

The capture sweeper (captures/service.py, every sweep_interval_seconds on every replica) looks for PENDING
screenshots untouched for long. No index served that query, so each pass read the whole table: at 10 M
signals a 2.4 GB sequential scan every 30 s, competing with ingest for the disk and the CPU.
ix_screenshots_stale_pending holds only the PENDING rows, which ingest writes and a capture's claim moves
on within seconds, so it stays a few pages.

Built CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would hold off ingest's
writes to screenshots while it read the whole table.
"""

from __future__ import annotations

from alembic import op

revision = "0017_stale_pending_index"
down_revision = "0016_retention_bytes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_screenshots_stale_pending"
            " ON screenshots (updated_at) WHERE status = 'pending'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_screenshots_stale_pending")
