package query_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/query"
	"github.com/strata-dev/strata/search"
)

// t0 is a timestamp at PostgreSQL's precision (microseconds).
var t0 = time.Date(2025, 3, 1, 12, 30, 45, 123456000, time.UTC)

// harness is one query service over HTTP on a private schema, with the test standing in for the
// projector: it writes read-model rows and projection_streams directly and sends the notifications.
type harness struct {
	t       *testing.T
	pool    *pgxpool.Pool
	waiter  *query.Waiter
	url     string
	appName string // application_name of the harness's sessions, to find its LISTEN connection
	stop    context.CancelFunc
	stopped chan struct{}
}

type harnessConfig struct {
	handler query.HandlerOptions
	// recheck is the waiter's fallback interval. Default one minute: longer than any test waits, so
	// that only a notification can wake a request.
	recheck time.Duration
	// idle leaves the waiter not running.
	idle bool
	// server adjusts the HTTP server before it starts.
	server func(*http.Server)
	// search, when set, makes the search engine over the harness's pool: the handler's Search.
	search func(*pgxpool.Pool) search.Index
}

func newHarness(t *testing.T, cfg harnessConfig) *harness {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	h := &harness{t: t, appName: "querytest_" + hex.EncodeToString(b[:]), stopped: make(chan struct{})}
	pcfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	pcfg.MaxConns = 20
	pcfg.ConnConfig.RuntimeParams["application_name"] = h.appName
	h.pool, err = pgxpool.NewWithConfig(t.Context(), pcfg)
	require.NoError(t, err)
	t.Cleanup(h.pool.Close)
	require.NoError(t, migrations.Apply(t.Context(), h.pool, migrations.ReadModel))
	if cfg.search != nil {
		cfg.handler.Search = cfg.search(h.pool)
	}

	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if cfg.recheck == 0 {
		cfg.recheck = time.Minute
	}
	h.waiter = query.NewWaiter(h.pool, log, query.WithRecheckInterval(cfg.recheck))
	ctx, cancel := context.WithCancel(t.Context())
	h.stop = cancel
	if cfg.idle {
		close(h.stopped)
	} else {
		go func() {
			defer close(h.stopped)
			if err := h.waiter.Run(ctx); err != nil {
				t.Errorf("waiter: %v", err)
			}
		}()
		require.Eventually(t, func() bool { return h.waiter.Ready(t.Context()) == nil }, 10*time.Second, 5*time.Millisecond)
	}
	t.Cleanup(func() { cancel(); <-h.stopped })

	if cfg.handler.Logger == nil {
		cfg.handler.Logger = log
	}
	srv := httptest.NewUnstartedServer(query.NewHandler(h.pool, h.waiter, cfg.handler))
	if cfg.server != nil {
		cfg.server(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// stopWaiter stops the waiter, as a shutting-down process does, and waits until it has.
func (h *harness) stopWaiter() {
	h.stop()
	<-h.stopped
}

// testWriter sends the service's warnings and errors to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// productRow is a row of the products read model.
type productRow struct {
	ID           uuid.UUID
	SKU          string
	Name         string
	Description  string
	Category     string
	PriceCents   int64
	Currency     string
	Tags         []string
	Stock        int64
	Discontinued bool
	Version      int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// newProduct returns a product in category named name at version 1.
func newProduct(name, category string) productRow {
	return productRow{
		ID: uuid.New(), SKU: "SKU-" + strings.ToUpper(name), Name: name, Description: "about " + name,
		Category: category, PriceCents: 1999, Currency: "EUR", Tags: []string{"new"}, Stock: 7,
		Version: 1, CreatedAt: t0, UpdatedAt: t0,
	}
}

// putProduct writes p and its projection_streams row in one transaction, as the products
// projection does, without notifying.
func (h *harness) putProduct(p productRow) {
	h.t.Helper()
	h.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(h.t.Context(), `
			INSERT INTO products (id, sku, name, description, category, price_cents, currency, tags, stock,
				discontinued, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
			ON CONFLICT (id) DO UPDATE SET sku = $2, name = $3, description = $4, category = $5,
				price_cents = $6, currency = $7, tags = $8, stock = $9, discontinued = $10, version = $11,
				created_at = $12, updated_at = $13`,
			p.ID, p.SKU, p.Name, p.Description, p.Category, p.PriceCents, p.Currency, p.Tags, p.Stock,
			p.Discontinued, p.Version, p.CreatedAt, p.UpdatedAt)
		if err != nil {
			return err
		}
		return h.applied(tx, "products", "product-"+p.ID.String(), p.Version)
	})
}

type lineRow struct {
	ProductID      uuid.UUID
	SKU            string
	Name           string
	Quantity       int64
	UnitPriceCents int64
}

type historyRow struct {
	Version int64
	Status  string
	Reason  string
	At      time.Time
}

// orderRow is an order of the orders read model with its lines and status history.
type orderRow struct {
	ID             uuid.UUID
	CustomerID     string
	CustomerName   string
	CustomerEmail  string
	Status         string
	Currency       string
	TotalCents     int64
	Reason         string
	Carrier        string
	TrackingNumber string
	Version        int64
	PlacedAt       time.Time
	UpdatedAt      time.Time
	Lines          []lineRow
	History        []historyRow
}

// newOrder returns a pending order of customer at version 1 with one line.
func newOrder(customer string, placedAt time.Time) orderRow {
	return orderRow{
		ID: uuid.New(), CustomerID: customer, CustomerName: "Ada " + customer, CustomerEmail: customer + "@example.com",
		Status: "pending", Currency: "EUR", TotalCents: 2 * 1999, Version: 1, PlacedAt: placedAt, UpdatedAt: placedAt,
		Lines:   []lineRow{{ProductID: uuid.New(), SKU: "SKU-1", Name: "Lamp", Quantity: 2, UnitPriceCents: 1999}},
		History: []historyRow{{Version: 1, Status: "pending", At: placedAt}},
	}
}

// putOrder writes o, its lines, its history and its projection_streams row in one transaction, as
// the orders projection does, without notifying.
func (h *harness) putOrder(o orderRow) {
	h.t.Helper()
	ctx := h.t.Context()
	h.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO orders (id, customer_id, customer_name, customer_email, status, currency, total_cents,
				callback_url, reason, carrier, tracking_number, version, placed_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 'https://hooks.example.com/secret', $8, $9, $10, $11, $12, $13)
			ON CONFLICT (id) DO UPDATE SET status = $5, total_cents = $7, reason = $8, carrier = $9,
				tracking_number = $10, version = $11, updated_at = $13`,
			o.ID, o.CustomerID, o.CustomerName, o.CustomerEmail, o.Status, o.Currency, o.TotalCents,
			o.Reason, o.Carrier, o.TrackingNumber, o.Version, o.PlacedAt, o.UpdatedAt)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM order_lines WHERE order_id = $1`, o.ID); err != nil {
			return err
		}
		for i, l := range o.Lines {
			_, err := tx.Exec(ctx, `INSERT INTO order_lines (order_id, line_no, product_id, sku, name, quantity,
				unit_price_cents) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				o.ID, i+1, l.ProductID, l.SKU, l.Name, l.Quantity, l.UnitPriceCents)
			if err != nil {
				return err
			}
		}
		for _, e := range o.History {
			_, err := tx.Exec(ctx, `INSERT INTO order_status_history (order_id, version, status, reason, at)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, o.ID, e.Version, e.Status, e.Reason, e.At)
			if err != nil {
				return err
			}
		}
		return h.applied(tx, "orders", "order-"+o.ID.String(), o.Version)
	})
}

