-- The event store. Global order is (transaction_id, position), not position alone: sequence values are
-- taken before commit, so positions become visible out of order, and a reader that advanced past a
-- gap would lose the late event for good. Readers only see rows whose transaction is older than every
-- transaction still running (pg_snapshot_xmin), and no later transaction can get a smaller id.
-- Appends are single INSERT statements; eventstore/postgres/store.go explains why that keeps the
-- global order consistent with every stream's versions.
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

---- create above / drop below ----

DROP TABLE events;
