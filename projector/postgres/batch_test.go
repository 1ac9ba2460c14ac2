package postgres_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	rmpg "github.com/strata-dev/strata/projector/postgres"
)

// randomProductEvents returns the histories of n products, interleaved at random with each stream
// kept in order, followed by a redelivery of a random stretch of them.
func randomProductEvents(n, perProduct int) []events.Envelope {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var streams [][]events.Envelope
	for i := range n {
		id := uuid.NewString()
		stream := events.StreamName(events.ProductAggregate, id)
		evs := []events.Event{events.ProductCreatedV1{ProductID: id, SKU: fmt.Sprintf("SKU-%d", i), Name: "n", Description: "d",
			Category: "c", PriceCents: 100, Currency: "EUR", Tags: []string{"t"}}}
		stock := int64(0)
		for len(evs) < perProduct {
			switch rand.IntN(7) {
			case 0:
				evs = append(evs, events.ProductRenamedV1{ProductID: id, Name: fmt.Sprintf("name %d", rand.IntN(100))})
			case 1:
				evs = append(evs, events.ProductRepricedV1{ProductID: id, PriceCents: int64(rand.IntN(1000) + 1)})
			case 2, 3:
				stock += int64(rand.IntN(10) + 1)
				evs = append(evs, events.ProductStockAdjustedV1{ProductID: id, Delta: 1, Reason: "r", Stock: stock})
			case 4:
				stock--
				evs = append(evs, events.ProductStockReservedV1{ProductID: id, OrderID: uuid.NewString(), Quantity: 1, Stock: stock})
			case 5:
				stock++
				evs = append(evs, events.ProductStockReleasedV1{ProductID: id, OrderID: uuid.NewString(), Quantity: 1, Reason: "r", Stock: stock})
			case 6:
				if rand.IntN(5) == 0 {
					evs = append(evs, events.ProductDiscontinuedV1{ProductID: id, Reason: "r"})
				}
			}
		}
		var envs []events.Envelope
		for v, e := range evs {
			at = at.Add(time.Second)
			envs = append(envs, events.Envelope{Stream: stream, Version: uint64(v + 1), OccurredAt: at, Type: e.EventType(), Event: e})
		}
		streams = append(streams, envs)
	}
	var out []events.Envelope
	for len(streams) > 0 {
		i := rand.IntN(len(streams))
		out = append(out, streams[i][0])
		if streams[i] = streams[i][1:]; len(streams[i]) == 0 {
			streams = append(streams[:i], streams[i+1:]...)
		}
	}
	from := rand.IntN(len(out))
	return append(out, out[from:from+rand.IntN(len(out)-from)]...)
}

func readModelPool(t *testing.T) *pgxpool.Pool {
	pool := pgtest.Pool(t, 4)
	require.NoError(t, migrations.Apply(t.Context(), pool, migrations.ReadModel))
	return pool
}

func productRows(t *testing.T, pool *pgxpool.Pool) []string {
	rows, err := pool.Query(t.Context(), `SELECT p::text FROM products AS p ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestProductsApplyBatchEqualsApplyingOneByOne: the set-based statements of a batch must leave the
// products table exactly as applying its events one at a time does, redeliveries included.
// Few products make a product's consecutive events of one column common; many make long runs.
func TestProductsApplyBatchEqualsApplyingOneByOne(t *testing.T) {
	t.Parallel()
	for _, products := range []int{2, 3, 12} {
		t.Run(fmt.Sprintf("products=%d", products), func(t *testing.T) {
			t.Parallel()
			evs := randomProductEvents(products, 60)
			batched, single := readModelPool(t), readModelPool(t)
			for rest := evs; len(rest) > 0; {
				n := min(rand.IntN(64)+1, len(rest))
				require.NoError(t, projector.Apply(t.Context(), batched, rmpg.Products{}, rest[:n]))
				rest = rest[n:]
			}
			for _, e := range evs {
				require.NoError(t, projector.Apply(t.Context(), single, rmpg.Products{}, []events.Envelope{e}))
			}
			want := productRows(t, single)
			require.Len(t, want, products)
			require.Equal(t, want, productRows(t, batched))
		})
	}
}

// TestProductsApplyBatchIsSetBased: a batch changing one column of many products is one statement.
func TestProductsApplyBatchIsSetBased(t *testing.T) {
	var evs []events.Envelope
	for i := range 100 {
		id := uuid.NewString()
		evs = append(evs, events.Envelope{Stream: events.StreamName(events.ProductAggregate, id), Version: 2,
			Event: events.ProductStockAdjustedV1{ProductID: id, Delta: 1, Reason: "r", Stock: int64(i)}})
	}
	b := &pgx.Batch{}
	require.NoError(t, rmpg.Products{}.ApplyBatch(b, evs))
	require.Equal(t, 1, b.Len())

	// The same product twice needs two statements: the second must see the first's version.
	b = &pgx.Batch{}
	require.NoError(t, rmpg.Products{}.ApplyBatch(b, []events.Envelope{evs[0], evs[1], evs[0]}))
	require.Equal(t, 2, b.Len())

	// Two spellings of one product's id are one row.
	upper := evs[0]
	_, id, _ := events.SplitStream(upper.Stream)
	upper.Stream = events.StreamName(events.ProductAggregate, strings.ToUpper(id))
	b = &pgx.Batch{}
	require.NoError(t, rmpg.Products{}.ApplyBatch(b, []events.Envelope{evs[0], upper}))
	require.Equal(t, 2, b.Len())

	// Mixed columns take a statement per column.
	renamed := evs[2]
	renamed.Event = events.ProductRenamedV1{Name: "n"}
	b = &pgx.Batch{}
	require.NoError(t, rmpg.Products{}.ApplyBatch(b, append([]events.Envelope{renamed}, evs[3:]...)))
	require.Equal(t, 2, b.Len())
}
