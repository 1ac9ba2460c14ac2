package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/command"
	"github.com/strata-dev/strata/domain/product"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/migrations"
)

// harness is one command service over HTTP on a private schema. Further services on the same
// schema (see [harness.server]) stand in for other processes or a restart.
type harness struct {
	t     *testing.T
	pool  *pgxpool.Pool
	codec *events.Codec
	store *postgres.Store // the first server's store; any store reads every stream
	url   string
}

// config tunes the services a harness starts.
type config struct {
	handler command.HandlerOptions
	service command.Options
}

func newHarness(t *testing.T, cfg config) *harness {
	t.Helper()
	pool := pgtest.Pool(t, 20)
	require.NoError(t, migrations.Apply(t.Context(), pool, migrations.EventStore, migrations.Command))
	codec, err := events.NewCommerceCodec()
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, codec: codec}
	h.url, h.store = h.server(cfg)
	return h
}

// in returns the harness for use in subtest t, so that its assertions fail t.
func (h *harness) in(t *testing.T) *harness {
	c := *h
	c.t = t
	return &c
}

// server starts another command service on the harness's database and returns its base URL.
func (h *harness) server(cfg config) (string, *postgres.Store) {
	h.t.Helper()
	// A channel per store keeps parallel tests from waking each other's notifiers.
	store := postgres.New(h.pool, postgres.Options{Channel: fmt.Sprintf("cmdtest_%d", rand.Uint64())})
	h.t.Cleanup(store.Close)
	if cfg.handler.Registry == nil {
		cfg.handler.Registry = prometheus.NewRegistry()
	}
	if cfg.service.Registerer == nil {
		cfg.service.Registerer = cfg.handler.Registry
	}
	if cfg.handler.Logger == nil {
		cfg.handler.Logger = slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.handler.Ready == nil {
		cfg.handler.Ready = []platform.Check{{Name: "postgres", Run: h.pool.Ping}}
	}
	svc := command.NewService(store, h.codec, command.NewPostgresSKUs(h.pool), cfg.service)
	srv := httptest.NewServer(command.NewHandler(svc, command.NewIdempotency(h.pool), cfg.handler))
	h.t.Cleanup(srv.Close)
	return srv.URL, store
}

// testWriter sends the service's warnings and errors to the test log, where a failure shows them.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// response is an HTTP response read whole.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do makes a request to base+path with a JSON body. headers are name/value pairs; they replace the
// default Content-Type, and an empty value removes the header. It does not fail the test, so that
// goroutines may call it.
func do(ctx context.Context, base, method, path string, body io.Reader, headers ...string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Header: res.Header, Body: b}, err
}

// send is [do] for the test's goroutine.
func send(t testing.TB, base, method, path string, body io.Reader, headers ...string) response {
	t.Helper()
	r, err := do(t.Context(), base, method, path, body, headers...)
	require.NoError(t, err)
	return r
}

// concurrently sends n requests at once, with the body and headers that req gives for each index,
// and returns their responses in index order.
func concurrently(t testing.TB, n int, req func(i int) (base, path, body string, headers []string)) []response {
	t.Helper()
	out := make([]response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		base, path, body, headers := req(i)
		wg.Go(func() {
			<-start
			out[i], errs[i] = do(t.Context(), base, http.MethodPost, path, strings.NewReader(body), headers...)
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	return out
}

func (h *harness) post(path, body string, headers ...string) response {
	h.t.Helper()
	return send(h.t, h.url, http.MethodPost, path, strings.NewReader(body), headers...)
}

func (h *harness) get(path string) response {
	h.t.Helper()
	return send(h.t, h.url, http.MethodGet, path, nil)
}

// js marshals v, for request bodies.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

type obj = map[string]any

// result is a command's success body.
type result struct {
	ID               string `json:"id"`
	Version          uint64 `json:"version"`
	ConsistencyToken string `json:"consistency_token"`
}

// requireSuccess checks a command's success response as DESIGN section 4 has it and returns its body.
func requireSuccess(t testing.TB, r response, status int, aggregate string) result {
	t.Helper()
	require.Equal(t, status, r.Status, "body: %s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	var res result
	require.NoError(t, json.Unmarshal(r.Body, &res))
	_, err := uuid.Parse(res.ID)
	require.NoError(t, err, "id %q", res.ID)
	require.Positive(t, res.Version)
	require.Equal(t, strconv.Quote(strconv.FormatUint(res.Version, 10)), r.Header.Get("ETag"))

	tok := r.Header.Get(command.HeaderConsistencyToken)
	require.NotEmpty(t, tok)
	require.Equal(t, tok, res.ConsistencyToken)
	parsed, err := consistency.Parse(tok)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{events.StreamName(aggregate, res.ID): res.Version}, parsed.Streams())

	switch status {
	case http.StatusCreated:
		require.Equal(t, "/v1/products/"+res.ID, r.Header.Get("Location"))
	case http.StatusAccepted:
		require.Equal(t, "/v1/orders/"+res.ID, r.Header.Get("Location"))
	default:
		require.Empty(t, r.Header.Get("Location"))
	}
	return res
}

// requireProblem checks that r is an RFC 9457 problem with status and returns it.
func requireProblem(t testing.TB, r response, status int) problem.Problem {
	t.Helper()
	require.Equal(t, status, r.Status, "body: %s", r.Body)
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, problem.ContentType, mt)
	var p problem.Problem
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&p), "body: %s", r.Body)
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.Type)
	require.NotEmpty(t, p.Title)
	return p
}

