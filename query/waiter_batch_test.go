package query

// Internal tests: they count the Waiter's progress queries and look into its registry, which the
// black-box tests cannot see.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/internal/syncbuf"
	"github.com/strata-dev/strata/migrations"
)

// batchFixture is a running Waiter on a private schema, with the test standing in for the projectors.
type batchFixture struct {
	t    *testing.T
	pool *pgxpool.Pool
	app  string // the pool's application_name, to find the Waiter's LISTEN connection
	w    *Waiter
	log  *syncbuf.Buffer
}

// newBatchFixture starts a Waiter with the given recheck interval and waits until it listens.
func newBatchFixture(t *testing.T, recheck time.Duration) *batchFixture {
	t.Helper()
	app := "waitertest_" + uuid.NewString()[:8]
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	cfg.MaxConns = 20
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, migrations.Apply(t.Context(), pool, migrations.ReadModel))
	f := &batchFixture{t: t, pool: pool, app: app, log: &syncbuf.Buffer{}}
	f.w = NewWaiter(pool, slog.New(slog.NewTextHandler(f.log, nil)), WithRecheckInterval(recheck))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = f.w.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	require.Eventually(t, func() bool { return f.w.Ready(t.Context()) == nil }, 10*time.Second, 5*time.Millisecond)
	return f
}

// apply records that projection has applied each stream at version, in one commit, as a projector's
// batch does, without notifying.
func (f *batchFixture) apply(projection string, version int64, streams ...string) {
	f.t.Helper()
	_, err := f.pool.Exec(f.t.Context(), `INSERT INTO projection_streams (projection, stream, version)
		SELECT $1, s, $2 FROM unnest($3::text[]) AS s
		ON CONFLICT (projection, stream) DO UPDATE SET version = excluded.version`, projection, version, streams)
	require.NoError(f.t, err)
}

// notify announces progress of projection, as a projector does after each commit.
func (f *batchFixture) notify(projection string) {
	f.t.Helper()
	_, err := f.pool.Exec(f.t.Context(), `SELECT pg_notify(`+consistency.ProgressChannelSQL+`, $1)`, projection)
	require.NoError(f.t, err)
}

// wait starts a Wait for stream@version of projection and returns where its result arrives.
func (f *batchFixture) wait(ctx context.Context, projection, stream string, version uint64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.w.Wait(ctx, projection, map[string]uint64{stream: version}) }()
	return done
}

// announce notifies that projection has applied stream at version, as a projector does after a
// commit.
func (f *batchFixture) announce(projection, stream string, version uint64) {
	f.t.Helper()
	f.notify(consistency.Progress{Projection: projection, Streams: map[string]uint64{stream: version}}.Encode())
}

// appliedAndRemembered records that projection has applied stream at version, announces it, and
// waits until the Waiter remembers it.
func (f *batchFixture) appliedAndRemembered(projection, stream string, version uint64) {
	f.t.Helper()
	f.apply(projection, int64(version), stream)
	f.announce(projection, stream, version)
	require.Eventually(f.t, func() bool { v, ok := f.remembered(projection, stream); return ok && v == version },
		10*time.Second, time.Millisecond)
}

// waitBriefly waits for stream@version of projection for 2 s, well within the fixtures' minute of
// recheck: only a notification or the request's own look can end it in time.
func (f *batchFixture) waitBriefly(projection, stream string, version uint64) error {
	ctx, cancel := context.WithTimeout(f.t.Context(), 2*time.Second)
	defer cancel()
	return f.w.Wait(ctx, projection, map[string]uint64{stream: version})
}

// remembered returns the version the Waiter remembers of projection's stream, and whether it does.
func (f *batchFixture) remembered(projection, stream string) (uint64, bool) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	versions, ok := f.w.known[projection]
	if !ok {
		return 0, false
	}
	v, ok := versions.Peek(stream)
	return v.version, ok
}

// listenPID returns the backend pid of the Waiter's LISTEN connection, 0 if there is none.
func (f *batchFixture) listenPID() int32 {
	f.t.Helper()
	var pid int32
	err := f.pool.QueryRow(f.t.Context(), `SELECT COALESCE(max(pid), 0) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN %'`, f.app).Scan(&pid)
	require.NoError(f.t, err)
	return pid
}

// registered returns how many projections have a registry entry and how many requests are registered.
func (f *batchFixture) registered() (projections, requests int) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	for _, pw := range f.w.registry {
		requests += len(pw.requests)
	}
	return len(f.w.registry), requests
}

// projectionName returns a fresh projection name. Other tests of this and other packages share the
// notification channel and announce "products" and "orders"; their notifications must not count here.
func projectionName(kind string) string { return kind + "-" + uuid.NewString()[:8] }

