package search_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/bench"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	"github.com/strata-dev/strata/search"
	"github.com/strata-dev/strata/search/elasticsearch"
	searchpg "github.com/strata-dev/strata/search/postgres"
)

// Vocabulary of the synthetic catalog: names are an adjective and a noun, descriptions a few more
// words, so that two-word queries match a realistic share of the catalog.
var (
	adjectives = []string{"wireless", "compact", "portable", "classic", "smart", "electric", "wooden", "steel", "organic",
		"vintage", "ergonomic", "waterproof", "silent", "foldable", "premium", "bamboo", "ceramic", "digital", "solar", "mini"}
	nouns = []string{"speaker", "headphones", "lamp", "kettle", "chair", "desk", "blender", "backpack", "camera", "watch",
		"mug", "charger", "keyboard", "mouse", "monitor", "toaster", "heater", "fan", "bottle", "tent", "jacket",
		"router", "drill", "scale", "pillow", "blanket", "grinder", "tripod", "drone", "helmet"}
	fillers = []string{"with", "for", "daily", "use", "travel", "home", "office", "garden", "kitchen", "outdoor",
		"gift", "durable", "light", "warm", "fast", "quiet", "modern", "easy", "clean", "strong"}
	categories = []string{"audio", "home", "kitchen", "office", "outdoor", "sport", "garden", "tools", "photo", "fashion",
		"toys", "health", "beauty", "books", "games", "pets", "baby", "auto", "music", "crafts"}
)

const benchPartitions = 8 // the projector's default: this many batches are applied at once

// BenchmarkSearch measures both search engines in one run, on the same synthetic catalog of
// STRATA_BENCH_PRODUCTS products (default 100,000; Elasticsearch only when ELASTICSEARCH_URL is set):
//
//   - indexing: each product's product.created and a stock adjustment (2 events per product) applied
//     through the projections' own code path (projector.Apply: the statements, or the bulk request,
//     and the stream versions in PostgreSQL), in batches of 512 from 8 writers at once as the
//     projector's 8 partitions would; reported as index-events/s. This is the throughput of a
//     rebuild-sized backlog without NATS in the way.
//   - search latency, p50 and p99 over 400 searches of each kind, one at a time: two words ("compact
//     speaker"), one word and one filter (category), facets only (in_stock, no text: every product
//     counted by category), and a typo ("hedphones").
//   - the cost of reading your own write: 200 times, one product is renamed (a batch of one event),
//     then made searchable (Index.Refresh, which a token-bearing search calls: an explicit _refresh
//     on Elasticsearch, nothing on PostgreSQL, whose projection commits in the same transaction) and
//     searched for by its new name. Reported: p50 and p99 of the refresh alone and of the write until
//     the search found it.
func BenchmarkSearch(b *testing.B) {
	n := 100_000
	if s := os.Getenv("STRATA_BENCH_PRODUCTS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err, "STRATA_BENCH_PRODUCTS")
	}
	catalog := syntheticCatalog(n)
	if load, ok := bench.LoadAverage(); ok {
		b.Logf("load average before the run: %.2f", load)
	}
	b.Run("engine=postgres", func(b *testing.B) {
		pool := benchPool(b)
		idx := searchpg.New(pool)
		benchEngine(b, pool, idx, searchpg.Products{}, catalog)
	})
	b.Run("engine=elasticsearch", func(b *testing.B) {
		url := os.Getenv("ELASTICSEARCH_URL")
		if url == "" {
			b.Skip("ELASTICSEARCH_URL is not set: make bench starts Elasticsearch with deploy/elasticsearch.sh")
		}
		var r [5]byte
		_, _ = rand.Read(r[:])
		prefix := "strata-bench-" + hex.EncodeToString(r[:])
		idx, err := elasticsearch.New(elasticsearch.Options{URLs: []string{url}, Prefix: prefix})
		require.NoError(b, err)
		require.NoError(b, idx.Setup(b.Context()))
		b.Cleanup(func() { _ = idx.Drop(context.Background()) })
		benchEngine(b, benchPool(b), idx, idx.Products(), catalog)
	})
}

