package elasticsearch_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	"github.com/strata-dev/strata/search"
	"github.com/strata-dev/strata/search/elasticsearch"
	"github.com/strata-dev/strata/search/searchtest"
)

// esURL returns the Elasticsearch the tests use, or skips the test.
func esURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("ELASTICSEARCH_URL")
	if u == "" && os.Getenv("CI") != "" {
		t.Fatal("ELASTICSEARCH_URL is not set in CI: make test starts Elasticsearch with deploy/elasticsearch.sh")
	}
	if u == "" {
		t.Skip("ELASTICSEARCH_URL is not set: run with ELASTICSEARCH_URL=\"$(bash deploy/elasticsearch.sh start)\"")
	}
	return strings.TrimRight(u, "/")
}

// fixture is an Index on its own prefix, set up, and deleted when the test ends.
type fixture struct {
	url, prefix string
	idx         *elasticsearch.Index
}

func newFixture(t *testing.T, opts elasticsearch.Options) *fixture {
	t.Helper()
	url := esURL(t)
	var b [5]byte
	_, _ = rand.Read(b[:])
	f := &fixture{url: url, prefix: "strata-test-" + hex.EncodeToString(b[:])}
	opts.URLs, opts.Prefix = []string{url}, f.prefix
	idx, err := elasticsearch.New(opts)
	require.NoError(t, err)
	f.idx = idx
	t.Cleanup(func() { require.NoError(t, idx.Drop(context.Background())) })
	require.NoError(t, idx.Setup(t.Context()))
	return f
}

// call sends a request to Elasticsearch directly and returns the status and decoded body.
func (f *fixture) call(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, f.url+path, r)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// pool returns a pool on a fresh schema with the read-model tables.
func pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p := pgtest.Pool(t, 4)
	require.NoError(t, migrations.Apply(t.Context(), p, migrations.ReadModel))
	return p
}

// project applies evs through the projection of their aggregate type, in one batch each, as the
// runtime would.
func project(ctx context.Context, p *pgxpool.Pool, idx *elasticsearch.Index, evs []events.Envelope) error {
	var products, orders []events.Envelope
	for _, e := range evs {
		if typ, _, _ := events.SplitStream(e.Stream); typ == events.OrderAggregate {
			orders = append(orders, e)
		} else {
			products = append(products, e)
		}
	}
	if err := projector.Apply(ctx, p, idx.Products(), products); err != nil {
		return err
	}
	return projector.Apply(ctx, p, idx.Orders(), orders)
}

func TestContract(t *testing.T) {
	esURL(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("contract suite: %s", time.Since(start).Round(time.Millisecond)) })
	searchtest.Run(t, func(t *testing.T) searchtest.Engine {
		f := newFixture(t, elasticsearch.Options{})
		p := pool(t)
		return searchtest.Engine{
			Index: f.idx,
			Project: func(t *testing.T, evs []events.Envelope) {
				require.NoError(t, project(t.Context(), p, f.idx, evs))
			},
		}
	})
}

// mgetHook is a transport that calls a test's hook after each _mget response, to line up races.
type mgetHook struct {
	hook atomic.Pointer[func()]
}

func (m *mgetHook) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if h := m.hook.Load(); h != nil && strings.HasSuffix(req.URL.Path, "/_mget") {
		(*h)()
	}
	return res, err
}