// streams returns n fresh stream names.
func streams(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "product-" + uuid.NewString()
	}
	return s
}

// received returns the result from c, failing the test if none arrives in time.
func received(t *testing.T, c <-chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end")
		return nil
	}
}

// The tests that count queries do not run in parallel: a parallel test's notification without a
// projection (TestWaiterWait sends one) would make every projection look again.

func TestWaiterOneQueryPerNotificationForAllWaiters(t *testing.T) {
	f := newBatchFixture(t, time.Minute) // no recheck during the test: only the notification wakes
	const n = 200
	products := projectionName("products")
	names := streams(n)
	var results []<-chan error
	for _, s := range names {
		results = append(results, f.wait(t.Context(), products, s, 1))
	}
	require.Eventually(t, func() bool { return f.w.Waiting() == n }, 10*time.Second, time.Millisecond)

	before := f.w.checks.Load()
	f.apply(products, 1, names...)
	f.notify(products)
	for _, c := range results {
		require.NoError(t, received(t, c))
	}
	queries := f.w.checks.Load() - before
	t.Logf("%d waiters woken by one notification with %d progress queries", n, queries)
	require.Equal(t, int64(1), queries, "one check per notification")
}

// TestWaiterTakesVersionsFromTheNotification: a notification that carries the versions its
// projection committed completes the requests waiting for them without a query; versions below
// what a request wants, or another projection's, complete nothing.
func TestWaiterTakesVersionsFromTheNotification(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	products, orders := projectionName("products"), projectionName("orders")
	const n = 20
	names := streams(n)
	results := make([]<-chan error, n)
	for i, s := range names {
		results[i] = f.wait(t.Context(), products, s, 2)
	}
	require.Eventually(t, func() bool { return f.w.Waiting() == n }, 10*time.Second, time.Millisecond)
	before := f.w.checks.Load()

	progress := func(projection string, version uint64, streams ...string) {
		p := consistency.Progress{Projection: projection, Streams: map[string]uint64{}}
		for _, s := range streams {
			p.Streams[s] = version
		}
		f.notify(p.Encode())
	}
	progress(orders, 2, names...)         // another projection
	progress(products, 1, names...)       // too low
	progress(products, 2, names[:n/2]...) // half of them
	for _, c := range results[:n/2] {
		require.NoError(t, received(t, c))
	}
	_, waiting := f.registered()
	require.Equal(t, n/2, waiting, "the others still wait")

	progress(products, 3, names[n/2:]...)
	for _, c := range results[n/2:] {
		require.NoError(t, received(t, c))
	}
	require.Equal(t, before, f.w.checks.Load(), "no progress query")
}

