package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	"github.com/strata-dev/strata/search/postgres"
	"github.com/strata-dev/strata/search/searchtest"
)

func TestContract(t *testing.T) {
	searchtest.Run(t, func(t *testing.T) searchtest.Engine {
		pool := newPool(t)
		return searchtest.Engine{Index: postgres.New(pool), Project: func(t *testing.T, evs []events.Envelope) { project(t, pool, evs) }}
	})
}

// newPool returns a pool on a fresh schema with the read models.
func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.Pool(t, 4)
	require.NoError(t, migrations.Apply(t.Context(), pool, migrations.ReadModel))
	return pool
}

// project applies evs through the search projections as the projector runtime does: each
// projection gets the events of its aggregate type, in order, in one transaction.
func project(t *testing.T, pool *pgxpool.Pool, evs []events.Envelope) {
	t.Helper()
	for _, p := range []projector.Projection{postgres.Products{}, postgres.Orders{}} {
		var mine []events.Envelope
		for _, e := range evs {
			if typ, _, _ := events.SplitStream(e.Stream); typ == p.AggregateTypes()[0] {
				mine = append(mine, e)
			}
		}
		require.NoError(t, projector.Apply(t.Context(), pool, p, mine), p.Name())
	}
}