// A write that lost a race to a newer one gets 409 from Elasticsearch: already applied, success.
func TestOlderVersionIsAlreadyApplied(t *testing.T) {
	t.Parallel()
	hook := &mgetHook{}
	f := newFixture(t, elasticsearch.Options{Transport: hook})
	h := searchtest.NewHistory()
	id, created := h.Product("RACE-1", "Race Car", "Fast", "toys", 1000)
	rename := h.Event(events.ProductAggregate, id, events.ProductRenamedV1{ProductID: id, Name: "Slow Car"})
	stock := h.Stock(id, 3)
	ctx := t.Context()
	products := f.idx.Products()

	// The older writer reads (nothing yet) and is held there while the newer writer writes v1..v3;
	// then it sends its v2.
	paused, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	pause := func() {
		if first.CompareAndSwap(false, true) { // only the older writer's read
			close(paused)
			<-release
		}
	}
	hook.hook.Store(&pause)
	done := make(chan error, 1)
	go func() { done <- products.Write(ctx, []events.Envelope{created, rename}) }()
	<-paused
	require.NoError(t, products.Write(ctx, []events.Envelope{created, rename, stock}))
	close(release)
	require.NoError(t, <-done, "a version conflict is success")

	require.NoError(t, f.idx.Refresh(ctx))
	res, err := f.idx.SearchProducts(ctx, search.ProductQuery{Text: "car"})
	require.NoError(t, err)
	require.Len(t, res.Items, 1)
	require.Equal(t, uint64(3), res.Items[0].Version)
	require.EqualValues(t, 3, res.Items[0].Stock)

	// Replaying the whole history, in one batch or event by event, changes nothing.
	require.NoError(t, products.Write(ctx, []events.Envelope{created, rename, stock}))
	for _, e := range []events.Envelope{created, rename, stock} {
		require.NoError(t, products.Write(ctx, []events.Envelope{e}))
	}
	_, doc := f.call(t, http.MethodGet, "/"+f.prefix+"-products/_doc/"+id, nil)
	require.EqualValues(t, 3, doc["_version"], "the document was not written again")
}

// Any other refusal of a document fails the Write (and so the batch's transaction), naming the
// document and Elasticsearch's reason.
func TestRefusedDocumentFailsWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	p := pool(t)
	ctx := t.Context()
	h := searchtest.NewHistory()
	id, created := h.Product("BLK-1", "Blocked Lamp", "", "home", 100)
	index := f.prefix + "-products-v1"
	status, _ := f.call(t, http.MethodPut, "/"+index+"/_settings", map[string]any{"index.blocks.write": true})
	require.Equal(t, http.StatusOK, status)
	t.Cleanup(func() { f.call(t, http.MethodPut, "/"+index+"/_settings", map[string]any{"index.blocks.write": nil}) })

	err := f.idx.Products().Write(ctx, []events.Envelope{created})
	require.Error(t, err)
	require.ErrorContains(t, err, id)
	require.ErrorContains(t, err, "cluster_block_exception")
	var esErr *elasticsearch.Error
	require.ErrorAs(t, err, &esErr)
	require.Equal(t, http.StatusForbidden, esErr.Status)

	// Through the projector: the batch fails and records no stream version.
	require.ErrorContains(t, projector.Apply(ctx, p, f.idx.Products(), []events.Envelope{created}), id)
	var n int
	require.NoError(t, p.QueryRow(ctx, `SELECT count(*) FROM projection_streams`).Scan(&n))
	require.Zero(t, n)

	// Once the cause is gone, the same batch goes through.
	status, _ = f.call(t, http.MethodPut, "/"+index+"/_settings", map[string]any{"index.blocks.write": nil})
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, projector.Apply(ctx, p, f.idx.Products(), []events.Envelope{created}))
	require.NoError(t, p.QueryRow(ctx, `SELECT count(*) FROM projection_streams WHERE projection = 'products-elasticsearch'`).Scan(&n))
	require.Equal(t, 1, n)
}

// Events a search document cannot take are refused by Apply (poison), and a change before its
// product exists fails Write.
func TestUnfoldableEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	h := searchtest.NewHistory()
	id, created := h.Product("X-1", "Thing", "", "misc", 100)
	rename := h.Event(events.ProductAggregate, id, events.ProductRenamedV1{ProductID: id, Name: "Other"})
	_, placed := h.Order("Ann", "ann@example.com", [2]string{"X-1", "Thing"})
	require.NoError(t, f.idx.Products().Apply(nil, created))
	require.NoError(t, f.idx.Products().Apply(nil, rename))
	require.Error(t, f.idx.Products().Apply(nil, placed), "an order event is not a product event")
	require.NoError(t, f.idx.Orders().Apply(nil, placed))
	require.Error(t, f.idx.Orders().Apply(nil, created))
	require.ErrorContains(t, f.idx.Products().Write(t.Context(), []events.Envelope{rename}), "before the product was created")
}

func TestSetupIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	ctx := t.Context()
	h := searchtest.NewHistory()
	id, created := h.Product("IDEM-1", "Kept Lamp", "", "home", 100)
	require.NoError(t, f.idx.Products().Write(ctx, []events.Envelope{created}))

	// Again, and from several processes at once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			idx, err := elasticsearch.New(elasticsearch.Options{URLs: []string{f.url}, Prefix: f.prefix})
			if err == nil {
				err = idx.Setup(ctx)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, f.idx.Setup(ctx))

	for _, model := range []string{"products", "orders"} {
		status, aliases := f.call(t, http.MethodGet, "/_alias/"+f.prefix+"-"+model+","+f.prefix+"-"+model+"-write", nil)
		require.Equal(t, http.StatusOK, status)
		require.Len(t, aliases, 1, "one index behind the aliases")
		index := aliases[f.prefix+"-"+model+"-v1"].(map[string]any)["aliases"].(map[string]any)
		require.Len(t, index, 2)
		require.Equal(t, true, index[f.prefix+"-"+model+"-write"].(map[string]any)["is_write_index"])
	}
	require.NoError(t, f.idx.Refresh(ctx))
	res, err := f.idx.SearchProducts(ctx, search.ProductQuery{Text: "lamp"})
	require.NoError(t, err)
	require.Equal(t, id, res.Items[0].ID, "documents survive a second Setup")

	// The mapping is strict: a field it does not name is refused.
	status, _ := f.call(t, http.MethodPut, "/"+f.prefix+"-products-write/_doc/x", map[string]any{"id": "x", "colour": "red"})
	require.Equal(t, http.StatusBadRequest, status)

	// A missing alias is put back on the existing index.
	status, _ = f.call(t, http.MethodDelete, "/"+f.prefix+"-products-v1/_alias/"+f.prefix+"-products", nil)
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, f.idx.Setup(ctx))
	require.NoError(t, f.idx.Refresh(ctx))
	res, err = f.idx.SearchProducts(ctx, search.ProductQuery{Text: "lamp"})
	require.NoError(t, err)
	require.Len(t, res.Items, 1)
}

// refreshes returns how many refreshes the product index has had.
func (f *fixture) refreshes(t *testing.T) int64 {
	t.Helper()
	status, stats := f.call(t, http.MethodGet, "/"+f.prefix+"-products/_stats/refresh", nil)
	require.Equal(t, http.StatusOK, status)
	total := stats["_all"].(map[string]any)["primaries"].(map[string]any)["refresh"].(map[string]any)["external_total"]
	return int64(total.(float64))
}

// Many concurrent callers share a few refreshes.
func TestRefreshCoalesces(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	ctx := t.Context()
	before := f.refreshes(t)
	const callers = 64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() { errs <- f.idx.Refresh(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	n := f.refreshes(t) - before
	t.Logf("%d concurrent Refresh calls caused %d refreshes", callers, n)
	require.Positive(t, n)
	require.Less(t, n, int64(callers/4))
}

// refreshGate is a transport that holds _refresh requests until the test lets them go.
type refreshGate struct {
	started chan struct{}
	release chan struct{}
	count   atomic.Int32
}

func (g *refreshGate) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/_refresh") {
		g.count.Add(1)
		g.started <- struct{}{}
		<-g.release
	}
	return http.DefaultTransport.RoundTrip(req)
}

