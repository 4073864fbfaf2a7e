-- One spelling of a timestamp in the event log (ISO-8601 UTC, microseconds), used by every
-- statement that writes one.
CREATE OR REPLACE FUNCTION mediad_timestamp(at timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION mediad_event(name text, status text, details jsonb)
RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object(
        'timestamp', mediad_timestamp(clock_timestamp()),
        'event', name,
        'status', status,
        'details', COALESCE(details, '{}'::jsonb))
$$;
