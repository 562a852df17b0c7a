CREATE FUNCTION ingest_webhook(
    p_user_id uuid, p_token_hash text, p_plan text, p_ip_allowlist text[],
    p_require_client_certificate boolean, p_now timestamptz,
    p_next_quota_reset timestamptz, p_idempotency_key text, p_body_sha256 bytea,
    p_dedupe_since timestamptz, p_dedupe_until timestamptz,
    p_signal_id uuid, p_chart_id text, p_indicator text, p_indicator_key text, p_ticker text,
    p_exchange text, p_symbol text, p_price numeric, p_signal_type text, p_interval text,
    p_alert_time timestamptz, p_bar_time timestamptz, p_fired_at timestamptz, p_delayed_feed boolean,
    p_parse_status text,
    p_parse_problems jsonb, p_extra jsonb, p_raw_body bytea, p_content_type text, p_source_ip text,
    p_received_at timestamptz, p_screenshot_status text,
    p_outbox_queue text, p_outbox_actor text, p_outbox_args jsonb, p_outbox_options jsonb,
    p_events_channel text, p_request_id text, p_user_agent text, p_latency_ms double precision,
    p_body_sha256_hex text, p_audit_body bytea, p_body_size bigint,
    p_rate_interval interval, p_rate_burst integer,
    OUT outcome text, OUT signal_id uuid, OUT screenshot_status text, OUT quota bigint,
    OUT quota_resets_at timestamptz, OUT retry_after_seconds double precision
) LANGUAGE plpgsql AS $$
DECLARE
    account users%ROWTYPE;
    config user_config%ROWTYPE;
    used bigint;
    reset_at timestamptz;
    next_seq bigint;
    rate_now timestamptz;
    tat timestamptz;
    allow_at timestamptz;
BEGIN
    SELECT * INTO account FROM users WHERE id = p_user_id FOR UPDATE;
    SELECT * INTO config FROM user_config WHERE user_id = p_user_id;
    -- IS NOT TRUE: a NULL (no previous token, say) must count as a mismatch, never as a pass.
    IF account.id IS NULL OR config.user_id IS NULL OR (
        account.webhook_enabled
        AND account.plan = p_plan
        AND config.ip_allowlist IS NOT DISTINCT FROM p_ip_allowlist
        AND config.require_tradingview_client_certificate = p_require_client_certificate
        AND (account.webhook_token_hash = p_token_hash
             OR (account.previous_token_hash = p_token_hash AND account.previous_token_expires_at > p_now))
    ) IS NOT TRUE
    THEN
        outcome := 'stale';
        RETURN;
    END IF;

    -- GCRA under the user's row lock: every replica shares one budget, and a refused call changes
    -- nothing. The database's clock, so that replicas with skewed clocks agree. A NULL interval (a replay
    -- from the edge's spool) is not limited.
    IF p_rate_interval IS NOT NULL THEN
        rate_now := clock_timestamp();
        tat := GREATEST(COALESCE(account.rate_tat, rate_now), rate_now);
        allow_at := tat - (GREATEST(p_rate_burst, 1) - 1) * p_rate_interval;
        IF rate_now < allow_at THEN
            outcome := 'rate_limited';
            retry_after_seconds := EXTRACT(EPOCH FROM allow_at - rate_now);
            RETURN;
        END IF;
        -- Written with the rest below: duplicates and calls over quota count against the rate too.
        tat := tat + p_rate_interval;
    END IF;

    IF p_idempotency_key IS NOT NULL THEN
        SELECT s.id, s.screenshot_status INTO signal_id, screenshot_status
        FROM signals s WHERE s.idempotency_key = p_idempotency_key;
    END IF;
    IF signal_id IS NULL THEN
        SELECT s.id, s.screenshot_status INTO signal_id, screenshot_status
        FROM signals s
        WHERE s.user_id = p_user_id AND s.body_sha256 = p_body_sha256
          AND s.created_at >= p_dedupe_since AND s.created_at <= p_dedupe_until
        ORDER BY s.created_at
        LIMIT 1;
    END IF;
    IF signal_id IS NOT NULL THEN
        INSERT INTO audit_logs (created_at, user_id, signal_id, request_id, source_ip, user_agent, outcome,
                                reason, latency_ms, body_sha256, body, body_size, content_type)
        VALUES (p_received_at, p_user_id, signal_id, p_request_id, p_source_ip, p_user_agent, 'duplicate',
                'DUPLICATE', p_latency_ms, p_body_sha256_hex, p_audit_body, p_body_size, p_content_type);
        IF tat IS NOT NULL THEN
            UPDATE users SET rate_tat = tat WHERE id = p_user_id;
        END IF;
        outcome := 'duplicate';
        RETURN;
    END IF;

    used := account.signals_used;
    reset_at := account.quota_reset_at;
    IF reset_at <= p_now THEN
        used := 0;
        reset_at := p_next_quota_reset;
    END IF;
    IF used >= account.signals_quota THEN
        IF tat IS NOT NULL THEN
            UPDATE users SET rate_tat = tat WHERE id = p_user_id;
        END IF;
        outcome := 'quota_exceeded';
        quota := account.signals_quota;
        quota_resets_at := reset_at;
        RETURN;
    END IF;

    next_seq := account.event_seq + 1;
    UPDATE users SET signals_used = used + 1, quota_reset_at = reset_at, event_seq = next_seq,
                     rate_tat = COALESCE(tat, rate_tat), updated_at = now()
    WHERE id = p_user_id;
    INSERT INTO signals (id, user_id, chart_id, indicator, indicator_key, ticker, exchange, symbol, price,
                         signal_type, interval, alert_time, bar_time, fired_at, delayed_feed, parse_status,
                         parse_problems, extra, raw_body, content_type, body_sha256, source_ip,
                         idempotency_key, result, screenshot_status, created_at)
    VALUES (p_signal_id, p_user_id, COALESCE(NULLIF(p_chart_id, ''), config.default_chart_id), p_indicator,
            p_indicator_key, p_ticker, p_exchange, p_symbol, p_price, p_signal_type, p_interval, p_alert_time,
            p_bar_time, p_fired_at, p_delayed_feed, p_parse_status, p_parse_problems, p_extra,
            p_raw_body, p_content_type, p_body_sha256, p_source_ip, p_idempotency_key, 'pending',
            p_screenshot_status, p_received_at);
    IF p_outbox_queue IS NOT NULL THEN
        INSERT INTO screenshots (signal_id, user_id, status)
        VALUES (p_signal_id, p_user_id, p_screenshot_status);
        INSERT INTO outbox (queue_name, actor_name, args, options)
        VALUES (p_outbox_queue, p_outbox_actor, p_outbox_args, p_outbox_options);
    END IF;
    INSERT INTO signal_events (user_id, seq, type, signal_id)
    VALUES (p_user_id, next_seq, 'created', p_signal_id);
    PERFORM pg_notify(p_events_channel, p_user_id::text || ':' || next_seq);
    INSERT INTO audit_logs (created_at, user_id, signal_id, request_id, source_ip, user_agent, outcome,
                            reason, latency_ms, body_sha256, body, body_size, content_type)
    VALUES (p_received_at, p_user_id, p_signal_id, p_request_id, p_source_ip, p_user_agent, 'accepted', NULL,
            p_latency_ms, p_body_sha256_hex, p_audit_body, p_body_size, p_content_type);
    outcome := 'accepted';
    signal_id := p_signal_id;
    screenshot_status := p_screenshot_status;
END
$$
