"""scale: per-user signal counters kept on write, list filter indexes

Revision ID: 0007_scale
Revises: 0006_audit_merge
Create Date: 2026-12-07 09:00:00

GetUserStats counted a user's signals and screenshots on every call: for a trader with 200 k signals
that is 200 k heap rows per call (docs/perf/scale-plans.md). user_signal_counts holds the counts by
user and calendar month (UTC), kept by statement-level triggers on signals and screenshots, so stats
read a dozen rows instead. The triggers see every write, whoever makes it (ingest_webhook(), captures,
outcomes, retention, a hand-written UPDATE): a row trigger on INSERT (one signal per ingest statement),
statement triggers with transition tables on UPDATE and DELETE (one upsert per user and month for a
whole retention batch).

Lock order: a counter row is only written under its user's row lock, taken in user-id order, so the
counters add no lock the writers did not already take in the same order (ingest and retention lock the
user first; captures and outcomes lock the signal, then the user, as before).

Retention walks each user's completed screenshots by age (ix_screenshots_user_completed, replacing
ix_screenshots_completed_at): walking all of them by age re-read, every batch, the premium screenshots
not yet due, millions of rows at 10 M signals.

The signals indexes serve ListSignals' equality filters, newest first, so a page reads its 20 rows instead of
walking the user's whole history for a rare ticker, indicator or result (EXPLAIN in
docs/perf/scale-plans.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007_scale"
down_revision = "0006_audit_merge"
branch_labels = None
depends_on = None

_LIST_INDEXES = {
    "ix_signals_user_ticker_created": "ticker",
    "ix_signals_user_indicator_created": "indicator",
    "ix_signals_user_type_created": "signal_type",
    "ix_signals_user_result_created": "result",
}

_COUNT_COLUMNS = "signals, wins, losses, screenshots_pending, storage_bytes, storage_objects"

_ADD_ON_CONFLICT = """ON CONFLICT (user_id, month) DO UPDATE
    SET signals = c.signals + EXCLUDED.signals,
        wins = c.wins + EXCLUDED.wins,
        losses = c.losses + EXCLUDED.losses,
        screenshots_pending = c.screenshots_pending + EXCLUDED.screenshots_pending,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        storage_objects = c.storage_objects + EXCLUDED.storage_objects"""

_ADD_COUNTS = f"""
CREATE FUNCTION add_user_signal_counts(deltas user_signal_counts[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF deltas IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM users WHERE id IN (SELECT d.user_id FROM unnest(deltas) d) ORDER BY id FOR UPDATE;
    -- A user deleted by this statement (its signals cascading) has no counters left to keep.
    INSERT INTO user_signal_counts AS c
    SELECT d.* FROM unnest(deltas) d WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = d.user_id)
    {_ADD_ON_CONFLICT};
END
$$
"""  # noqa: S608 (built from this module's constants)

# What a row counts for, by table: (expression per counter column, in _COUNT_COLUMNS order).
_COUNTED = {
    "signals": (
        "1",
        "(result = 'win')::int",
        "(result = 'loss')::int",
        "(screenshot_status IN ('pending', 'processing'))::int",
        "0",
        "0",
    ),
    "screenshots": (
        "0",
        "0",
        "0",
        "0",
        "CASE WHEN status = 'completed' THEN coalesce(size_bytes, 0) ELSE 0 END",
        "(status = 'completed')::int",
    ),
}

# The statement's rows, each with its sign: +1 for a new row, -1 for an old one (UPDATE and DELETE: a
# retention batch is counted once per statement).
_CHANGED_ROWS = {
    "update": ["new_rows", "old_rows"],
    "delete": [None, "old_rows"],
}
# Inserted rows that count for nothing are not looked at: a new screenshot row is PENDING.
_INSERT_WHEN = {"signals": "", "screenshots": " WHEN (NEW.status = 'completed')"}


def _trigger_sql(table: str, event: str) -> tuple[str, str]:
    """The trigger function, and the statement that attaches it."""
    name = f"count_{table}_{event}"
    counted = ", ".join(f"{expression} AS c{index}" for index, expression in enumerate(_COUNTED[table]))
    new_rows, old_rows = _CHANGED_ROWS[event]
    parts = []
    if new_rows:
        parts.append(f"SELECT 1 AS sign, user_id, created_at, {counted} FROM {new_rows}")  # noqa: S608 (constants)
    if old_rows:
        parts.append(f"SELECT -1 AS sign, user_id, created_at, {counted} FROM {old_rows}")  # noqa: S608 (constants)
    sums = ", ".join(f"sum(sign * c{index}) AS c{index}" for index in range(len(_COUNTED[table])))
    moved = " OR ".join(f"c{index} <> 0" for index in range(len(_COUNTED[table])))
    fields = ", ".join(f"c{index}" for index in range(len(_COUNTED[table])))
    referencing = " ".join(
        clause
        for clause, used in (("NEW TABLE AS new_rows", new_rows), ("OLD TABLE AS old_rows", old_rows))
        if used
    )
    function = f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deltas user_signal_counts[];
BEGIN
    SELECT array_agg(ROW(user_id, month, {fields})::user_signal_counts ORDER BY user_id, month) INTO deltas
    FROM (SELECT user_id, date_trunc('month', created_at, 'UTC')::date AS month, {sums}
          FROM ({" UNION ALL ".join(parts)}) changed
          GROUP BY 1, 2) grouped
    WHERE {moved};
    PERFORM add_user_signal_counts(deltas);
    RETURN NULL;
END
$$
"""  # noqa: S608 (built from this module's constants)
    trigger = (
        f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} "
        f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
    )
    return function, trigger