func (h *harness) applied(tx pgx.Tx, projection, stream string, version int64) error {
	_, err := tx.Exec(h.t.Context(), `INSERT INTO projection_streams (projection, stream, version) VALUES ($1, $2, $3)
		ON CONFLICT (projection, stream) DO UPDATE SET version = $3`, projection, stream, version)
	return err
}

func (h *harness) tx(f func(pgx.Tx) error) {
	h.t.Helper()
	require.NoError(h.t, pgx.BeginFunc(h.t.Context(), h.pool, f))
}

// notify announces progress of projection, as a projector does after each commit.
func (h *harness) notify(projection string) {
	h.t.Helper()
	_, err := h.pool.Exec(h.t.Context(), `SELECT pg_notify(`+consistency.ProgressChannelSQL+`, $1)`, projection)
	require.NoError(h.t, err)
}

// response is an HTTP response read whole.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// token returns the streams of the response's Consistency-Token.
func (r response) token(t testing.TB) map[string]uint64 {
	t.Helper()
	tok, err := consistency.Parse(r.Header.Get(query.HeaderConsistencyToken))
	require.NoError(t, err)
	return tok.Streams()
}

// problem decodes a problem response and checks its media type.
func (r response) problem(t testing.TB) problem.Problem {
	t.Helper()
	require.Equal(t, problem.ContentType, r.Header.Get("Content-Type"), "body: %s", r.Body)
	var p problem.Problem
	require.NoError(t, json.Unmarshal(r.Body, &p))
	return p
}

