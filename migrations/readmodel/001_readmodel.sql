-- Read models of the query service, and the bookkeeping that makes projections exactly-once in
-- effect. Projectors write here; the query service only reads (and LISTENs).

-- projection_streams is the version guard: per projection, the version of every stream it has
-- applied. A projector updates it in the same transaction as the read-model change, so an event is
-- applied once however often it is delivered. The query service reads it to decide whether a
-- consistency token is satisfied. After a commit, projectors NOTIFY channel strata_projection with
-- the projection's name as payload.
CREATE TABLE projection_streams (
    projection text   NOT NULL,
    stream     text   NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (projection, stream)
);

-- Per projection and partition, how far the durable JetStream consumer got (stream sequence), and
-- when: the admin API reports lag from it.
CREATE TABLE projection_checkpoints (
    projection      text        NOT NULL,
    partition       int         NOT NULL,
    stream_sequence bigint      NOT NULL,
    position        text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition)
);

-- Events a projection failed to apply after its retries, parked per stream: while a stream has a
-- parked event, its later events are parked behind it (status 'waiting'), other streams carry on.
CREATE TABLE dead_letters (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection   text        NOT NULL,
    stream       text        NOT NULL,
    version      bigint      NOT NULL,
    event_id     text        NOT NULL,
    event_type   text        NOT NULL,
    headers      jsonb       NOT NULL,
    data         bytea       NOT NULL,
    status       text        NOT NULL CHECK (status IN ('parked', 'waiting')),
    error        text        NOT NULL,
    attempts     int         NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, stream, version)
);

CREATE INDEX dead_letters_stream ON dead_letters (projection, stream, version);

CREATE TABLE products (
    id           uuid        PRIMARY KEY,
    sku          text        NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL,
    category     text        NOT NULL,
    price_cents  bigint      NOT NULL,
    currency     text        NOT NULL,
    tags         text[]      NOT NULL,
    stock        bigint      NOT NULL,
    discontinued boolean     NOT NULL DEFAULT false,
    version      bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- Listing by category pages by (name, id).
CREATE INDEX products_category_name ON products (category, name, id);
CREATE INDEX products_name ON products (name, id);

CREATE TABLE orders (
    id             uuid        PRIMARY KEY,
    customer_id    text        NOT NULL,
    customer_name  text        NOT NULL,
    customer_email text        NOT NULL,
    status         text        NOT NULL,
    currency       text        NOT NULL,
    total_cents    bigint      NOT NULL,
    callback_url   text        NOT NULL DEFAULT '',
    reason         text        NOT NULL DEFAULT '',
    carrier        text        NOT NULL DEFAULT '',
    tracking_number text       NOT NULL DEFAULT '',
    version        bigint      NOT NULL,
    placed_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- A customer's orders, newest first, paged by (placed_at, id).
CREATE INDEX orders_customer ON orders (customer_id, placed_at DESC, id DESC);

CREATE TABLE order_lines (
    order_id         uuid   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          int    NOT NULL,
    product_id       uuid   NOT NULL,
    sku              text   NOT NULL,
    name             text   NOT NULL,
    quantity         bigint NOT NULL,
    unit_price_cents bigint NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE order_status_history (
    order_id uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    version  bigint      NOT NULL,
    status   text        NOT NULL,
    reason   text        NOT NULL DEFAULT '',
    at       timestamptz NOT NULL,
    PRIMARY KEY (order_id, version)
);

---- create above / drop below ----

DROP TABLE order_status_history;
DROP TABLE order_lines;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE dead_letters;
DROP TABLE projection_checkpoints;
DROP TABLE projection_streams;