def _insert_trigger_sql(table: str) -> tuple[str, str]:
    """A row trigger: ingest inserts one signal per statement, and a lean row trigger costs it less than a
    statement trigger's transition table and aggregation (docs/perf/scale-plans.md)."""
    name = f"count_{table}_insert"
    counted = ", ".join(_COUNTED[table])
    function = f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM users WHERE id = NEW.user_id FOR UPDATE;
    INSERT INTO user_signal_counts AS c
    SELECT user_id, date_trunc('month', created_at, 'UTC')::date, {counted} FROM (SELECT NEW.*) inserted
    {_ADD_ON_CONFLICT};
    RETURN NULL;
END
$$
"""  # noqa: S608 (built from this module's constants)
    trigger = (
        f"CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW{_INSERT_WHEN[table]} "
        f"EXECUTE FUNCTION {name}()"
    )
    return function, trigger


_BACKFILL_SIGNALS = """
INSERT INTO user_signal_counts (user_id, month, signals, wins, losses, screenshots_pending)
SELECT user_id, date_trunc('month', created_at, 'UTC')::date, count(*),
       count(*) FILTER (WHERE result = 'win'), count(*) FILTER (WHERE result = 'loss'),
       count(*) FILTER (WHERE screenshot_status IN ('pending', 'processing'))
FROM signals GROUP BY 1, 2
"""
_BACKFILL_SCREENSHOTS = """
INSERT INTO user_signal_counts AS c (user_id, month, storage_bytes, storage_objects)
SELECT user_id, date_trunc('month', created_at, 'UTC')::date, coalesce(sum(size_bytes), 0), count(*)
FROM screenshots WHERE status = 'completed' GROUP BY 1, 2
ON CONFLICT (user_id, month) DO UPDATE
SET storage_bytes = EXCLUDED.storage_bytes, storage_objects = EXCLUDED.storage_objects
"""


def upgrade() -> None:
    op.create_table(
        "user_signal_counts",
        sa.Column(
            "user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("month", sa.Date(), nullable=False),
        *(
            sa.Column(column, sa.BigInteger(), nullable=False, server_default="0")
            for column in _COUNT_COLUMNS.split(", ")
        ),
        sa.PrimaryKeyConstraint("user_id", "month"),
    )
    # Written before the triggers exist and in the same transaction: no write is counted twice or missed.
    op.execute("LOCK TABLE signals, screenshots IN SHARE MODE")
    op.execute(_BACKFILL_SIGNALS)
    op.execute(_BACKFILL_SCREENSHOTS)
    op.execute(_ADD_COUNTS)
    for table in _COUNTED:
        for statement in _insert_trigger_sql(table):
            op.execute(statement)
        for event in _CHANGED_ROWS:
            for statement in _trigger_sql(table, event):
                op.execute(statement)
    for name, column in _LIST_INDEXES.items():
        op.create_index(name, "signals", ["user_id", column, sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "ix_screenshots_user_completed",
        "screenshots",
        ["user_id", "completed_at"],
        postgresql_where=sa.text("status = 'completed'"),
    )
    op.drop_index("ix_screenshots_completed_at", table_name="screenshots")


def downgrade() -> None:
    op.create_index(
        "ix_screenshots_completed_at",
        "screenshots",
        ["completed_at"],
        postgresql_where=sa.text("status = 'completed'"),
    )
    op.drop_index("ix_screenshots_user_completed", table_name="screenshots")
    for name in _LIST_INDEXES:
        op.drop_index(name, table_name="signals")
    for table in _COUNTED:
        for event in ("insert", *_CHANGED_ROWS):
            op.execute(f"DROP TRIGGER count_{table}_{event} ON {table}")
            op.execute(f"DROP FUNCTION count_{table}_{event}()")
    op.execute("DROP FUNCTION add_user_signal_counts(user_signal_counts[])")
    op.drop_table("user_signal_counts")
