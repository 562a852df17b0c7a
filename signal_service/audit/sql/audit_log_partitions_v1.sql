-- audit_logs is partitioned by month of created_at (UTC), so that pruning drops a month whole instead of
-- deleting its rows one by one (migration 0014_partitions). This creates the monthly partitions covering
-- p_from through p_through that do not exist yet and returns how many it created. The retention loop calls
-- it every pass for the months ahead; rows with no month yet land in audit_logs_default meanwhile and are
-- moved into their month's partition when it is created (attaching checks the default holds none of it).
CREATE OR REPLACE FUNCTION ensure_audit_log_partitions(p_from timestamptz, p_through timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', p_from, 'UTC');
    month_end timestamptz;
    partition_name text;
    created integer := 0;
BEGIN
    -- One creator at a time across replicas; the others find the partitions there once they get the lock.
    PERFORM pg_advisory_xact_lock(hashtext('ensure_audit_log_partitions'));
    WHILE month_start <= p_through LOOP
        month_end := date_trunc('month', month_start + interval '32 days', 'UTC');
        partition_name := 'audit_logs_p' || to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM');
        IF to_regclass(partition_name) IS NULL THEN
            -- Created apart and attached: CREATE TABLE ... PARTITION OF would lock the whole table against
            -- ingest's inserts; ATTACH PARTITION only blocks schema changes.
            EXECUTE format('CREATE TABLE %I (LIKE audit_logs INCLUDING DEFAULTS)', partition_name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM audit_logs_default WHERE created_at >= %L AND created_at < %L'
                ' RETURNING *) INSERT INTO %I SELECT * FROM moved',
                month_start, month_end, partition_name
            );
            EXECUTE format(
                'ALTER TABLE audit_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                partition_name, month_start, month_end
            );
            created := created + 1;
        END IF;
        month_start := month_end;
    END LOOP;
    RETURN created;
END
$$;