// A refresh already running when a caller arrives does not count for it: it may have started before
// the caller's writes were committed.
func TestRefreshInFlightDoesNotCount(t *testing.T) {
	t.Parallel()
	gate := &refreshGate{started: make(chan struct{}, 8), release: make(chan struct{}, 8)}
	f := newFixture(t, elasticsearch.Options{Transport: gate})
	ctx := t.Context()

	first := make(chan error, 1)
	go func() { first <- f.idx.Refresh(ctx) }()
	<-gate.started // the first refresh is running
	second := make(chan error, 1)
	go func() { second <- f.idx.Refresh(ctx) }()
	third := make(chan error, 1)
	go func() { third <- f.idx.Refresh(ctx) }()

	gate.release <- struct{}{}
	require.NoError(t, <-first)
	<-gate.started // the second refresh, for both later callers
	select {
	case err := <-second:
		t.Fatalf("the second caller returned (%v) before a refresh that started after it", err)
	default:
	}
	gate.release <- struct{}{}
	require.NoError(t, <-second)
	require.NoError(t, <-third)
	require.EqualValues(t, 2, gate.count.Load(), "the second and third caller shared one refresh")
}

// Random text made of query syntax of every kind never fails a search.
func TestHostileTextNeverErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	ctx := t.Context()
	h := searchtest.NewHistory()
	_, created := h.Product("AUD-001", "Wireless Headphones", "Over-ear", "audio", 100, "bluetooth")
	_, placed := h.Order("Ann Lee", "ann@example.com", [2]string{"AUD-001", "Wireless Headphones"})
	require.NoError(t, f.idx.Products().Write(ctx, []events.Envelope{created}))
	require.NoError(t, f.idx.Orders().Write(ctx, []events.Envelope{placed}))
	require.NoError(t, f.idx.Refresh(ctx))

	pieces := []string{`"`, `'`, `\`, `/`, `*`, `?`, `~`, `^`, `:`, `!`, `&`, `|`, `(`, `)`, `[`, `]`, `{`, `}`, `<`, `>`,
		`-`, `+`, `=`, `%`, `_`, `$`, `#`, `@`, `.`, `,`, `;`, " ", " ", "  ", "OR", "AND", "NOT", "wireless", "head",
		"AUD-001", "aud", "001", "😀", "日本", "é", "ß", "\u200b", "\u00a0", "/.*/", "0x00", "NaN", "1e309", "-1",
		`{"match_all":{}}`, "*:*", "_id:1", "name:wireless", strings.Repeat("a", 80)}
	r := mrand.New(mrand.NewPCG(1, 2))
	for range 100 {
		var b strings.Builder
		for range 1 + r.IntN(12) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		text := b.String()
		if len(text) > search.MaxTextLength {
			text = text[:search.MaxTextLength]
		}
		pq := search.ProductQuery{Text: text}
		if pq.Validate() != nil {
			continue // invalid UTF-8 from the cut: refused before the engine
		}
		for _, s := range search.Sorts {
			if s == search.SortRelevance && pq.Text == "" {
				continue
			}
			_, err := f.idx.SearchProducts(ctx, search.ProductQuery{Text: text, Sort: s, Limit: 2})
			require.NoError(t, err, "q=%q sort=%s", text, s)
		}
		_, err := f.idx.SearchOrders(ctx, search.OrderQuery{Text: text, Limit: 2})
		require.NoError(t, err, "q=%q", text)
	}
}

// A cursor with the right fingerprint but values of the wrong kind is refused, not sent on.
func TestForgedCursor(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	ctx := t.Context()
	q := search.ProductQuery{Text: "lamp"}
	require.NoError(t, q.Validate())
	for _, after := range [][]any{
		{map[string]any{"match_all": map[string]any{}}, "id"},
		{"1.5", "id"},
		{1.5, 7},
		{1.5, nil},
		{1.5},
	} {
		c, err := search.EncodeCursor(q.Fingerprint(), after...)
		require.NoError(t, err)
		_, err = f.idx.SearchProducts(ctx, search.ProductQuery{Text: "lamp", Cursor: c})
		require.ErrorIs(t, err, search.ErrBadCursor, "%v", after)
	}
	c, err := search.EncodeCursor(q.Fingerprint(), 1.5, "id")
	require.NoError(t, err)
	_, err = f.idx.SearchProducts(ctx, search.ProductQuery{Text: "lamp", Cursor: c})
	require.NoError(t, err, "a well-formed cursor")
}

