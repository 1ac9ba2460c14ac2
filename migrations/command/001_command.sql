-- Responses of commands sent with an Idempotency-Key, replayed to retries. request_hash covers method,
-- path and body, so reusing a key for another request is detected. status 0 marks a key whose first
-- request is still in flight (reserved before it runs, dropped if it fails). Old keys are purged by
-- age.
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    status       int         NOT NULL,
    headers      jsonb       NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- One row per SKU ever claimed. The claim is taken before the product.created event is appended; a
-- claim whose product stream never came to exist (a crash in between) may be taken over after a grace
-- period, see command/skus.go.
CREATE TABLE product_skus (
    sku        text        PRIMARY KEY,
    product_id text        NOT NULL UNIQUE,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

---- create above / drop below ----

DROP TABLE product_skus;
DROP TABLE idempotency_keys;
