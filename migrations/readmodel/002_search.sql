-- Search models of the PostgreSQL search adapter (search/postgres): one row per product and per order,
-- the fold of its stream, with a weighted tsvector of its searchable text. The projections
-- products-search and orders-search keep them; the query service searches them.
--
-- Text search uses the 'simple' configuration (lower-cased words, no stemming, no stop words), the
-- closest PostgreSQL has to Elasticsearch's standard analyzer. Typo tolerance comes from pg_trgm:
-- a word of a search is widened to the words of the vocabulary tables below that are within a small
-- edit distance, found with a trigram index (see search/postgres).

-- pg_trgm is a trusted extension with one installation per database, and tests migrate many schemas
-- of one database, each with a search_path of its own schema only. It is therefore installed in
-- public and every use is schema-qualified (public.gin_trgm_ops, OPERATOR(public.%),
-- public.similarity). Two sessions running CREATE EXTENSION IF NOT EXISTS at once can both find it
-- missing; the loser fails with a unique violation once the winner commits, and then it is there.
-- (tern's advisory lock already serialises strata's migrators; the handler covers other installers.)
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
EXCEPTION WHEN unique_violation OR duplicate_object THEN
    NULL; -- installed concurrently by another session
END
$$;

-- The searchable text of a product: name A, SKU, tags and category B, description C. IMMUTABLE (a
-- generated column needs it): array_to_string is only STABLE because of arbitrary element types; on
-- text[] it always gives the same answer. BEGIN ATOMIC binds the body's names at creation, so the
-- search_path at run time does not matter.
CREATE FUNCTION search_product_document(name text, sku text, tags text[], category text, description text)
    RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT setweight(to_tsvector('simple', name), 'A')
        || setweight(to_tsvector('simple', sku || ' ' || array_to_string(tags, ' ') || ' ' || category), 'B')
        || setweight(to_tsvector('simple', description), 'C');
END;

-- The searchable text of an order: customer name and email A (the email also as its local part and
-- its domain, as Elasticsearch's standard tokenizer splits it), SKUs and product names of the lines B.
CREATE FUNCTION search_order_document(customer_name text, customer_email text, skus text[], product_names text[])
    RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT setweight(to_tsvector('simple', customer_name || ' ' || customer_email || ' ' || translate(customer_email, '@', ' ')), 'A')
        || setweight(to_tsvector('simple', array_to_string(skus, ' ') || ' ' || array_to_string(product_names, ' ')), 'B');
END;

-- The document is a stored generated column: it cannot disagree with the fields, and an update that
-- does not touch them (stock, price, status) does not recompute it. fillfactor leaves room on each
-- page, so that such updates stay HOT (no index entries) as long as they change no indexed column.
CREATE TABLE search_products (
    id           uuid        PRIMARY KEY,
    sku          text        NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL,
    category     text        COLLATE "C" NOT NULL,
    price_cents  bigint      NOT NULL,
    currency     text        NOT NULL,
    tags         text[]      NOT NULL,
    stock        bigint      NOT NULL DEFAULT 0,
    discontinued boolean     NOT NULL DEFAULT false,
    version      bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    document     tsvector    NOT NULL
        GENERATED ALWAYS AS (search_product_document(name, sku, tags, category, description)) STORED
) WITH (fillfactor = 90);

CREATE INDEX search_products_document ON search_products USING gin (document);
-- Sorts, each ending with the id; names sort case-insensitively by code point (as Elasticsearch's
-- lowercase keyword), whatever the database's collation.
CREATE INDEX search_products_name ON search_products ((lower(name) COLLATE "C"), id);
CREATE INDEX search_products_price ON search_products (price_cents, id);
CREATE INDEX search_products_newest ON search_products (created_at DESC, id);
CREATE INDEX search_products_category ON search_products (category);

CREATE TABLE search_orders (
    id             uuid        PRIMARY KEY,
    customer_id    text        NOT NULL,
    customer_name  text        NOT NULL,
    customer_email text        NOT NULL,
    status         text        COLLATE "C" NOT NULL,
    skus           text[]      NOT NULL,
    product_names  text[]      NOT NULL,
    total_cents    bigint      NOT NULL,
    currency       text        NOT NULL,
    version        bigint      NOT NULL,
    placed_at      timestamptz NOT NULL,
    document       tsvector    NOT NULL
        GENERATED ALWAYS AS (search_order_document(customer_name, customer_email, skus, product_names)) STORED
) WITH (fillfactor = 90);

CREATE INDEX search_orders_document ON search_orders USING gin (document);
CREATE INDEX search_orders_newest ON search_orders (placed_at DESC, id);
CREATE INDEX search_orders_status ON search_orders (status, placed_at DESC, id);

-- The vocabularies: every word (lexeme with a letter) that a product or order document has ever
-- had, for typo correction. Words are only added, never removed: a stale word widens a search to a
-- word no document has, which matches nothing. There is deliberately no unique constraint: inserts
-- skip words already committed, and two projector transactions that add the same new word at once
-- both keep it (a harmless duplicate that searches group away). With a unique constraint, two
-- partitions adding the same new words in different orders would wait on each other and deadlock.
CREATE TABLE search_product_words (
    word text NOT NULL
);

CREATE INDEX search_product_words_word ON search_product_words (word);
CREATE INDEX search_product_words_trgm ON search_product_words USING gin (word public.gin_trgm_ops);

CREATE TABLE search_order_words (
    word text NOT NULL
);

CREATE INDEX search_order_words_word ON search_order_words (word);
CREATE INDEX search_order_words_trgm ON search_order_words USING gin (word public.gin_trgm_ops);

---- create above / drop below ----

-- The pg_trgm extension stays: other schemas of the database may use it.
DROP TABLE search_order_words;
DROP TABLE search_product_words;
DROP TABLE search_orders;
DROP TABLE search_products;
DROP FUNCTION search_order_document(text, text, text[], text[]);
DROP FUNCTION search_product_document(text, text, text[], text, text);