func benchEngine(b *testing.B, pool *pgxpool.Pool, idx search.Index, proj projector.Projection, catalog [][]events.Envelope) {
	ctx := b.Context()
	for range b.N {
		total := 0
		for _, part := range catalog {
			total += len(part)
		}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(catalog))
		for _, part := range catalog {
			wg.Go(func() {
				for len(part) > 0 {
					batch := part[:min(512, len(part))]
					part = part[len(batch):]
					if err := projector.Apply(ctx, pool, proj, batch); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		require.NoError(b, <-errs)
		require.NoError(b, idx.Refresh(ctx))
		elapsed := time.Since(start)
		b.ReportMetric(float64(total)/elapsed.Seconds(), "index-events/s")

		all, err := idx.SearchProducts(ctx, search.ProductQuery{Limit: 1})
		require.NoError(b, err)
		require.EqualValues(b, total/2, all.Total, "every product is searchable")

		rng := mrand.New(mrand.NewPCG(1, 2))
		kinds := []struct {
			name  string
			query func() search.ProductQuery
		}{
			{"two-words", func() search.ProductQuery {
				return search.ProductQuery{Text: pick(rng, adjectives) + " " + pick(rng, nouns)}
			}},
			{"word-and-filter", func() search.ProductQuery {
				return search.ProductQuery{Text: pick(rng, nouns), Category: pick(rng, categories)}
			}},
			{"facets", func() search.ProductQuery {
				return search.ProductQuery{InStock: ptr(true), Limit: 1}
			}},
			{"typo", func() search.ProductQuery { return search.ProductQuery{Text: "hedphones"} }},
		}
		for _, k := range kinds {
			var ds []time.Duration
			var hits int64
			for range 400 {
				q := k.query()
				t0 := time.Now()
				res, err := idx.SearchProducts(ctx, q)
				ds = append(ds, time.Since(t0))
				require.NoError(b, err, "%+v", q)
				hits += res.Total
			}
			require.NotZero(b, hits, "%s searches find something", k.name)
			reportLatency(b, k.name, ds)
		}

		// Read your own write: rename, refresh, search for the new name.
		var refreshes, visible []time.Duration
		for i := range 200 {
			e := catalog[i%len(catalog)][2*(i/len(catalog))] // a product.created event
			id := e.Event.(events.ProductCreatedV1).ProductID
			word := fmt.Sprintf("renamed%dq", i)
			rename := events.Envelope{ID: uuid.NewString(), Stream: e.Stream, Version: uint64(3 + i), Type: "product.renamed",
				SchemaVersion: 1, OccurredAt: e.OccurredAt, Event: events.ProductRenamedV1{ProductID: id, Name: "Bench " + word}}
			t0 := time.Now()
			require.NoError(b, projector.Apply(ctx, pool, proj, []events.Envelope{rename}))
			t1 := time.Now()
			require.NoError(b, idx.Refresh(ctx))
			refreshes = append(refreshes, time.Since(t1))
			res, err := idx.SearchProducts(ctx, search.ProductQuery{Text: word})
			require.NoError(b, err)
			visible = append(visible, time.Since(t0))
			require.Len(b, res.Items, 1, "the renamed product is found at once")
			require.Equal(b, id, res.Items[0].ID)
		}
		reportLatency(b, "refresh", refreshes)
		reportLatency(b, "write-to-searchable", visible)
	}
}

func reportLatency(b *testing.B, name string, ds []time.Duration) {
	l := bench.Summarise(ds)
	b.ReportMetric(float64(l.P50.Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(l.P99.Microseconds())/1000, name+"-p99-ms")
}

// syntheticCatalog returns n products' events split into the partitions a projector would apply them
// in: every product's events in order, products spread by a hash of their id.
func syntheticCatalog(n int) [][]events.Envelope {
	rng := mrand.New(mrand.NewPCG(7, 11))
	parts := make([][]events.Envelope, benchPartitions)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte("bench-product-"+strconv.Itoa(i))).String()
		stream := events.StreamName(events.ProductAggregate, id)
		desc := make([]string, 8)
		for j := range desc {
			desc[j] = pick(rng, fillers)
		}
		created := events.ProductCreatedV1{ProductID: id, SKU: fmt.Sprintf("SKU-%07d", i),
			Name:        strings.Join([]string{title(pick(rng, adjectives)), title(pick(rng, nouns)), strconv.Itoa(i % 1000)}, " "),
			Description: strings.Join(desc, " "), Category: pick(rng, categories), PriceCents: int64(100 + rng.IntN(50000)),
			Currency: "EUR", Tags: []string{pick(rng, fillers), pick(rng, fillers)}}
		stock := events.ProductStockAdjustedV1{ProductID: id, Delta: 1, Reason: "delivery", Stock: int64(rng.IntN(3))}
		at = at.Add(time.Second)
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		p := int(h.Sum32() % benchPartitions)
		parts[p] = append(parts[p],
			events.Envelope{ID: uuid.NewString(), Stream: stream, Version: 1, Type: "product.created", SchemaVersion: 1, OccurredAt: at, Event: created},
			events.Envelope{ID: uuid.NewString(), Stream: stream, Version: 2, Type: "product.stock-adjusted", SchemaVersion: 1, OccurredAt: at, Event: stock})
	}
	return parts
}

func benchPool(b *testing.B) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(pgtest.URL(b))
	require.NoError(b, err)
	cfg.MaxConns = benchPartitions + 2
	pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	require.NoError(b, migrations.Apply(b.Context(), pool, migrations.ReadModel))
	return pool
}

func pick(rng *mrand.Rand, words []string) string { return words[rng.IntN(len(words))] }

func title(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

func ptr[T any](v T) *T { return &v }
