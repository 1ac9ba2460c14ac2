package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/childtest"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/projector"
)

// TestDevSurvivesSIGKILL runs `strata dev` as a separate process, drives a write load against it over
// HTTP from several clients, and kills the process with SIGKILL at random moments of the load (after a
// random number of acknowledged writes), restarting it each time on the same ports, database schema
// and data directory (so the embedded NATS server finds its JetStream files again). Every write carries
// an Idempotency-Key; a write cut off by a kill is sent again, with the same key and body, once the
// process is back, until it is acknowledged. Afterwards:
//
//   - every acknowledged write is readable through the query service with its consistency token, at
//     its version or later;
//   - nothing is applied twice: the store holds exactly one event per acknowledged write, at the
//     version the acknowledgement named, and no two events of a stream share an idempotency key; every
//     product's stock in the read model equals its acknowledged +1 adjustments and its stock-adjusted
//     events in the store;
//   - once caught up, the read models' per-stream versions equal the store's, for every stream.
func TestDevSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	const (
		products = 6
		clients  = 6
		kills    = 8
	)
	began := time.Now()
	dbURL := pgtest.URL(t)
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t)) }
	vars := map[string]string{
		"DATABASE_URL": dbURL, "EVENTSTORE_URL": "", "NATS_URL": "", "STRATA_DATA_DIR": t.TempDir(),
		"COMMAND_ADDR": addr(), "QUERY_ADDR": addr(), "ADMIN_ADDR": addr(), "RELAY_ADDR": addr(),
		"NATS_EMBEDDED_PORT": fmt.Sprint(natstest.FreePort(t)), "NATS_PARTITIONS": "4", "LOG_LEVEL": "warn",
		// Elasticsearch when the test run has one (make test does), each test with its own indices.
		"ELASTICSEARCH_URL": os.Getenv("ELASTICSEARCH_URL"), "ELASTICSEARCH_INDEX_PREFIX": "crash-" + strings.ToLower(crand.Text()[:10]),
	}
	cfg, err := loadConfig(env(vars))
	require.NoError(t, err)
	dropIndices(t, cfg)
	_, projections, err := searchEngine(cfg, nil)
	require.NoError(t, err)
	c := &crashClient{
		command: "http://" + vars["COMMAND_ADDR"], query: "http://" + vars["QUERY_ADDR"],
		http: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * clients}},
		gate: newUpGate(),
	}
	t.Cleanup(c.http.CloseIdleConnections)

	p := startDevProcess(t, vars)
	c.waitReady(t, p)
	c.gate.up()

	// The products the load adjusts and orders.
	var ids []string
	for i := range products {
		w := &crashWrite{
			kind: "create", key: fmt.Sprintf("create-%d", i), path: "/v1/products",
			body: fmt.Sprintf(`{"sku":"CRASH-%d","name":"Product %d","description":"","category":"crash","price_cents":%d,"currency":"EUR","tags":[]}`, i, i, 100+i),
		}
		require.NoError(t, c.send(t.Context(), w))
		require.Equal(t, uint64(1), w.version)
		ids = append(ids, w.id)
		c.record(w)
	}

	// The load: each client sends one write at a time until it is acknowledged, then the next.
	stop := make(chan struct{})
	var failed atomic.Bool
	var wg sync.WaitGroup
	for n := range clients {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				w := &crashWrite{key: fmt.Sprintf("c%d-w%d", n, i)}
				if rand.IntN(4) == 0 {
					w.kind, w.path = "order", "/v1/orders"
					var lines []string
					for _, j := range rand.Perm(len(ids))[:1+rand.IntN(3)] { // one line per product
						lines = append(lines, fmt.Sprintf(`{"product_id":%q,"quantity":%d}`, ids[j], 1+rand.IntN(3)))
					}
					w.body = fmt.Sprintf(`{"customer_id":"customer-%d","customer_name":"Ada","customer_email":"ada@example.com","lines":[%s]}`,
						n, strings.Join(lines, ","))
				} else {
					w.kind, w.product = "stock", ids[rand.IntN(len(ids))]
					w.path, w.body = "/v1/products/"+w.product+"/stock", fmt.Sprintf(`{"delta":1,"reason":"%s"}`, w.key)
				}
				// Not cancelled by stop: a write that was started is finished, so that every write sent
				// is acknowledged by the end and the store can be compared with the acknowledgements.
				if err := c.send(t.Context(), w); err != nil {
					failed.Store(true)
					if t.Context().Err() == nil { // not the end of a test that failed already
						t.Errorf("client %d: %v", n, err)
					}
					return
				}
				c.record(w)
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	// Kill after a random number of writes acknowledged since the last start: a few (the process is
	// still catching up: relay, projectors, consumers) or a few hundred (the load is in full swing).
	for k := 1; k <= kills; k++ {
		n := 30 + rand.Int64N(370)
		if rand.IntN(3) == 0 {
			n = 1 + rand.Int64N(30)
		}
		target := c.acked.Load() + n
		require.Eventually(t, func() bool { return c.acked.Load() >= target || failed.Load() }, 30*time.Second, time.Millisecond,
			"the load should make progress before kill %d", k)
		require.False(t, failed.Load(), "a client failed")
		c.gate.down()
		p.Kill(t)
		killedAt := c.acked.Load()
		p = startDevProcess(t, vars)
		c.waitReady(t, p)
		c.gate.up()
		t.Logf("kill %d: %d writes acknowledged since the last start, %d in all; ready again in %v",
			k, n, killedAt, time.Since(p.Started()).Round(time.Millisecond))
	}
	// The load carries on after the last restart.
	target := c.acked.Load() + 100
	require.Eventually(t, func() bool { return c.acked.Load() >= target || failed.Load() }, 30*time.Second, time.Millisecond)
	stopLoad()
	require.False(t, t.Failed(), "the load failed")
	loadDone := time.Now()

	writes := c.writes()
	t.Logf("%d writes acknowledged (%d stock adjustments, %d orders) by %d clients; %d sends cut off by a kill and sent again, "+
		"%d sent again after a 5xx or 409; %d retries answered with the stored response",
		len(writes), c.count("stock"), c.count("order"), clients, c.retriedDown.Load(), c.retriedStatus.Load(), c.replayed.Load())

	// (a) Every acknowledged write is readable with its token, at its version or later. A write that
	// is not costs the query service's whole wait (10 s), so the reads stop after a few of them.
	const maxUnreadable = 5
	var readers sync.WaitGroup
	var unreadable, read atomic.Int64
	next := make(chan *crashWrite)
	for range 8 {
		readers.Go(func() {
			for w := range next {
				if unreadable.Load() >= maxUnreadable {
					continue
				}
				path := "/v1/orders/" + w.id
				if w.kind != "order" {
					path = "/v1/products/" + w.id
				}
				status, body, err := c.get(t.Context(), path, w.token)
				read.Add(1)
				var got struct {
					Version uint64 `json:"version"`
				}
				if err != nil || status != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Version < w.version {
					unreadable.Add(1)
					t.Errorf("write %s acknowledged at %s version %d, read with its token: %d %s %v", w.key, w.stream, w.version, status, body, err)
				}
			}
		})
	}
	for _, w := range writes {
		next <- w
	}
	close(next)
	readers.Wait()
	if n := unreadable.Load(); n > 0 { // carry on: the checks below tell more
		t.Errorf("%d acknowledged writes not readable with their token (%d of %d read; reading stops after %d)", n, read.Load(), len(writes), maxUnreadable)
	}
	readsDone := time.Now()

	// (b) Nothing applied twice: the store holds one event per acknowledged write, where the
	// acknowledgement said, and every event in the store was acknowledged.
	pool, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	type stored struct {
		stream  string
		version uint64
		typ     string
	}
	byKey := map[string][]stored{}
	recordedAt := map[string]time.Time{}
	rows, err := pool.Query(t.Context(), `SELECT stream_id, version, type, coalesce(metadata->>'idempotency_key', ''), recorded_at FROM events ORDER BY stream_id, version`)
	require.NoError(t, err)
	events := 0
	for rows.Next() {
		var s stored
		var key string
		var at time.Time
		require.NoError(t, rows.Scan(&s.stream, &s.version, &s.typ, &key, &at))
		byKey[key] = append(byKey[key], s)
		recordedAt[key] = at
		events++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(writes), events, "the store holds one event per acknowledged write")
	require.NotContains(t, byKey, "", "every event carries its write's idempotency key")
	wantType := map[string]string{"create": "product.created", "stock": "product.stock-adjusted", "order": "order.placed"}
	for _, w := range writes {
		require.Equal(t, []stored{{w.stream, w.version, wantType[w.kind]}}, byKey[w.key],
			"write %s was acknowledged as %s version %d; the store holds these events with its key", w.key, w.stream, w.version)
	}
	// The writes a killed process appended (its transaction began before the client saw the process
	// die, and every send after that began later), which a retry had to recognise.
	committedBeforeKill := 0
	for _, w := range writes {
		if !w.cutOff.IsZero() && recordedAt[w.key].Before(w.cutOff) {
			committedBeforeKill++
		}
	}
	t.Logf("%d writes were appended by a process that was killed before it answered, and acknowledged on retry", committedBeforeKill)
	var dupKeys int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM (SELECT 1 FROM events GROUP BY stream_id, metadata->>'idempotency_key' HAVING count(*) > 1) d`).Scan(&dupKeys))
	require.Zero(t, dupKeys, "streams with two events of one idempotency key")

	// Every product's stock: its acknowledged +1 adjustments, its stock-adjusted events in the store,
	// and the read model's stock (read with the token of its last acknowledged write).
	for _, id := range ids {
		var acked int64
		last := &crashWrite{}
		for _, w := range writes {
			if w.id == id && w.kind != "order" {
				if w.kind == "stock" {
					acked++
				}
				if w.version > last.version {
					last = w
				}
			}
		}
		var inStore int64
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'product.stock-adjusted'`, last.stream).Scan(&inStore))
		status, body, err := c.get(t.Context(), "/v1/products/"+id, last.token)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status, "%s", body)
		var got struct {
			Stock   int64  `json:"stock"`
			Version uint64 `json:"version"`
		}
		require.NoError(t, json.Unmarshal(body, &got))
		require.Equal(t, acked, inStore, "product %s: acknowledged adjustments and stock-adjusted events in the store", id)
		require.Equal(t, acked, got.Stock, "product %s: acknowledged adjustments and stock in the read model", id)
		require.Equal(t, last.version, got.Version, "product %s: read model version", id)
	}

	// (c) Once caught up, every stream's version in the read models is the store's.
	var diff []string
	require.Eventually(t, func() bool {
		diff = streamVersionDiff(t.Context(), pool, projections)
		return len(diff) == 0
	}, 15*time.Second, 20*time.Millisecond, "the read models should catch up with the store: %v", &diff)
	var parked int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM dead_letters`).Scan(&parked))
	require.Zero(t, parked, "dead letters")

	p.Stop(t)
	t.Logf("%d kills; load %v, reads with tokens %v, checks %v; %d events in the store",
		kills, loadDone.Sub(began).Round(time.Millisecond), readsDone.Sub(loadDone).Round(time.Millisecond),
		time.Since(readsDone).Round(time.Millisecond), events)
}

// streamVersionDiff compares each stream's last version in the store with the version each
// projection of it recorded in projection_streams, and describes the differences (at most 10).
func streamVersionDiff(ctx context.Context, pool *pgxpool.Pool, projections []projector.Projection) []string {
	var names, aggregates []string
	for _, p := range projections {
		for _, a := range p.AggregateTypes() {
			names, aggregates = append(names, p.Name()), append(aggregates, a)
		}
	}
	rows, err := pool.Query(ctx, `
		WITH projection AS (
			SELECT * FROM unnest($1::text[], $2::text[]) AS p(name, aggregate)
		), store AS (
			SELECT p.name AS projection, e.stream_id, max(e.version) AS version
			FROM events e JOIN projection p ON p.aggregate = split_part(e.stream_id, '-', 1)
			GROUP BY 1, 2
		), projected AS (
			SELECT * FROM projection_streams WHERE projection = ANY($1)
		)
		SELECT coalesce(s.projection, p.projection), coalesce(s.stream_id, p.stream), coalesce(s.version, 0), coalesce(p.version, 0)
		FROM store s FULL JOIN projected p ON p.projection = s.projection AND p.stream = s.stream_id
		WHERE s.version IS DISTINCT FROM p.version
		ORDER BY 2 LIMIT 10`, names, aggregates)
	if err != nil {
		return []string{err.Error()}
	}
	defer rows.Close()
	var diff []string
	for rows.Next() {
		var projection, stream string
		var store, projected int64
		if err := rows.Scan(&projection, &stream, &store, &projected); err != nil {
			return []string{err.Error()}
		}
		diff = append(diff, fmt.Sprintf("%s %s: store at %d, projection at %d", projection, stream, store, projected))
	}
	if err := rows.Err(); err != nil {
		return []string{err.Error()}
	}
	return diff
}

// TestDevProcess is the `strata dev` process of TestDevSurvivesSIGKILL: the test binary runs itself
// with STRATA_DEV_PROCESS=1 and only this test. Otherwise it does nothing. It runs every service with
// the configuration in its environment until it is killed, or its parent closes its standard input
// (or dies).
func TestDevProcess(t *testing.T) {
	if os.Getenv("STRATA_DEV_PROCESS") != "1" {
		return
	}
	ctx, cancel := childtest.UntilStdinCloses(t.Context())
	defer cancel()
	cfg, err := loadConfig(os.Getenv)
	require.NoError(t, err)
	log, err := platform.NewLogger(os.Stderr, cfg.LogLevel)
	require.NoError(t, err)
	require.NoError(t, runDev(ctx, cfg, log))
}

// startDevProcess starts `strata dev` (the test binary running TestDevProcess) with vars in its
// environment. When the test ends it is stopped (through its standard input) or killed, and its output
// is logged if the test failed.
func startDevProcess(t *testing.T, vars map[string]string) *childtest.Process {
	t.Helper()
	env := []string{"STRATA_DEV_PROCESS=1"}
	for k, v := range vars { // later entries win
		env = append(env, k+"="+v)
	}
	return childtest.Start(t, childtest.Config{Test: "TestDevProcess", Name: "strata dev", Grace: 15 * time.Second, MustStop: true, Env: env})
}

// crashWrite is one command of the load, and what acknowledged it.
type crashWrite struct {
	kind, key, path, body string
	product               string // the product a stock adjustment adjusts

	id, stream, token string
	version           uint64
	cutOff            time.Time // when a send of it was first cut off by a kill
}

// crashClient drives the command and query services of one `strata dev` across its restarts.
type crashClient struct {
	command, query string
	http           *http.Client
	gate           *upGate

	mu    sync.Mutex
	acks  []*crashWrite
	acked atomic.Int64

	retriedDown, retriedStatus, replayed atomic.Int64
}

func (c *crashClient) record(w *crashWrite) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acks = append(c.acks, w)
	c.acked.Add(1)
}

func (c *crashClient) writes() []*crashWrite {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*crashWrite(nil), c.acks...)
}

func (c *crashClient) count(kind string) int {
	n := 0
	for _, w := range c.writes() {
		if w.kind == kind {
			n++
		}
	}
	return n
}

func (c *crashClient) cutOff(w *crashWrite) {
	c.retriedDown.Add(1)
	if w.cutOff.IsZero() {
		w.cutOff = time.Now()
	}
}

// send posts w until it is acknowledged, with the same Idempotency-Key every time. A send that fails
// because the process is down waits until it is up again; a 5xx or 409 is sent again shortly after.
// Any other answer is an error.
func (c *crashClient) send(ctx context.Context, w *crashWrite) error {
	for attempt := 1; ; attempt++ {
		if attempt > 200 {
			return fmt.Errorf("write %s: not acknowledged after %d attempts", w.key, attempt-1)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.command+w.path, strings.NewReader(w.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", w.key)
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The gate is marked down before a kill, so a send cut off by one waits here for the
			// restart. (A stale keep-alive connection to a killed process is retried at once.)
			c.cutOff(w)
			select {
			case <-c.gate.wait():
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil { // cut off in the middle of the answer
			c.cutOff(w)
			select {
			case <-c.gate.wait():
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			if resp.Header.Get("Idempotent-Replayed") == "true" {
				c.replayed.Add(1)
			}
			var ack struct {
				ID      string `json:"id"`
				Version uint64 `json:"version"`
			}
			if err := json.Unmarshal(body, &ack); err != nil {
				return fmt.Errorf("write %s: %d %s: %w", w.key, resp.StatusCode, body, err)
			}
			w.id, w.version, w.token = ack.ID, ack.Version, resp.Header.Get("Consistency-Token")
			w.stream = "product-" + ack.ID
			if w.kind == "order" {
				w.stream = "order-" + ack.ID
			}
			if w.kind == "stock" && w.id != w.product {
				return fmt.Errorf("write %s: adjusted product %s, acknowledged for %s", w.key, w.product, w.id)
			}
			if w.token == "" || w.version == 0 {
				return fmt.Errorf("write %s: acknowledged without a token or version: %d %s", w.key, resp.StatusCode, body)
			}
			return nil
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusConflict:
			c.retriedStatus.Add(1)
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return fmt.Errorf("write %s: %s %s: %d %s", w.key, http.MethodPost, w.path, resp.StatusCode, body)
		}
	}
}

// get reads path from the query service with a consistency token, waiting up to 10 s for it.
func (c *crashClient) get(ctx context.Context, path, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.query+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Consistency-Token", token)
	req.Header.Set("Prefer", "wait=10")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// waitReady waits until the query and command services of p answer /readyz with 200.
func (c *crashClient) waitReady(t *testing.T, p *childtest.Process) {
	t.Helper()
	ready := func(base string) bool {
		resp, err := c.http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	require.Eventually(t, func() bool {
		if ended, _ := p.Exited(); ended {
			return true
		}
		return ready(c.query) && ready(c.command)
	}, 60*time.Second, 10*time.Millisecond, "strata dev should become ready:\n%s", p.Output())
	ended, err := p.Exited()
	require.False(t, ended, "strata dev ended while starting: %v\n%s", err, p.Output().String())
}

// upGate tells clients whether `strata dev` is up: wait returns a channel that is closed while it
// is up, and open while it is down (from just before a kill until it is ready again). It starts down.
type upGate struct {
	mu sync.Mutex
	ch chan struct{}
}

func newUpGate() *upGate { return &upGate{ch: make(chan struct{})} }

func (g *upGate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

// down marks the process down; call it before killing the process.
func (g *upGate) down() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ch = make(chan struct{})
}

// up marks the process up.
func (g *upGate) up() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.ch)
}
