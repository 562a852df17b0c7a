-- The notification feed: for each signal event, the deliveries it makes due and one outbox message for the
-- notify workers, in the event's own transaction. A trigger on signal_events, so the statements that write
-- events (ingest_webhook() among them) need not know about notifications.
--
-- created: an 'alert' delivery per enabled channel whose filters the signal passes.
-- screenshot_updated to completed: a 'photo' delivery per channel that has an alert (Telegram only when
--   with_screenshot); the worker skips it when the alert itself went out with the photo.
-- outcome_updated: an 'outcome' delivery per channel that has an alert; a later change re-arms it.
--
-- Statements are separated by '-- statement' lines (a driver runs one statement per call).
CREATE OR REPLACE FUNCTION notify_feed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prefs jsonb;
    channels text[];
    sig record;
    changed integer := 0;
BEGIN
    SELECT notification_preferences INTO prefs FROM user_config WHERE user_id = NEW.user_id;
    IF prefs IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(channel) INTO channels
    FROM unnest(ARRAY['telegram', 'discord', 'webhook']) AS channel
    WHERE jsonb_typeof(prefs -> channel) = 'object'
      AND COALESCE((prefs -> channel ->> 'enabled')::boolean, true);
    IF channels IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT s.indicator, s.ticker, s.symbol, s.signal_type, s.screenshot_status INTO sig
    FROM signals s WHERE s.id = NEW.signal_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF NEW.type = 'created' THEN
        IF NOT notify_filter_allows(prefs -> 'filters' -> 'indicators', ARRAY[sig.indicator])
           OR NOT notify_filter_allows(prefs -> 'filters' -> 'tickers', ARRAY[sig.ticker, sig.symbol])
           OR NOT notify_filter_allows(prefs -> 'filters' -> 'signal_types', ARRAY[sig.signal_type]) THEN
            RETURN NULL;
        END IF;
        INSERT INTO notification_deliveries (signal_id, user_id, channel, kind)
        SELECT NEW.signal_id, NEW.user_id, channel, 'alert' FROM unnest(channels) AS channel
        ON CONFLICT (signal_id, channel, kind) DO NOTHING;
        GET DIAGNOSTICS changed = ROW_COUNT;
    ELSIF NEW.type = 'screenshot_updated' AND sig.screenshot_status = 'completed' THEN
        INSERT INTO notification_deliveries (signal_id, user_id, channel, kind)
        SELECT d.signal_id, d.user_id, d.channel, 'photo' FROM notification_deliveries d
        WHERE d.signal_id = NEW.signal_id AND d.kind = 'alert' AND d.channel = ANY (channels)
          AND (d.channel <> 'telegram'
               OR COALESCE((prefs -> 'telegram' ->> 'with_screenshot')::boolean, true))
        ON CONFLICT (signal_id, channel, kind) DO NOTHING;
        GET DIAGNOSTICS changed = ROW_COUNT;
    ELSIF NEW.type = 'outcome_updated' THEN
        INSERT INTO notification_deliveries (signal_id, user_id, channel, kind)
        SELECT d.signal_id, d.user_id, d.channel, 'outcome' FROM notification_deliveries d
        WHERE d.signal_id = NEW.signal_id AND d.kind = 'alert' AND d.channel = ANY (channels)
        ON CONFLICT (signal_id, channel, kind) DO UPDATE
            SET status = 'pending', attempts = 0, last_error = NULL, lease_until = NULL,
                revision = notification_deliveries.revision + 1, updated_at = now();
        GET DIAGNOSTICS changed = ROW_COUNT;
    END IF;

    IF changed > 0 THEN
        INSERT INTO outbox (queue_name, actor_name, args, options)
        VALUES ('notify', 'deliver_notifications', jsonb_build_array(NEW.signal_id::text), '{}'::jsonb);
    END IF;
    RETURN NULL;
END;
$$;

-- statement
-- An empty or absent filter allows everything; otherwise one of the values must be in it, ignoring case.
CREATE OR REPLACE FUNCTION notify_filter_allows(filter jsonb, candidates text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT filter IS NULL OR jsonb_typeof(filter) <> 'array' OR jsonb_array_length(filter) = 0
        OR EXISTS (
            SELECT 1 FROM jsonb_array_elements_text(filter) AS allowed, unnest(candidates) AS candidate
            WHERE candidate IS NOT NULL AND lower(allowed) = lower(candidate)
        )
$$;

-- statement
CREATE TRIGGER signal_events_notify_feed
AFTER INSERT ON signal_events
FOR EACH ROW
WHEN (NEW.signal_id IS NOT NULL AND NEW.type IN ('created', 'screenshot_updated', 'outcome_updated'))
EXECUTE FUNCTION notify_feed();
