package migrations_test

import (
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
)

// TestSearchProjectionsFoldIntoTheReadModels runs migration 004 on the state a strata with separate
// products-search and orders-search projections left: the combined projections must resume where
// the slower of the two was, count a stream as applied only as far as both had, and keep its dead
// letters.
func TestSearchProjectionsFoldIntoTheReadModels(t *testing.T) {
	pool := pgtest.Pool(t, 2)
	ctx := t.Context()
	require.NoError(t, migrations.Apply(ctx, pool, migrations.ReadModel))
	up, err := os.ReadFile("readmodel/004_search_in_read_model_projections.sql")
	require.NoError(t, err)
	migration, _, ok := strings.Cut(string(up), "---- create above / drop below ----")
	require.True(t, ok)

	_, err = pool.Exec(ctx, `
		INSERT INTO projection_checkpoints (projection, partition, stream_sequence, position) VALUES
			('products', 0, 100, '1/100'), ('products-search', 0, 80, '1/80'),  -- search behind
			('products', 1, 50, '1/50'), ('products-search', 1, 70, '1/70'),   -- search ahead
			('products-search', 2, 30, '1/30'),                                -- only search
			('orders', 0, 40, '1/40');                                         -- no orders-search
		INSERT INTO projection_streams (projection, stream, version) VALUES
			('products', 'product-a', 5), ('products-search', 'product-a', 3),
			('products', 'product-b', 2), ('products-search', 'product-b', 4),
			('products', 'product-c', 7),
			('orders', 'order-a', 3);
		INSERT INTO dead_letters (projection, stream, version, event_id, event_type, headers, data, status, error, attempts) VALUES
			('products-search', 'product-d', 2, 'e1', 'product.renamed', '{}', '', 'parked', 'boom', 1),
			('products-search', 'product-e', 1, 'e2', 'product.created', '{}', '', 'parked', 'boom', 1),
			('products', 'product-e', 1, 'e2', 'product.created', '{}', '', 'parked', 'boom', 1)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, migration)
	require.NoError(t, err)

	rows := func(sql string) []string {
		r, err := pool.Query(ctx, sql)
		require.NoError(t, err)
		out, err := pgx.CollectRows(r, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	require.Equal(t, []string{"orders/0@40 1/40", "products/0@80 1/80", "products/1@50 1/50", "products/2@30 1/30"},
		rows(`SELECT format('%s/%s@%s %s', projection, partition, stream_sequence, position) FROM projection_checkpoints ORDER BY 1`))
	require.Equal(t, []string{"orders order-a 3", "products product-a 3", "products product-b 2"},
		rows(`SELECT format('%s %s %s', projection, stream, version) FROM projection_streams ORDER BY 1`),
		"product-c, which the search model never applied, counts as not applied")
	require.Equal(t, []string{"products product-d 2", "products product-e 1"},
		rows(`SELECT format('%s %s %s', projection, stream, version) FROM dead_letters ORDER BY 1`))
}
