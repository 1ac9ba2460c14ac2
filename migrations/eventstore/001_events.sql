-- The event store. Global order is (transaction_id, position), not position alone: sequence values are
-- taken before commit, so positions become visible out of order, and a reader that advanced past a
-- gap would lose the late event for good. Readers only see rows whose transaction is older than every
-- transaction still running (pg_snapshot_xmin), and no later transaction can get a smaller id.
CREATE TABLE events (
    position       bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    schema_version int         NOT NULL,
    -- json, not jsonb: the store keeps the payload byte for byte, as the codec wrote it.
    data           json        NOT NULL,
    metadata       json        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);

CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE UNIQUE INDEX events_global_order ON events (transaction_id, position);

-- append_events appends to one stream in a single round trip. p_expected is -1 for "any version",
-- otherwise the number of events the stream must hold (0: the stream must not exist).
--
-- The per-stream advisory lock is taken before the transaction writes anything, hence before it is
-- given a transaction id: of two appends to one stream, the later one is given the larger id, so the
-- global order agrees with every stream's order. Writers of different streams never wait on each
-- other (no counter row).
CREATE FUNCTION append_events(
    p_stream          text,
    p_expected        bigint,
    p_ids             uuid[],
    p_types           text[],
    p_schema_versions int[],
    p_data            json[],
    p_metadata        json[],
    p_occurred_at     timestamptz[]
) RETURNS TABLE (first_version bigint, last_version bigint, commit_position text, prepare_position bigint, duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_count    int := cardinality(p_ids);
    v_current  bigint;
    v_stream   text;
    v_version  bigint;
    v_matching int;
    v_last     bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream, 0));

    -- A repeat of an earlier append (a retry after a lost reply) stores nothing and reports the
    -- earlier result, whatever p_expected says.
    SELECT e.stream_id, e.version INTO v_stream, v_version FROM events e WHERE e.event_id = p_ids[1];
    IF FOUND THEN
        SELECT count(*) INTO v_matching
        FROM unnest(p_ids) WITH ORDINALITY AS x(id, ord)
        JOIN events e ON e.event_id = x.id AND e.stream_id = p_stream AND e.version = v_version + x.ord - 1;
        IF v_stream <> p_stream OR v_matching <> v_count THEN
            RAISE EXCEPTION 'event % is already stored in stream % at version %', p_ids[1], v_stream, v_version
                USING ERRCODE = 'SE002';
        END IF;
        RETURN QUERY
            SELECT v_version, v_version + v_count - 1, e.transaction_id::text, e.position, true
            FROM events e WHERE e.stream_id = p_stream AND e.version = v_version + v_count - 1;
        RETURN;
    END IF;

    SELECT coalesce(max(e.version), 0) INTO v_current FROM events e WHERE e.stream_id = p_stream;
    IF p_expected >= 0 AND v_current <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, expected %', p_stream, v_current, p_expected
            USING ERRCODE = 'SE001', DETAIL = v_current::text;
    END IF;

    IF v_count = 1 THEN
        -- The common case, without unnest, sort and CTE.
        INSERT INTO events (event_id, stream_id, version, type, schema_version, data, metadata, occurred_at)
        VALUES (p_ids[1], p_stream, v_current + 1, p_types[1], p_schema_versions[1], p_data[1], p_metadata[1], p_occurred_at[1])
        RETURNING position INTO v_last;
    ELSE
        WITH inserted AS (
            INSERT INTO events (event_id, stream_id, version, type, schema_version, data, metadata, occurred_at)
            SELECT x.id, p_stream, v_current + x.ord, x.type, x.sv, x.data, x.md, x.oc
            FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_metadata, p_occurred_at)
                 WITH ORDINALITY AS x(id, type, sv, data, md, oc, ord)
            ORDER BY x.ord
            RETURNING position
        )
        SELECT max(position) INTO v_last FROM inserted;
    END IF;

    RETURN QUERY SELECT v_current + 1, v_current + v_count, pg_current_xact_id()::text, v_last, false;
END;
$$;

---- create above / drop below ----

DROP FUNCTION append_events(text, bigint, uuid[], text[], int[], json[], json[], timestamptz[]);
DROP TABLE events;