// TestWaiterCombinesLooksAndNotifications: a request for two streams, one found applied by its
// first look, completes when a notification carries the other.
func TestWaiterCombinesLooksAndNotifications(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	products := projectionName("products")
	names := streams(2)
	f.apply(products, 1, names[0])
	done := make(chan error, 1)
	go func() { done <- f.w.Wait(t.Context(), products, map[string]uint64{names[0]: 1, names[1]: 1}) }()
	require.Eventually(t, func() bool { return f.w.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	f.notify(consistency.Progress{Projection: products, Streams: map[string]uint64{names[1]: 1}}.Encode())
	require.NoError(t, received(t, done))
}

// TestWaiterHearsOnlyItsSchema: deployments sharing a database in different schemas may hold the
// same streams (a copy of production, say): another schema's announcement must not release a request.
func TestWaiterHearsOnlyItsSchema(t *testing.T) {
	t.Parallel()
	f := newBatchFixture(t, time.Minute)
	other := pgtest.Pool(t, 2) // another schema of the same database
	products := projectionName("products")
	names := streams(2)
	target, marker := names[0], names[1]
	done := f.wait(t.Context(), products, target, 1)
	markerDone := f.wait(t.Context(), products, marker, 1)
	require.Eventually(t, func() bool { return f.w.Waiting() == 2 }, 10*time.Second, time.Millisecond)

	announce := func(stream string) string {
		return consistency.Progress{Projection: products, Streams: map[string]uint64{stream: 1}}.Encode()
	}
	_, err := other.Exec(t.Context(), `SELECT pg_notify(`+consistency.ProgressChannelSQL+`, $1)`, announce(target))
	require.NoError(t, err)
	// Notifications reach a listener in commit order: once the marker, committed later, is heard,
	// the other schema's would have been, had it been on this channel.
	f.notify(announce(marker))
	require.NoError(t, received(t, markerDone))
	require.Equal(t, 1, f.w.Waiting(), "another schema's announcement released the request")

	f.notify(announce(target))
	require.NoError(t, received(t, done))
}

func TestWaiterQueriesPerReadWhenEachWriteIsNotified(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	products := projectionName("products")
	// n requests wait at once; the writes they wait for commit one by one, each announced: the load
	// of a write followed by a read of it. A request costs its first look plus its share of checks.
	const n = 50
	names := streams(n)
	results := make([]<-chan error, n)
	for i, s := range names {
		results[i] = f.wait(t.Context(), products, s, 1)
	}
	require.Eventually(t, func() bool { return f.w.Waiting() == n }, 10*time.Second, time.Millisecond)
	for i, s := range names {
		f.apply(products, 1, s)
		f.notify(products)
		require.NoError(t, received(t, results[i]))
	}
	queries := f.w.checks.Load()
	t.Logf("%d reads cost %d progress queries: %.2f per read", n, queries, float64(queries)/n)
	require.Equal(t, int64(2*n), queries, "a first look, and one check per notification")
}

func TestWaiterProjectionsDoNotWakeEachOther(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	productsName, ordersName := projectionName("products"), projectionName("orders")
	product, order := "product-"+uuid.NewString(), "order-"+uuid.NewString()
	products := f.wait(t.Context(), productsName, product, 1)
	orders := f.wait(t.Context(), ordersName, order, 1)
	require.Eventually(t, func() bool { return f.w.Waiting() == 2 }, 10*time.Second, time.Millisecond)

	before := f.w.checks.Load()
	f.apply(productsName, 1, product)
	f.apply(ordersName, 1, order)
	f.notify(ordersName)
	require.NoError(t, received(t, orders))
	require.Equal(t, int64(1), f.w.checks.Load()-before, "only the orders projection was looked at")
	select {
	case err := <-products:
		t.Fatalf("the products request was woken by the orders projection: %v", err)
	default:
	}
	require.Equal(t, 1, f.w.Waiting())

	f.notify(productsName)
	require.NoError(t, received(t, products))
}

func TestWaiterRegistryEmptiesWhenWaitsEnd(t *testing.T) {
	t.Parallel()
	f := newBatchFixture(t, 20*time.Millisecond) // checks keep running while requests leave
	const n = 40
	names := streams(n)
	f.apply("products", 1, names[0]) // satisfied at the first look
	cancelled, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i, s := range names {
		wg.Go(func() {
			projection := []string{"products", "orders"}[i%2]
			switch {
			case i == 0:
				assert.NoError(t, f.w.Wait(t.Context(), "products", map[string]uint64{s: 1}))
			case i%4 < 2:
				ctx, stop := context.WithTimeout(t.Context(), 200*time.Millisecond) // several checks run meanwhile
				defer stop()
				err := f.w.Wait(ctx, projection, map[string]uint64{s: 2})
				assert.ErrorIs(t, err, problem.ErrNotYetConsistent)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.ErrorContains(t, err, fmt.Sprintf("projection %s has not yet applied %s@2", projection, s))
			default:
				err := f.w.Wait(cancelled, projection, map[string]uint64{s: 2})
				assert.ErrorIs(t, err, problem.ErrNotYetConsistent)
				assert.ErrorIs(t, err, context.Canceled)
			}
		})
	}
	// Cancel once the requests to be cancelled are likely waiting; any still looking fail the same way.
	require.Eventually(t, func() bool { return f.w.Waiting() >= n/2 }, 10*time.Second, time.Millisecond)
	cancel()
	wg.Wait()
	require.Zero(t, f.w.Waiting())
	require.Eventually(t, func() bool {
		projections, requests := f.registered()
		return projections == 0 && requests == 0
	}, 10*time.Second, time.Millisecond, "every checker retires with its last request")
}

func TestWaiterFailedCheckKeepsRequestsWaiting(t *testing.T) {
	t.Parallel()
	f := newBatchFixture(t, 50*time.Millisecond)
	const n = 10
	names := streams(n)
	var results []<-chan error
	for _, s := range names {
		results = append(results, f.wait(t.Context(), "products", s, 1))
	}
	require.Eventually(t, func() bool { return f.w.Waiting() == n }, 10*time.Second, time.Millisecond)

	// Take the table away: the checks fail (a real failure of the real query, no mock).
	_, err := f.pool.Exec(t.Context(), `ALTER TABLE projection_streams RENAME TO projection_streams_away`)
	require.NoError(t, err)
	before := f.w.checks.Load()
	f.notify("products")
	require.Eventually(t, func() bool {
		return strings.Contains(f.log.String(), "looking at projection progress failed") && f.w.checks.Load()-before >= 3
	}, 10*time.Second, time.Millisecond, "checks fail repeatedly")
	require.Equal(t, n, f.w.Waiting(), "a failed check ends no request")
	for _, c := range results {
		select {
		case err := <-c:
			t.Fatalf("a request ended on a failed check: %v", err)
		default:
		}
	}

	// Progress is made and the table comes back, without a notification: the recheck finds it.
	_, err = f.pool.Exec(t.Context(), `ALTER TABLE projection_streams_away RENAME TO projection_streams`)
	require.NoError(t, err)
	f.apply("products", 1, names...)
	for _, c := range results {
		require.NoError(t, received(t, c))
	}
	require.Eventually(t, func() bool { return strings.Contains(f.log.String(), "looking at projection progress works again") }, 10*time.Second, time.Millisecond)
	log := f.log.String()
	require.Equal(t, 1, strings.Count(log, "looking at projection progress failed"), "one line per change of state:\n%s", log)
	require.Equal(t, 1, strings.Count(log, "looking at projection progress works again"), "%s", log)
}

// TestWaiterRemembersAnnouncedVersions: a request whose streams were all announced, or found by a
// look, needs no look of its own, whether they are applied or their announcement is still to come.
// A projection that announces its name alone is looked up again.
func TestWaiterRemembersAnnouncedVersions(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	products := projectionName("products")
	names := streams(2)
	s, looked := names[0], names[1]
	f.appliedAndRemembered(products, s, 1)

	before := f.w.checks.Load()
	require.NoError(t, f.w.Wait(t.Context(), products, map[string]uint64{s: 1}))
	done := f.wait(t.Context(), products, s, 2)
	require.Eventually(t, func() bool { return f.w.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	f.apply(products, 2, s)
	f.announce(products, s, 2)
	require.NoError(t, received(t, done))
	require.Equal(t, before, f.w.checks.Load(), "no progress query")

	// A look's findings are remembered too.
	f.apply(products, 4, looked)
	require.NoError(t, f.w.Wait(t.Context(), products, map[string]uint64{looked: 3}))
	require.Equal(t, before+1, f.w.checks.Load())
	require.NoError(t, f.w.Wait(t.Context(), products, map[string]uint64{looked: 4}))
	require.Equal(t, before+1, f.w.checks.Load(), "the look's version is remembered")

	// Version 3 is applied without its own announcement, then the name alone is announced: what was
	// remembered is forgotten, and the next request looks.
	f.apply(products, 3, s)
	f.notify(products)
	require.Eventually(t, func() bool { _, ok := f.remembered(products, s); return !ok }, 10*time.Second, time.Millisecond)
	require.NoError(t, f.waitBriefly(products, s, 3))
}

// TestWaiterForgetsWhatItMayHaveMissed: while the LISTEN connection is down announcements are lost,
// so what the Waiter remembers from before cannot be trusted once it listens again.
func TestWaiterForgetsWhatItMayHaveMissed(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	products := projectionName("products")
	s := streams(1)[0]
	f.appliedAndRemembered(products, s, 1)

	pid := f.listenPID()
	require.NotZero(t, pid)
	_, err := f.pool.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	f.apply(products, 2, s) // its announcement is lost with the connection
	require.Eventually(t, func() bool { p := f.listenPID(); return p != 0 && p != pid && f.w.Ready(t.Context()) == nil },
		10*time.Second, 5*time.Millisecond)
	_, ok := f.remembered(products, s)
	require.False(t, ok, "remembered across a lost connection")
	require.NoError(t, f.waitBriefly(products, s, 2))
}

// TestWaiterTrustsOnlyWhatIsFresh: remembered versions are not used once the LISTEN connection has
// not been heard from within the recheck interval (it may have died silently, delivering nothing),
// nor once they are older than knownFor. The request then looks.
func TestWaiterTrustsOnlyWhatIsFresh(t *testing.T) {
	f := newBatchFixture(t, time.Minute)
	products := projectionName("products")
	s := streams(1)[0]
	f.appliedAndRemembered(products, s, 1)

	// age makes the last sign of life of the LISTEN connection, and what is remembered of s, older.
	age := func(heard, learned time.Duration) {
		f.w.mu.Lock()
		defer f.w.mu.Unlock()
		f.w.heard = time.Now().Add(-heard)
		versions := f.w.known[products]
		v, ok := versions.Peek(s)
		require.True(t, ok)
		v.learned = time.Now().Add(-learned)
		versions.Add(s, v)
	}
	f.apply(products, 2, s) // its announcement is lost
	age(2*time.Minute, 0)
	require.NoError(t, f.waitBriefly(products, s, 2), "a connection not heard from is trusted")

	f.apply(products, 3, s) // its announcement is lost too
	age(0, 2*knownFor)
	require.NoError(t, f.waitBriefly(products, s, 3), "a version remembered too long is trusted")
}
