-- With PostgreSQL full-text search, the products and orders projections now keep the search models
-- in their own transactions (projector.Combine), and the products-search and orders-search
-- projections are gone. Where they ran, their progress is folded into the projection that took them
-- over, so that nothing the search models had not applied yet is skipped:
--   * each partition resumes from the lower of the two checkpoints (the read-model statements carry
--     version guards, so what the read models already have is applied again to no effect);
--   * a stream counts as applied only as far as both had applied it, so a consistency token is not
--     satisfied before the search model has caught up;
--   * parked events move to the projection that now applies them.
-- Deployments that never ran them (Elasticsearch search) have no such rows: nothing changes.

INSERT INTO projection_checkpoints (projection, partition, stream_sequence, position, updated_at)
SELECT replace(projection, '-search', ''), partition, stream_sequence, position, updated_at
FROM projection_checkpoints WHERE projection IN ('products-search', 'orders-search')
ON CONFLICT (projection, partition) DO UPDATE
SET stream_sequence = excluded.stream_sequence, position = excluded.position
WHERE projection_checkpoints.stream_sequence > excluded.stream_sequence;

DELETE FROM projection_streams AS p
WHERE p.projection IN ('products', 'orders')
  AND EXISTS (SELECT FROM projection_checkpoints AS c WHERE c.projection = p.projection || '-search')
  AND NOT EXISTS (SELECT FROM projection_streams AS s WHERE s.projection = p.projection || '-search' AND s.stream = p.stream);

UPDATE projection_streams AS p SET version = s.version
FROM projection_streams AS s
WHERE s.projection = p.projection || '-search' AND p.projection IN ('products', 'orders')
  AND s.stream = p.stream AND s.version < p.version;

UPDATE dead_letters AS d SET projection = replace(d.projection, '-search', '')
WHERE d.projection IN ('products-search', 'orders-search')
  AND NOT EXISTS (SELECT FROM dead_letters AS o
                  WHERE o.projection = replace(d.projection, '-search', '') AND o.stream = d.stream AND o.version = d.version);

DELETE FROM dead_letters WHERE projection IN ('products-search', 'orders-search');
DELETE FROM projection_streams WHERE projection IN ('products-search', 'orders-search');
DELETE FROM projection_checkpoints WHERE projection IN ('products-search', 'orders-search');

---- create above / drop below ----

-- The folded progress is not split apart again: an older strata starts products-search and
-- orders-search from scratch, and their statements' version guards make that safe.
