-- The relay's checkpoint: the global position of the last event whose publish JetStream acknowledged,
-- in order. Positions are stored as bigint: PostgreSQL transaction ids (xid8) and EventStoreDB
-- positions both stay far below 2^63.
CREATE TABLE relay_checkpoints (
    name             text        PRIMARY KEY,
    commit_position  bigint      NOT NULL,
    prepare_position bigint      NOT NULL,
    event_id         text        NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

---- create above / drop below ----

DROP TABLE relay_checkpoints;
