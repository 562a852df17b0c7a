CREATE TYPE ingest_webhook_row AS (
    user_id uuid, token_hash text, plan text, ip_allowlist text[], require_tradingview_client_certificate boolean,
    now timestamptz, next_quota_reset timestamptz, idempotency_key text, body_sha256 bytea,
    dedupe_since timestamptz, dedupe_until timestamptz,
    signal_id uuid, chart_id text, indicator text, indicator_key text, ticker text,
    exchange text, symbol text, price numeric, signal_type text, interval text,
    alert_time timestamptz, bar_time timestamptz, fired_at timestamptz, delayed_feed boolean,
    parse_status text, parse_problems jsonb, extra jsonb, raw_body bytea, content_type text, source_ip text,
    received_at timestamptz, screenshot_status text,
    outbox_queue text, outbox_actor text, outbox_args jsonb, outbox_options jsonb,
    request_id text, user_agent text, latency_ms double precision, body_size bigint,
    rate_interval interval, rate_burst integer
)
