package postgres_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/search"
	"github.com/strata-dev/strata/search/postgres"
	"github.com/strata-dev/strata/search/searchtest"
)

// catalog projects a few products and returns the index and their ids by SKU.
func catalog(t *testing.T) (*postgres.Index, map[string]string) {
	t.Helper()
	pool := newPool(t)
	h := searchtest.NewHistory()
	ids := map[string]string{}
	var evs []events.Envelope
	for _, p := range [][4]string{
		{"AUD-001", "Wireless Headphones", "Over-ear, noise cancelling, 30 hour battery", "audio"},
		{"HOM-001", "Desk Lamp", "Warm light with a wireless charging base", "home"},
		{"HOM-002", "Electric Kettle", "Boils a litre in three minutes", "kitchen"},
		{"HOM-004", "Glass Teapot", "Holds a litre of tea", "kitchen"},
	} {
		id, ev := h.Product(p[0], p[1], p[2], p[3], 1000)
		ids[p[0]] = id
		evs = append(evs, ev)
	}
	project(t, pool, evs)
	return postgres.New(pool), ids
}

func find(t *testing.T, x *postgres.Index, text string) search.ProductResults {
	t.Helper()
	res, err := x.SearchProducts(t.Context(), search.ProductQuery{Text: text})
	require.NoError(t, err, "q=%q", text)
	return res
}

func skus(res search.ProductResults) []string {
	out := []string{}
	for _, p := range res.Items {
		out = append(out, p.SKU)
	}
	return out
}

// PostgreSQL takes the text as a web search: "phrases", or, and -exclusions work, and only the
// words of the search proper are widened to prefixes and corrections.
func TestWebSearchSyntax(t *testing.T) {
	t.Parallel()
	x, _ := catalog(t)
	for q, want := range map[string][]string{
		`"desk lamp"`:                  {"HOM-001"},
		`"lamp desk"`:                  {},
		`kettle or teapot`:             {"HOM-002", "HOM-004"},
		`litre -kettle`:                {"HOM-004"},
		`litre -"electric kettle"`:     {"HOM-004"},
		`litre -ketle`:                 {"HOM-002", "HOM-004"}, // an exclusion is exact: no typo correction
		`litre -kett`:                  {"HOM-002", "HOM-004"}, // nor a prefix
		`-kitchen`:                     {"AUD-001", "HOM-001"},
		`wireless -"noise cancelling"`: {"HOM-001"},
		`hea wireless`:                 {}, // only the last word is a prefix
		`wireless hea`:                 {"AUD-001"},
		`ketle or teapt`:               {"HOM-002", "HOM-004"},
		`hom-00`:                       {"HOM-001", "HOM-002", "HOM-004"}, // the last word of a SKU, as a prefix
		`HOM-003`:                      {},                                // words with digits have no typos
	} {
		require.ElementsMatch(t, want, skus(find(t, x, q)), "q=%q", q)
	}
}

func TestTyposAreHighlighted(t *testing.T) {
	t.Parallel()
	x, _ := catalog(t)
	res := find(t, x, "headphnes")
	require.Len(t, res.Items, 1)
	require.Equal(t, map[string][]string{"name": {"Wireless <em>Headphones</em>"}}, res.Items[0].Highlights)
	res = find(t, x, "wireles charg")
	require.Len(t, res.Items, 1)
	require.Equal(t, map[string][]string{"description": {"Warm light with a <em>wireless</em> <em>charging</em> base"}},
		res.Items[0].Highlights)
}

func TestExactMatchesRankAboveCorrections(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	h := searchtest.NewHistory()
	lamp, e1 := h.Product("L-1", "Lamp", "", "home", 100)
	lamb, e2 := h.Product("L-2", "Lamb", "", "food", 100)
	project(t, pool, []events.Envelope{e1, e2})
	x := postgres.New(pool)
	require.Equal(t, []string{lamb, lamp}, ids(find(t, x, "lamb")))
	require.Equal(t, []string{lamp, lamb}, ids(find(t, x, "lamp")))
}

func ids(res search.ProductResults) []string {
	out := []string{}
	for _, p := range res.Items {
		out = append(out, p.ID)
	}
	return out
}

// A text search on thousands of products is served by the GIN index of the documents, and the
// corrections by the trigram index of the vocabulary.
func TestTextSearchUsesTheIndexes(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	h := searchtest.NewHistory()
	var evs []events.Envelope
	for i := range 3000 {
		_, ev := h.Product(fmt.Sprintf("SKU-%04d", i), fmt.Sprintf("Item%d Model%d", i, i%97),
			fmt.Sprintf("Gadget number %d of series %d, parts a%[1]d b%[1]d c%[1]d d%[1]d e%[1]d", i, i%13), fmt.Sprintf("cat%d", i%7), int64(i))
		evs = append(evs, ev)
	}
	project(t, pool, evs)
	// As autovacuum would: VACUUM moves GIN's pending list (fastupdate) into the index proper.
	for _, table := range []string{"search_products", "search_product_words"} {
		_, err := pool.Exec(t.Context(), "VACUUM ANALYZE "+table)
		require.NoError(t, err)
	}

	explain := func(sql string, args ...any) string {
		t.Helper()
		var lines []string
		rows, err := pool.Query(t.Context(), "EXPLAIN "+sql, args...)
		require.NoError(t, err)
		for rows.Next() {
			var l string
			require.NoError(t, rows.Scan(&l))
			lines = append(lines, l)
		}
		require.NoError(t, rows.Err())
		return strings.Join(lines, "\n")
	}
	plan := explain(`SELECT id FROM search_products AS p WHERE p.document @@ $1::text::tsquery`, `( 'item42':* | 'item24' )`)
	require.Contains(t, plan, "search_products_document", plan)
	plan = explain(`SELECT word FROM search_product_words AS v WHERE v.word OPERATOR(public.%) $1`, "modl")
	require.Contains(t, plan, "search_product_words_trgm", plan)

	// And the search itself finds what it should among them.
	x := postgres.New(pool)
	res := find(t, x, "item42 gadgte")
	require.Equal(t, []string{"SKU-0042"}, skus(res))
	require.EqualValues(t, 1, res.Total)
}

// Migrating many schemas of one database at once works: pg_trgm is installed once, in public.
func TestConcurrentMigrations(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		pool := pgtest.Pool(t, 2)
		wg.Go(func() { errs <- migrations.Apply(t.Context(), pool, migrations.ReadModel) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
