// Package query is strata's read side over HTTP (DESIGN section 5): products, orders and a
// customer's orders from the PostgreSQL read models, and a Server-Sent Events stream of an order's
// status changes. It only reads; projectors write the read models.
//
// # Reading your own writes
//
// A request may carry the Consistency-Token a command returned (header, or consistency_token query
// parameter). Before answering, the handler waits until the projection behind the endpoint has
// applied every stream of the token that it projects ("product-…" streams for products, "order-…"
// streams for orders and customers; others are ignored): projection_streams must hold each at least
// at the token's version. The wait is bounded: 2 s by default, Prefer: wait=<seconds> up to 10 s
// (answered with Preference-Applied). When it runs out the answer is 503 with Retry-After, never
// stale data. A malformed token is 400.
//
// Waiting costs no polling: one [Waiter] per process holds a LISTEN connection on the channel where
// projectors announce their commits (consistency.Progress, one channel per schema), and releases the
// requests waiting for what a notification carries, or looks at all of their streams with one query.
//
// Every answer carries the Consistency-Token of what it reflects: the request's token merged with
// the streams and versions of the entities returned, so that a client can chain reads. Single
// entities carry ETag: "<version>" and honour If-None-Match; lists are paged with an opaque cursor
// and are not cached.
package query

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/search"
)

// HeaderConsistencyToken carries a consistency token: in a request, what the answer must reflect; in
// a response, what it does reflect.
const HeaderConsistencyToken = consistency.Header

// The projections behind the endpoints, as named in projection_streams and in notifications.
const (
	productsProjection = "products"
	ordersProjection   = "orders"
)

// Paging limits.
const (
	defaultLimit = 50
	maxLimit     = 200
)

// HandlerOptions configure [NewHandler]. The zero value gives the defaults.
type HandlerOptions struct {
	// Logger receives one line per request and the details of server faults. Default: discard.
	Logger *slog.Logger
	// Registry serves /metrics and receives the service's metrics. Default: a new registry.
	Registry *prometheus.Registry
	// MaxInFlight sheds requests beyond this many at once (503). Default 512. Event streams are
	// counted apart, against MaxEventStreams.
	MaxInFlight int
	// MaxEventStreams bounds the open Server-Sent Events streams (503 beyond). Default 1024.
	MaxEventStreams int
	// DefaultWait bounds the wait for a consistency token when the request has no Prefer: wait.
	// Default 2 s.
	DefaultWait time.Duration
	// MaxWait caps Prefer: wait. Default 10 s.
	MaxWait time.Duration
	// Heartbeat is the interval of comment lines on idle event streams, which keep proxies from
	// closing them and let the server notice a client that went away. Default 15 s.
	Heartbeat time.Duration
	// Search answers /v1/search/products and /v1/search/orders; nil leaves them out (404).
	Search search.Index
	// Ready are readiness checks behind /readyz besides the database and the waiter's LISTEN
	// connection, which are always checked.
	Ready []platform.Check
}

type api struct {
	pool      *pgxpool.Pool
	waiter    *Waiter
	log       *slog.Logger
	opts      HandlerOptions
	waitTimes *prometheus.HistogramVec
}

// eventsRoute names the event stream route, which the load shedder counts apart.
const eventsRoute = "order-events"