// Documents hold milliseconds; time bounds finer than that keep From inclusive and To exclusive.
func TestTimeBoundsFinerThanMilliseconds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, elasticsearch.Options{})
	ctx := t.Context()
	h := searchtest.NewHistory()
	id, placed := h.Order("Ann Lee", "ann@example.com", [2]string{"X-1", "Thing"})
	placed.OccurredAt = placed.OccurredAt.Add(1500 * time.Microsecond) // 1.5ms past the second
	at := placed.OccurredAt.Truncate(time.Millisecond)
	require.NoError(t, f.idx.Orders().Write(ctx, []events.Envelope{placed}))
	require.NoError(t, f.idx.Refresh(ctx))

	all, err := f.idx.SearchOrders(ctx, search.OrderQuery{})
	require.NoError(t, err)
	require.Len(t, all.Items, 1)
	require.Equal(t, at, all.Items[0].PlacedAt, "stored at millisecond precision")

	for name, tc := range map[string]struct {
		from, to *time.Time
		found    bool
	}{
		"from just before":    {from: ptr(at.Add(-time.Nanosecond)), found: true},
		"from exactly":        {from: ptr(at), found: true},
		"from just after":     {from: ptr(at.Add(time.Nanosecond)), found: false},
		"to just after":       {to: ptr(at.Add(time.Nanosecond)), found: true},
		"to exactly":          {to: ptr(at), found: false},
		"to just before":      {to: ptr(at.Add(-time.Nanosecond)), found: false},
		"a nanosecond window": {from: ptr(at), to: ptr(at.Add(time.Nanosecond)), found: true},
	} {
		res, err := f.idx.SearchOrders(ctx, search.OrderQuery{From: tc.from, To: tc.to})
		require.NoError(t, err, name)
		if tc.found {
			require.Equal(t, []string{id}, ids(res), name)
		} else {
			require.Empty(t, res.Items, name)
		}
	}
}

func ids(r search.OrderResults) []string {
	out := make([]string, len(r.Items))
	for i, o := range r.Items {
		out[i] = o.ID
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range []elasticsearch.Options{
		{},
		{URLs: []string{"http://localhost:9200"}, Prefix: "Upper"},
		{URLs: []string{"http://localhost:9200"}, Prefix: "-dash"},
		{URLs: []string{"http://localhost:9200"}, Prefix: "a*b"},
		{URLs: []string{"http://localhost:9200"}, RequestTimeout: -time.Second},
	} {
		_, err := elasticsearch.New(opts)
		require.Error(t, err, "%+v", opts)
	}
	idx, err := elasticsearch.New(elasticsearch.Options{URLs: []string{"http://localhost:9200"}})
	require.NoError(t, err)
	require.Equal(t, "elasticsearch", idx.Engine())
	products, orders := idx.Projections()
	require.Equal(t, idx.Products().Name(), products)
	require.Equal(t, idx.Orders().Name(), orders)
	var _ projector.External = idx.Products()
	var _ projector.External = idx.Orders()
	var _ search.Index = idx
}

func TestUnreachableClusterIsUnavailable(t *testing.T) {
	// Nothing listens on port 1 of the loopback interface.
	idx, err := elasticsearch.New(elasticsearch.Options{URLs: []string{"http://127.0.0.1:1"}, MaxRetries: -1, RequestTimeout: 2 * time.Second})
	require.NoError(t, err)
	_, err = idx.SearchProducts(t.Context(), search.ProductQuery{Text: "lamp"})
	require.ErrorIs(t, err, search.ErrUnavailable)
	require.ErrorIs(t, idx.Refresh(t.Context()), search.ErrUnavailable)
	require.NotErrorIs(t, &elasticsearch.Error{Status: 400, Type: "parsing_exception"}, search.ErrUnavailable)
	require.ErrorIs(t, &elasticsearch.Error{Status: 503}, search.ErrUnavailable)
	require.ErrorIs(t, &elasticsearch.Error{Status: 429}, search.ErrUnavailable)
}