// do makes a request; headers are name/value pairs. It does not fail the test, so that goroutines
// may call it.
func do(ctx context.Context, method, url string, headers ...string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
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

// get is a GET of path for the test's goroutine.
func (h *harness) get(t testing.TB, path string, headers ...string) response {
	t.Helper()
	r, err := do(t.Context(), http.MethodGet, h.url+path, headers...)
	require.NoError(t, err)
	return r
}

// async starts a GET and returns where its response will arrive, and when it did.
func (h *harness) async(t testing.TB, path string, headers ...string) <-chan timedResponse {
	c := make(chan timedResponse, 1)
	go func() {
		r, err := do(t.Context(), http.MethodGet, h.url+path, headers...)
		c <- timedResponse{response: r, err: err, at: time.Now()}
	}()
	return c
}

type timedResponse struct {
	response
	err error
	at  time.Time
}

// receive waits, bounded, for an async response.
func receive(t testing.TB, c <-chan timedResponse, within time.Duration) timedResponse {
	t.Helper()
	select {
	case r := <-c:
		require.NoError(t, r.err)
		return r
	case <-time.After(within):
		t.Fatalf("no response within %s", within)
		return timedResponse{}
	}
}

// tokenFor encodes a consistency token naming stream/version pairs.
func tokenFor(pairs ...any) string {
	var tok consistency.Token
	for i := 0; i+1 < len(pairs); i += 2 {
		tok = tok.Merge(consistency.For(pairs[i].(string), uint64(pairs[i+1].(int))))
	}
	return tok.String()
}

// sseEvent is one event, or comment, of a Server-Sent Events stream.
type sseEvent struct {
	ID, Event, Data, Comment string
}

// openEvents opens an event stream. The events arrive on the channel, which is closed when the
// stream ends.
func (h *harness) openEvents(t testing.TB, path string, headers ...string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	res, err := h.startEvents(t, path, headers...)
	require.NoError(t, err)
	return res, readEvents(t, res)
}

// startEvents sends the request of an event stream; it does not fail the test, so that goroutines
// may call it.
func (h *harness) startEvents(t testing.TB, path string, headers ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, h.url+path, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return http.DefaultClient.Do(req)
}

// readEvents parses the events of res until it ends, and closes its body when the test ends.
func readEvents(t testing.TB, res *http.Response) <-chan sseEvent {
	t.Cleanup(func() { _ = res.Body.Close() })
	c := make(chan sseEvent, 64)
	go func() {
		defer close(c)
		sc := bufio.NewScanner(res.Body)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				c <- e
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
				e.Comment = strings.TrimSpace(line[1:])
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				switch field {
				case "id":
					e.ID = value
				case "event":
					e.Event = value
				case "data":
					e.Data = value
				}
			}
		}
	}()
	return c
}

// nextEvent waits, bounded, for the next event that is not a comment.
func nextEvent(t testing.TB, c <-chan sseEvent, within time.Duration) sseEvent {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e, ok := <-c:
			require.True(t, ok, "the event stream ended")
			if e.Comment == "" {
				return e
			}
		case <-deadline:
			t.Fatalf("no event within %s", within)
		}
	}
}