// NewHandler returns the query API of DESIGN section 5 (search when opts.Search is set), reading
// the read models through pool and waiting for consistency tokens with waiter, plus /openapi.json,
// /healthz, /readyz (the database is reachable and waiter is listening) and /metrics. It registers
// its metrics on opts.Registry and panics, as prometheus does, if they are already registered there.
func NewHandler(pool *pgxpool.Pool, waiter *Waiter, opts HandlerOptions) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 512
	}
	if opts.MaxEventStreams <= 0 {
		opts.MaxEventStreams = 1024
	}
	if opts.DefaultWait <= 0 {
		opts.DefaultWait = 2 * time.Second
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 10 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	a := &api{pool: pool, waiter: waiter, log: opts.Logger, opts: opts,
		waitTimes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_query_consistency_wait_seconds",
			Help:    "Time requests with a consistency token waited for their projection, by outcome (satisfied, timeout, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"projection", "outcome"}),
	}
	opts.Registry.MustRegister(a.waitTimes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_query_consistency_waiting", Help: "Requests waiting for a projection to reach their consistency token.",
		}, func() float64 { return float64(waiter.Waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_query_listening", Help: "1 while the LISTEN connection for projection progress is up.",
		}, func() float64 {
			if waiter.listening.Load() {
				return 1
			}
			return 0
		}))

	metrics := platform.NewHTTPMetrics(opts.Registry, "query")
	requests := platform.Middleware(opts.Logger, metrics, opts.MaxInFlight)
	streams := platform.Middleware(opts.Logger, metrics, opts.MaxEventStreams)
	r := mux.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if route := mux.CurrentRoute(req); route != nil && route.GetName() == eventsRoute {
				streams(next).ServeHTTP(w, req)
				return
			}
			requests(next).ServeHTTP(w, req)
		})
	})
	ready := append([]platform.Check{
		{Name: "database", Run: pool.Ping},
		{Name: "listen", Run: waiter.Ready},
	}, opts.Ready...)
	platform.HandleHealth(r, opts.Registry, ready...)
	r.HandleFunc("/openapi.json", serveOpenAPI).Methods(http.MethodGet) // this API's description: openapi.go

	// Full paths on the root router, not a /v1 subrouter: mux 1.8.1 forgets a method mismatch in a
	// subrouter when a later route of it shares the prefix, and answers 404 instead of 405.
	get := func(path string, h func(http.ResponseWriter, *http.Request) error) *mux.Route {
		return r.Handle(path, platform.Handle(a.log, h)).Methods(http.MethodGet)
	}
	get("/v1/products", a.listProducts)
	get("/v1/products/{id}", a.getProduct)
	get("/v1/orders/{id}", a.getOrder)
	get("/v1/orders/{id}/events", a.orderEvents).Name(eventsRoute)
	get("/v1/customers/{id}/orders", a.listCustomerOrders)
	if opts.Search != nil {
		get("/v1/search/products", a.searchProducts)
		get("/v1/search/orders", a.searchOrders)
	}

	platform.HandleUnmatched(r, requests)
	return r
}

// consistent reads the request's consistency token and waits until projection has applied every
// stream of it whose aggregate type is aggregate. It returns the token, to be merged into the
// answer's. It fails with [consistency.ErrMalformed] for a bad token and with
// [problem.ErrNotYetConsistent] when the wait runs out.
func (a *api) consistent(w http.ResponseWriter, r *http.Request, projection, aggregate string) (consistency.Token, error) {
	raw := r.Header.Get(HeaderConsistencyToken)
	if raw == "" {
		raw = r.URL.Query().Get("consistency_token")
	}
	tok, err := consistency.Parse(strings.TrimSpace(raw))
	if err != nil {
		return consistency.Token{}, fmt.Errorf("%s: %w", HeaderConsistencyToken, err)
	}
	wait := a.opts.DefaultWait
	if secs, ok := preferredWait(r.Header.Values("Prefer")); ok {
		secs = min(secs, int64(a.opts.MaxWait/time.Second))
		wait = time.Duration(secs) * time.Second
		w.Header().Set("Preference-Applied", "wait="+strconv.FormatInt(secs, 10))
	}
	want := streamsOf(tok, aggregate)
	if len(want) == 0 {
		return tok, nil
	}
	start := time.Now()
	if wait == 0 {
		err = a.waiter.satisfied(r.Context(), projection, want)
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		err = a.waiter.Wait(ctx, projection, want)
		cancel()
	}
	outcome := "satisfied"
	switch {
	case errors.Is(err, problem.ErrNotYetConsistent):
		outcome = "timeout"
	case err != nil:
		outcome = "error"
	}
	a.waitTimes.WithLabelValues(projection, outcome).Observe(time.Since(start).Seconds())
	return tok, err
}

