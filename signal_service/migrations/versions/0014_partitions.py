"""partitions: audit_logs partitioned by month, pruned by dropping whole months

Revision ID: 0014_partitions
Revises: 0011_platform_access
Create Date: 2026-12-07 11:40:00

Pruning a year's backlog of audit rows row by row (1.5 M rows at 2 M signals) took minutes of deletes
that ingest felt (docs/perf/scale.md). audit_logs becomes a table partitioned by RANGE (created_at), one
partition per calendar month (UTC) named audit_logs_pYYYYMM, plus audit_logs_default for rows of a month
with no partition yet; pruning drops the months wholly past the retention period and deletes only what
is left of the month straddling it.

What partitioning asks of the table: every unique index includes created_at. The primary key becomes
(id, created_at); ux_audit_logs_repeats gains created_at, which changes nothing since a summarised
refusal's created_at is now its repeat_window (audit/service.py), so the repeats of a minute still meet
on one row. Plain INSERTs (ingest_webhook(), the audit writer) go to the parent unchanged.

The rows are copied into the new table, partitions created for every month they span and two months
ahead (ensure_audit_log_partitions(), audit/sql/audit_log_partitions_v1.sql, which the retention loop
calls every pass from then on). The copy takes a few seconds per million rows, during which audit_logs
is locked: run it at a quiet hour on a large installation.
"""

from __future__ import annotations

from alembic import op

from signal_service.audit.partitions import audit_partitions_function_sql

revision = "0014_partitions"
down_revision = "0013_batch_ingest"
branch_labels = None
depends_on = None

_OLD_INDEXES = (
    "audit_logs_pkey",
    "ix_audit_logs_created_at",
    "ix_audit_logs_user_created",
    "ux_audit_logs_repeats",
)


def _move_aside() -> None:
    op.execute("LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE audit_logs RENAME TO audit_logs_old")
    for index in _OLD_INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_old")


def _copy_and_drop_old() -> None:
    op.execute("INSERT INTO audit_logs OVERRIDING SYSTEM VALUE SELECT * FROM audit_logs_old")
    # The new identity goes on where the old one stood: an id is never handed out twice.
    op.execute(
        """
        DO $$
        DECLARE
            last bigint;
            called boolean;
        BEGIN
            EXECUTE format('SELECT last_value, is_called FROM %s',
                           pg_get_serial_sequence('audit_logs_old', 'id')) INTO last, called;
            PERFORM setval(pg_get_serial_sequence('audit_logs', 'id'), last, called);
        END
        $$
        """
    )
    op.execute("DROP TABLE audit_logs_old")
    # The new identity's sequence got a free name while the old one held audit_logs_id_seq.
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s RENAME TO audit_logs_id_seq',"
        " pg_get_serial_sequence('audit_logs', 'id')); END $$"
    )


def upgrade() -> None:
    _move_aside()
    op.execute(
        "CREATE TABLE audit_logs (LIKE audit_logs_old INCLUDING DEFAULTS INCLUDING IDENTITY)"
        " PARTITION BY RANGE (created_at)"
    )
    op.execute("ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_pkey PRIMARY KEY (id, created_at)")
    op.execute("CREATE INDEX ix_audit_logs_created_at ON audit_logs (created_at)")
    op.execute("CREATE INDEX ix_audit_logs_user_created ON audit_logs (user_id, created_at)")
    op.execute(
        "CREATE UNIQUE INDEX ux_audit_logs_repeats ON audit_logs"
        " (repeat_window, user_id, source_ip, outcome, reason, created_at) NULLS NOT DISTINCT"
        " WHERE repeat_window IS NOT NULL"
    )
    op.execute("CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT")
    op.execute(audit_partitions_function_sql(1))
    op.execute(
        "SELECT ensure_audit_log_partitions("
        " coalesce((SELECT min(created_at) FROM audit_logs_old), now()), now() + interval '2 months')"
    )
    _copy_and_drop_old()


def downgrade() -> None:
    _move_aside()
    op.execute("DROP FUNCTION ensure_audit_log_partitions(timestamptz, timestamptz)")
    op.execute("CREATE TABLE audit_logs (LIKE audit_logs_old INCLUDING DEFAULTS INCLUDING IDENTITY)")
    op.execute("ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_pkey PRIMARY KEY (id)")
    op.execute("CREATE INDEX ix_audit_logs_created_at ON audit_logs (created_at)")
    op.execute("CREATE INDEX ix_audit_logs_user_created ON audit_logs (user_id, created_at)")
    op.execute(
        "CREATE UNIQUE INDEX ux_audit_logs_repeats ON audit_logs"
        " (repeat_window, user_id, source_ip, outcome, reason) NULLS NOT DISTINCT"
        " WHERE repeat_window IS NOT NULL"
    )
    _copy_and_drop_old()