// fields lists the fields a validation problem names.
func fields(p problem.Problem) []string {
	out := make([]string, len(p.Errors))
	for i, e := range p.Errors {
		out[i] = e.Field
	}
	return out
}

func (h *harness) eventCount() int {
	h.t.Helper()
	var n int
	require.NoError(h.t, h.pool.QueryRow(h.t.Context(), `SELECT count(*) FROM events`).Scan(&n))
	return n
}

// requireNothingAppended runs fn and fails if the event store grew meanwhile.
func (h *harness) requireNothingAppended(fn func()) {
	h.t.Helper()
	before := h.eventCount()
	fn()
	require.Equal(h.t, before, h.eventCount(), "events were appended")
}

// stream reads a whole stream.
func (h *harness) stream(aggregate, id string) []eventstore.RecordedEvent {
	h.t.Helper()
	evs, err := h.store.ReadStream(h.t.Context(), events.StreamName(aggregate, id), 1, 10_000)
	require.NoError(h.t, err)
	return evs
}

// product replays a product from its stream.
func (h *harness) product(id string) *product.Product {
	h.t.Helper()
	var history []events.Event
	for _, r := range h.stream(events.ProductAggregate, id) {
		e, err := h.codec.Decode(r.Type, r.SchemaVersion, r.Data)
		require.NoError(h.t, err)
		history = append(history, e)
	}
	return product.Replay(id, history)
}

// appendEvent appends e to a stream at its current version, as another part of the system (the
// fulfilment process manager) would.
func (h *harness) appendEvent(aggregate, id string, e events.Event) {
	h.t.Helper()
	name, sv, data, err := h.codec.Encode(e)
	require.NoError(h.t, err)
	version := uint64(len(h.stream(aggregate, id)))
	_, err = h.store.Append(h.t.Context(), events.StreamName(aggregate, id), eventstore.Exact(version), []eventstore.EventData{{
		ID: uuid.NewString(), Type: name, SchemaVersion: sv, Data: data, OccurredAt: time.Now(),
	}})
	require.NoError(h.t, err)
}

// createProduct creates a product priced in EUR and returns its id.
func (h *harness) createProduct(sku string) string {
	h.t.Helper()
	r := h.post("/v1/products", js(obj{
		"sku": sku, "name": "Mug " + sku, "category": "kitchen", "price_cents": 1250, "currency": "EUR",
	}))
	return requireSuccess(h.t, r, http.StatusCreated, events.ProductAggregate).ID
}

func (h *harness) adjustStock(id string, delta int64) result {
	h.t.Helper()
	r := h.post("/v1/products/"+id+"/stock", js(obj{"delta": delta, "reason": "delivery"}))
	return requireSuccess(h.t, r, http.StatusOK, events.ProductAggregate)
}

// placeOrder places an order for one of each product and returns its id.
func (h *harness) placeOrder(productIDs ...string) string {
	h.t.Helper()
	r := h.post("/v1/orders", orderBody(productIDs...))
	return requireSuccess(h.t, r, http.StatusAccepted, events.OrderAggregate).ID
}

func orderBody(productIDs ...string) string {
	lines := make([]obj, len(productIDs))
	for i, id := range productIDs {
		lines[i] = obj{"product_id": id, "quantity": 1}
	}
	return js(obj{"customer_id": "c-1", "customer_name": "Ada", "customer_email": "ada@example.com", "lines": lines})
}

// lockEvents blocks every append to the harness's events table until the returned function is called,
// so that a test can hold a command in flight at a known point: after its idempotency key is reserved
// and its stream loaded, before its append commits.
func (h *harness) lockEvents() (unlock func()) {
	h.t.Helper()
	ctx := context.WithoutCancel(h.t.Context())
	tx, err := h.pool.Begin(ctx)
	require.NoError(h.t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE events IN EXCLUSIVE MODE`) // reads go on, writes wait
	require.NoError(h.t, err)
	done := false
	unlock = func() {
		if !done {
			done = true
			require.NoError(h.t, tx.Rollback(ctx))
		}
	}
	h.t.Cleanup(unlock)
	return unlock
}

// waitingAppends counts appends blocked by [harness.lockEvents]. Parallel tests have their own
// events tables, so it counts this test's appends only.
func (h *harness) waitingAppends() int {
	h.t.Helper()
	var n int
	require.NoError(h.t, h.pool.QueryRow(h.t.Context(),
		`SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted`).Scan(&n))
	return n
}