// preferredWait finds the wait preference (RFC 7240) among the Prefer header values: whole seconds,
// at least 0. Preferences it does not understand are ignored, as the RFC asks.
func preferredWait(values []string) (int64, bool) {
	for _, v := range values {
		for pref := range strings.SplitSeq(v, ",") {
			pref, _, _ = strings.Cut(pref, ";")
			name, val, ok := strings.Cut(pref, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			secs, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
			if err != nil || secs < 0 {
				continue
			}
			return secs, true
		}
	}
	return 0, false
}

// pathID returns the {id} of the route as a canonical UUID. Anything else names nothing that exists.
func pathID(r *http.Request, kind string) (string, error) {
	id := mux.Vars(r)["id"]
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", kind, id, domain.ErrNotFound)
	}
	return u.String(), nil
}

// writeEntity answers with one entity at version: ETag, Consistency-Token, and 304 without a body
// when If-None-Match already names that version.
func writeEntity(w http.ResponseWriter, r *http.Request, v any, stream string, version uint64, tok consistency.Token) {
	h := w.Header()
	etag := strconv.Quote(strconv.FormatUint(version, 10))
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache") // may be stored, but must be revalidated with If-None-Match
	h.Set(HeaderConsistencyToken, tok.Merge(consistency.For(stream, version)).String())
	if noneMatch(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// noneMatch reports whether an If-None-Match header matches etag, by the weak comparison RFC 9110
// prescribes for it.
func noneMatch(values []string, etag string) bool {
	for _, v := range values {
		for tag := range strings.SplitSeq(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// page is a list answer.
type page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// writeList answers with a page of items; tok is what it reflects.
func writeList[T any](w http.ResponseWriter, p page[T], tok consistency.Token) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderConsistencyToken, tok.String())
	if p.Items == nil {
		p.Items = []T{}
	}
	writeJSON(w, http.StatusOK, p)
}

// withStream adds stream at version to tok, unless tok already names [consistency.MaxStreams] streams:
// the request's own streams come first, then the items in page order.
func withStream(tok consistency.Token, stream string, version uint64) consistency.Token {
	return consistency.For(stream, version).Merge(tok)
}

// writeJSON writes v. A failed write means the client went away; there is nothing to add.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// streamsOf returns the streams of tok whose aggregate type is aggregate, with their versions.
func streamsOf(tok consistency.Token, aggregate string) map[string]uint64 {
	want := map[string]uint64{}
	for stream, version := range tok.Streams() {
		if typ, _, ok := events.SplitStream(stream); ok && typ == aggregate {
			want[stream] = version
		}
	}
	return want
}

// pageLimit reads the limit query parameter of a list: 1 to 200, 50 when absent.
func pageLimit(q url.Values) (int, error) { return limitParam(q, defaultLimit, maxLimit) }

// limitParam reads the limit query parameter: 1 to most, def when absent.
func limitParam(q url.Values, def, most int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, fmt.Errorf("limit %q: want a whole number from 1 to %d: %w", s, most, problem.ErrMalformed)
	}
	return n, nil
}

// cursor is where a page ends, the last item's sort key. Clients see it as an opaque string.
type cursor struct {
	// Kind tells the lists apart, so that one list's cursor is refused by another.
	Kind string `json:"k"`
	Name string `json:"n,omitempty"`
	// At is a timestamp in Unix microseconds, PostgreSQL's precision.
	At int64  `json:"t,omitempty"`
	ID string `json:"i"`
}

const maxCursorLen = 4096

func (c cursor) String() string {
	b, _ := json.Marshal(c) // strings and an integer always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseCursor reads the cursor query parameter of a list of kind; ok is false when it is absent.
func parseCursor(q url.Values, kind string) (c cursor, ok bool, err error) {
	s := q.Get("cursor")
	if s == "" {
		return cursor{}, false, nil
	}
	bad := fmt.Errorf("cursor %.40q: not a cursor of this list: %w", s, problem.ErrMalformed)
	if len(s) > maxCursorLen {
		return cursor{}, false, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false, bad
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Kind != kind {
		return cursor{}, false, bad
	}
	if _, err := uuid.Parse(c.ID); err != nil {
		return cursor{}, false, bad
	}
	return c, true, nil
}
