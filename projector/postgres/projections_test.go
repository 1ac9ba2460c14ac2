package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/command"
	"github.com/strata-dev/strata/domain/order"
	"github.com/strata-dev/strata/domain/product"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	espg "github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	rmpg "github.com/strata-dev/strata/projector/postgres"
	"github.com/strata-dev/strata/relay"
)

const (
	streamName = "EVENTS"
	prefix     = "strata"
	partitions = 4
)

// pipeline is the whole write-to-read path: command service, PostgreSQL event store, relay,
// partitioned JetStream stream, and the projectors under test.
type pipeline struct {
	pool  *pgxpool.Pool
	store *espg.Store
	codec *events.Codec
	svc   *command.Service
	js    jetstream.JetStream
	nc    *nats.Conn

	ctx     context.Context // ends with the test, stopping the relay and the projectors
	running *sync.WaitGroup // the relay and the projectors
}

func newPipeline(t *testing.T, projections ...projector.Projection) *pipeline {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pool := pgtest.Pool(t, 24)
	require.NoError(t, migrations.Apply(ctx, pool, migrations.EventStore, migrations.Command, migrations.Relay, migrations.ReadModel))
	store := espg.New(pool, espg.Options{})
	codec, err := events.NewCommerceCodec()
	require.NoError(t, err)
	ns := natstest.Start(t)
	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = broker.EnsureStream(ctx, js, eventsStream())
	require.NoError(t, err)

	rl, err := relay.New(store, pool, nc, relay.Config{Stream: streamName, SubjectPrefix: prefix}, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() { _ = rl.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); store.Close() })
	svc := command.NewService(store, codec, command.NewPostgresSKUs(pool), command.Options{})
	p := &pipeline{pool: pool, store: store, codec: codec, svc: svc, js: js, nc: nc, ctx: ctx, running: &wg}
	for _, proj := range projections {
		p.startProjector(t, proj, nil)
	}
	return p
}

// startProjector runs a projector of proj until the test ends; reg, if not nil, receives its metrics.
func (p *pipeline) startProjector(t *testing.T, proj projector.Projection, reg prometheus.Registerer) {
	t.Helper()
	r, err := projector.NewRunner(p.pool, p.nc, p.codec, proj, projector.Config{Stream: streamName, SubjectPrefix: prefix,
		Partitions: partitions, MaxAttempts: 3, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond},
		slog.New(slog.DiscardHandler), reg)
	require.NoError(t, err)
	p.running.Go(func() { _ = r.Run(p.ctx) })
}

// eventsStream is the configuration of the pipeline's partitioned events stream.
func eventsStream() broker.StreamConfig {
	return broker.StreamConfig{Name: streamName, SubjectPrefix: prefix, Replicas: 1, Duplicates: time.Minute, Partitions: partitions}
}

// recreateStream deletes the events stream and creates it again, empty: it numbers its messages
// from 1 again.
func (p *pipeline) recreateStream(t *testing.T) {
	t.Helper()
	require.NoError(t, p.js.DeleteStream(t.Context(), streamName))
	_, err := broker.EnsureStream(t.Context(), p.js, eventsStream())
	require.NoError(t, err)
}

// runProducts runs a products projector of its own until stop is called.
func (p *pipeline) runProducts(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r, err := projector.NewRunner(p.pool, p.nc, p.codec, rmpg.Products{}, projector.Config{Stream: streamName, SubjectPrefix: prefix,
		Partitions: partitions, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond}, nil, nil)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// waitApplied waits until projection has applied every stream of the given aggregate types to the
// version the store holds.
func (p *pipeline) waitApplied(t *testing.T, projection string, aggregateTypes ...string) {
	t.Helper()
	// Read the events table itself: the store's ReadAll holds back events while any transaction in
	// the cluster is older than them, and would make this wait end too early under load.
	rows, err := p.pool.Query(t.Context(), `SELECT stream_id, max(version) FROM events GROUP BY stream_id`)
	require.NoError(t, err)
	want := map[string]int64{}
	for rows.Next() {
		var stream string
		var version int64
		require.NoError(t, rows.Scan(&stream, &version))
		typ, _, _ := events.SplitStream(stream)
		for _, a := range aggregateTypes {
			if typ == a {
				want[stream] = version
			}
		}
	}
	require.NoError(t, rows.Err())
	require.Eventually(t, func() bool {
		rows, err := p.pool.Query(t.Context(), `SELECT stream, version FROM projection_streams WHERE projection = $1`, projection)
		if err != nil {
			return false
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
			Stream  string
			Version int64
		}])
		if err != nil {
			return false
		}
		n := 0
		for _, g := range got {
			if want[g.Stream] == g.Version {
				n++
			}
		}
		return n == len(want)
	}, 60*time.Second, 10*time.Millisecond, "projection %s should catch up with %d streams", projection, len(want))
}

// history reads every stream of the store, decoded.
func (p *pipeline) history(t *testing.T) map[string][]events.Event {
	t.Helper()
	rows, err := p.pool.Query(t.Context(), `SELECT DISTINCT stream_id FROM events`)
	require.NoError(t, err)
	streams, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	out := map[string][]events.Event{}
	for _, stream := range streams {
		recs, err := p.store.ReadStream(t.Context(), stream, 1, 100_000)
		require.NoError(t, err)
		for _, r := range recs {
			e, err := p.codec.Decode(r.Type, r.SchemaVersion, r.Data)
			require.NoError(t, err)
			out[stream] = append(out[stream], e)
		}
	}
	return out
}

// workload runs a randomized commerce workload through the command service and returns the
// product ids.
func workload(t *testing.T, svc *command.Service, products, steps int) []string {
	t.Helper()
	ctx := t.Context()
	var ids []string
	for i := range products {
		res, err := svc.CreateProduct(ctx, product.Create{SKU: fmt.Sprintf("SKU-%d-%d", i, rand.Uint32()), Name: fmt.Sprintf("Product %d", i),
			Description: "d", Category: []string{"kitchen", "garden", "books"}[i%3], PriceCents: int64(100 + i), Currency: "EUR", Tags: []string{"t"}}, command.Request{})
		require.NoError(t, err)
		ids = append(ids, res.ID)
	}
	var orders []string
	for range steps {
		id := ids[rand.IntN(len(ids))]
		var err error
		switch rand.IntN(7) {
		case 0, 1:
			_, err = svc.AdjustStock(ctx, id, int64(rand.IntN(20)+1), "delivery", command.Request{})
		case 2:
			_, err = svc.RenameProduct(ctx, id, fmt.Sprintf("Renamed %d", rand.IntN(1000)), command.Request{})
		case 3:
			_, err = svc.RepriceProduct(ctx, id, int64(rand.IntN(5000)+1), command.Request{})
		case 4:
			var res command.Result
			res, err = svc.PlaceOrder(ctx, command.PlaceOrder{CustomerID: fmt.Sprintf("c%d", rand.IntN(5)), CustomerName: "Ada",
				CustomerEmail: "ada@example.com", Lines: []command.OrderLine{{ProductID: id, Quantity: int64(rand.IntN(3) + 1)}}}, command.Request{})
			if err == nil {
				orders = append(orders, res.ID)
			}
		case 5:
			if len(orders) > 0 {
				_, err = svc.CancelOrder(ctx, orders[rand.IntN(len(orders))], "changed mind", command.Request{})
			}
		case 6:
			if rand.IntN(10) == 0 {
				_, err = svc.DiscontinueProduct(ctx, id, "end of line", command.Request{})
			}
		}
		if err != nil && !strings.Contains(err.Error(), "rule") && !strings.Contains(err.Error(), "invalid") {
			require.NoError(t, err)
		}
	}
	return ids
}

// TestProjectionEqualsReplay runs a randomized workload, then folds every stream of the store in
// memory and compares with the read-model rows: they must be identical.
func TestProjectionEqualsReplay(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, rmpg.Products{}, rmpg.Orders{})
	workload(t, p.svc, 15, 400)
	p.waitApplied(t, "products", events.ProductAggregate)
	p.waitApplied(t, "orders", events.OrderAggregate)

	p.requireReadModelEqualsReplay(t)
}

// requireReadModelEqualsReplay folds every stream of the store in memory and compares the result
// with the products and orders rows.
func (p *pipeline) requireReadModelEqualsReplay(t *testing.T) {
	t.Helper()
	for stream, history := range p.history(t) {
		typ, id, _ := events.SplitStream(stream)
		switch typ {
		case events.ProductAggregate:
			want := product.Replay(id, history)
			var got struct {
				SKU, Name, Description, Category, Currency string
				PriceCents, Stock, Version                 int64
				Tags                                       []string
				Discontinued                               bool
			}
			err := p.pool.QueryRow(t.Context(), `SELECT sku, name, description, category, currency, price_cents, stock, version, tags, discontinued
				FROM products WHERE id = $1`, id).Scan(&got.SKU, &got.Name, &got.Description, &got.Category, &got.Currency,
				&got.PriceCents, &got.Stock, &got.Version, &got.Tags, &got.Discontinued)
			require.NoError(t, err, stream)
			require.Equal(t, []any{want.SKU(), want.Name(), want.Description(), want.Category(), want.Currency(), want.PriceCents(), want.Stock(),
				int64(len(history)), want.Tags(), want.Discontinued()},
				[]any{got.SKU, got.Name, got.Description, got.Category, got.Currency, got.PriceCents, got.Stock, got.Version, got.Tags, got.Discontinued}, stream)
		case events.OrderAggregate:
			want := order.Replay(id, history)
			var status, customer string
			var total, version int64
			require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT status, customer_id, total_cents, version FROM orders WHERE id = $1`, id).
				Scan(&status, &customer, &total, &version), stream)
			require.Equal(t, []any{string(want.Status()), want.CustomerID(), want.TotalCents(), int64(len(history))},
				[]any{status, customer, total, version}, stream)
			var lines, entries int
			require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM order_lines WHERE order_id = $1),
				(SELECT count(*) FROM order_status_history WHERE order_id = $1)`, id).Scan(&lines, &entries))
			require.Equal(t, len(want.Lines()), lines, stream)
			require.Equal(t, len(history), entries, "one status history entry per event of %s", stream)
		}
	}
}

// failing wraps a projection and fails every event of one stream (or only its event version, when
// set) while broken is set.
type failing struct {
	projector.Projection
	mu      sync.Mutex
	stream  string
	version uint64
	broken  bool
}

func (f *failing) Apply(b *pgx.Batch, e events.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken && e.Stream == f.stream && (f.version == 0 || e.Version == f.version) {
		return fmt.Errorf("poison in %s@%d", e.Stream, e.Version)
	}
	return f.Projection.Apply(b, e)
}

// TestPoisonEventIsParkedAndOtherStreamsCarryOn breaks one product's stream: its event is parked
// after the retries, its later events wait behind it, every other product keeps projecting.
func TestPoisonEventIsParkedAndOtherStreamsCarryOn(t *testing.T) {
	t.Parallel()
	f := &failing{Projection: rmpg.Products{}}
	p := newPipeline(t, f)
	announced := listenProgress(t, p.pool)
	ids := workload(t, p.svc, 6, 0)
	p.waitApplied(t, "products", events.ProductAggregate)

	poisoned := ids[0]
	f.mu.Lock()
	f.stream, f.broken = events.StreamName(events.ProductAggregate, poisoned), true
	f.mu.Unlock()
	for range 3 {
		_, err := p.svc.AdjustStock(t.Context(), poisoned, 1, "delivery", command.Request{})
		require.NoError(t, err)
	}
	for _, id := range ids[1:] {
		_, err := p.svc.AdjustStock(t.Context(), id, 5, "delivery", command.Request{})
		require.NoError(t, err)
	}

	require.Eventually(t, func() bool {
		var parked, waiting int
		err := p.pool.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE status = 'parked'), count(*) FILTER (WHERE status = 'waiting')
			FROM dead_letters WHERE stream = $1`, f.stream).Scan(&parked, &waiting)
		return err == nil && parked == 1 && waiting == 2
	}, 30*time.Second, 10*time.Millisecond, "the first event is parked and the next two wait behind it")

	for _, id := range ids[1:] {
		require.Eventually(t, func() bool {
			var stock int64
			err := p.pool.QueryRow(t.Context(), `SELECT stock FROM products WHERE id = $1`, id).Scan(&stock)
			return err == nil && stock == 5
		}, 30*time.Second, 10*time.Millisecond, "other streams carry on")
	}
	var stock, version int64
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT stock, version FROM products WHERE id = $1`, poisoned).Scan(&stock, &version))
	require.Equal(t, []int64{0, 1}, []int64{stock, version}, "nothing of the poisoned stream is applied past its parked event")

	var parkedVersions []int64
	rows, err := p.pool.Query(t.Context(), `SELECT version FROM dead_letters WHERE stream = $1 ORDER BY version`, f.stream)
	require.NoError(t, err)
	parkedVersions, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.True(t, sort.SliceIsSorted(parkedVersions, func(i, j int) bool { return parkedVersions[i] < parkedVersions[j] }))
	require.Equal(t, []int64{2, 3, 4}, parkedVersions)

	// The query service believes the versions notifications carry: parked events must not be among
	// them, applied ones must.
	other := events.StreamName(events.ProductAggregate, ids[1])
	require.Eventually(t, func() bool {
		for _, pr := range announced() {
			if pr.Projection == "products" && pr.Streams[other] == 2 {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "notifications carry the applied versions")
	for _, pr := range announced() {
		if pr.Projection == "products" {
			require.Less(t, pr.Streams[f.stream], uint64(2), "a parked event announced as applied")
		}
	}
}

// TestTakingAPartitionAnnouncesTheNameAlone: the query service trusts that every commit is
// announced, but a process that takes a partition cannot know whether the previous owner announced
// its last commits before it died. It announces the projection's name alone, which makes the query
// service look.
func TestTakingAPartitionAnnouncesTheNameAlone(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	announced := listenProgress(t, p.pool)
	p.startProjector(t, rmpg.Products{}, nil)
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(announced(), func(pr consistency.Progress) bool {
			return pr.Projection == "products" && len(pr.Streams) == 0
		})
	}, 10*time.Second, 5*time.Millisecond)
}

// TestProjectorMetrics: applied events are counted, with how long after their commit in the event
// store they were applied.
func TestProjectorMetrics(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	reg := prometheus.NewRegistry()
	p.startProjector(t, rmpg.Products{}, reg)
	workload(t, p.svc, 3, 0)
	p.waitApplied(t, "products", events.ProductAggregate)
	var n int
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE stream_id LIKE 'product-%'`).Scan(&n))

	// The metrics follow the commits that waitApplied sees. A redelivered event is counted again
	// (the version guard makes it a no-op): at least n, one delay per count.
	var applied float64
	var delay *dto.Histogram
	require.Eventually(t, func() bool {
		families, err := reg.Gather()
		require.NoError(t, err)
		got := map[string]*dto.Metric{}
		for _, f := range families {
			got[f.GetName()] = f.GetMetric()[0]
		}
		applied = got["strata_projector_applied_total"].GetCounter().GetValue()
		delay = got["strata_projector_delay_seconds"].GetHistogram()
		return applied >= float64(n) && delay.GetSampleCount() == uint64(applied)
	}, 10*time.Second, 5*time.Millisecond)
	require.Positive(t, delay.GetSampleSum())
	require.Less(t, delay.GetSampleSum()/applied, 30.0, "seconds, on average: the delay of a test's events")
}

// listenProgress listens to the projectors' notifications until the test ends and returns what
// arrived so far.
func listenProgress(t *testing.T, pool *pgxpool.Pool) (announced func() []consistency.Progress) {
	t.Helper()
	pooled, err := pool.Acquire(t.Context())
	require.NoError(t, err)
	conn := pooled.Hijack()
	var channel string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT "+consistency.ProgressChannelSQL).Scan(&channel))
	_, err = conn.Exec(t.Context(), "LISTEN "+pgx.Identifier{channel}.Sanitize())
	require.NoError(t, err)
	var mu sync.Mutex
	var got []consistency.Progress
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, consistency.ParseProgress(n.Payload))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped; _ = conn.Close(context.Background()) })
	return func() []consistency.Progress {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestRetryAfterTheCauseIsFixed parks a stream, fixes the cause, retries: the stream catches up in
// order, including events that arrive while it is parked and after it is released.
func TestRetryAfterTheCauseIsFixed(t *testing.T) {
	t.Parallel()
	f := &failing{Projection: rmpg.Products{}}
	p := newPipeline(t, f)
	ids := workload(t, p.svc, 2, 0)
	p.waitApplied(t, "products", events.ProductAggregate)
	f.mu.Lock()
	f.stream, f.broken = events.StreamName(events.ProductAggregate, ids[0]), true
	f.mu.Unlock()
	for _, delta := range []int64{1, 2, 4} {
		_, err := p.svc.AdjustStock(t.Context(), ids[0], delta, "delivery", command.Request{})
		require.NoError(t, err)
	}
	dl := projector.NewDeadLetters(p.pool, p.codec, f)
	var parked projector.DeadLetter
	require.Eventually(t, func() bool {
		list, err := dl.List(t.Context(), 10)
		if err != nil || len(list) != 3 {
			return false
		}
		parked = list[0]
		return parked.Status == "parked"
	}, 30*time.Second, 10*time.Millisecond)

	_, err := dl.Retry(t.Context(), parked.ID)
	require.Error(t, err, "still broken: retry fails and changes nothing")
	_, err = dl.Retry(t.Context(), parked.ID+1)
	require.ErrorIs(t, err, projector.ErrNoDeadLetter, "a waiting event is not retried alone")

	f.mu.Lock()
	f.broken = false
	f.mu.Unlock()
	rel, err := dl.Retry(t.Context(), parked.ID)
	require.NoError(t, err)
	require.Equal(t, projector.Release{Applied: 3}, rel, "the parked event and the two behind it; the stream is released")
	_, err = p.svc.AdjustStock(t.Context(), ids[0], 8, "delivery", command.Request{})
	require.NoError(t, err)
	p.waitApplied(t, "products", events.ProductAggregate)
	var stock int64
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT stock FROM products WHERE id = $1`, ids[0]).Scan(&stock))
	require.Equal(t, int64(15), stock)
	list, err := dl.List(t.Context(), 10)
	require.NoError(t, err)
	require.Empty(t, list)
}

// outage wraps a projection whose store is down while down is set: every event fails with
// projector.ErrUnavailable, as the Elasticsearch projections report a cluster that cannot be
// reached.
type outage struct {
	projector.Projection
	mu       sync.Mutex
	down     bool
	failures int
}

func (o *outage) Apply(b *pgx.Batch, e events.Envelope) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		o.failures++
		return fmt.Errorf("store of %s@%d: %w", e.Stream, e.Version, projector.ErrUnavailable)
	}
	return o.Projection.Apply(b, e)
}

// TestUnavailableStoreIsWaitedFor takes the read model's store away for far more attempts than an
// event gets before it is parked: nothing is parked, and once the store is back every event applies.
func TestUnavailableStoreIsWaitedFor(t *testing.T) {
	t.Parallel()
	o := &outage{Projection: rmpg.Products{}}
	p := newPipeline(t, o)
	ids := workload(t, p.svc, 3, 0)
	p.waitApplied(t, "products", events.ProductAggregate)

	o.mu.Lock()
	o.down = true
	o.mu.Unlock()
	for _, id := range ids {
		_, err := p.svc.AdjustStock(t.Context(), id, 3, "delivery", command.Request{})
		require.NoError(t, err)
	}
	// The pipeline parks after 3 attempts; wait for many more failures than that.
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.failures >= 20
	}, 30*time.Second, 5*time.Millisecond, "the runner keeps retrying")
	var parked int
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT count(*) FROM dead_letters`).Scan(&parked))
	require.Zero(t, parked, "an outage parks nothing")

	o.mu.Lock()
	o.down = false
	o.mu.Unlock()
	p.waitApplied(t, "products", events.ProductAggregate)
	for _, id := range ids {
		var stock int64
		require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT stock FROM products WHERE id = $1`, id).Scan(&stock))
		require.Equal(t, int64(3), stock)
	}
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT count(*) FROM dead_letters`).Scan(&parked))
	require.Zero(t, parked)
}

// TestProjectionResumesInARecreatedStream: the events stream is deleted and created again while the
// projector is stopped, and the relay goes on publishing into it, so the projector's checkpoint
// names a sequence of the old stream, which in the new one holds another event. The projector
// must resume at the first event after its checkpoint's position, skipping and repeating nothing.
func TestProjectionResumesInARecreatedStream(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	stop := p.runProducts(t)
	ids := workload(t, p.svc, 4, 0)
	for range 20 {
		_, err := p.svc.AdjustStock(t.Context(), ids[rand.IntN(len(ids))], 1, "count", command.Request{})
		require.NoError(t, err)
	}
	p.waitApplied(t, "products", events.ProductAggregate)
	stop()

	p.recreateStream(t)
	// New products first: the new stream's first sequences, which the old checkpoints name, hold
	// their only events. Then more events than the old stream held.
	workload(t, p.svc, 8, 0)
	for range 60 {
		_, err := p.svc.AdjustStock(t.Context(), ids[rand.IntN(len(ids))], 1, "count", command.Request{})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		s, err := p.js.Stream(t.Context(), streamName)
		return err == nil && s.CachedInfo().State.Msgs == 68
	}, 30*time.Second, 10*time.Millisecond, "the relay should publish the new events into the new stream")

	defer p.runProducts(t)()
	p.waitApplied(t, "products", events.ProductAggregate)
	p.requireReadModelEqualsReplay(t)
}

// deadLetter is a dead_letters row as the tests look at it.
type deadLetter struct {
	ID      int64
	Version int64
	Status  string
}

func (p *pipeline) deadLetters(t *testing.T, stream string) []deadLetter {
	t.Helper()
	rows, err := p.pool.Query(t.Context(), `SELECT id, version, status FROM dead_letters WHERE stream = $1 ORDER BY version`, stream)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[deadLetter])
	require.NoError(t, err)
	return out
}

// parkRow writes a dead letter as a projector would, for shapes a test cannot make a projector
// produce on cue: rec's message with data instead of its own.
func (p *pipeline) parkRow(t *testing.T, rec eventstore.RecordedEvent, data []byte, status string) {
	t.Helper()
	h, err := json.Marshal(relay.Message(prefix, rec).Header)
	require.NoError(t, err)
	_, err = p.pool.Exec(t.Context(), `INSERT INTO dead_letters (projection, stream, version, event_id, event_type, headers, data, status, error, attempts)
		VALUES ('products', $1, $2, $3, $4, $5, $6, $7, 'written by the test', 0)`,
		rec.Stream, int64(rec.Version), rec.ID, rec.Type, h, data, status)
	require.NoError(t, err)
}

// TestSkipDropsTheEventAskedFor: Skip and Retry act on the parked event they are given, whatever
// else the stream holds: a redelivery of an applied event waiting below it (applied again, to no
// effect), and a waiting event that cannot be decoded, which stops the release and becomes the
// stream's parked event, to be skipped in turn.
func TestSkipDropsTheEventAskedFor(t *testing.T) {
	t.Parallel()
	f := &failing{Projection: rmpg.Products{}}
	p := newPipeline(t, f)
	ids := workload(t, p.svc, 2, 0)
	p.waitApplied(t, "products", events.ProductAggregate)
	stream := events.StreamName(events.ProductAggregate, ids[0])
	f.mu.Lock()
	f.stream, f.version, f.broken = stream, 2, true
	f.mu.Unlock()
	adjust := func(delta int64) {
		_, err := p.svc.AdjustStock(t.Context(), ids[0], delta, "delivery", command.Request{})
		require.NoError(t, err)
	}
	adjust(1) // version 2: poison
	adjust(2)
	adjust(4)
	require.Eventually(t, func() bool { return len(p.deadLetters(t, stream)) == 3 }, 30*time.Second, 10*time.Millisecond)

	recs, err := p.store.ReadStream(t.Context(), stream, 1, 10)
	require.NoError(t, err)
	p.parkRow(t, recs[0], recs[0].Data, "waiting") // version 1 delivered again while version 2 is parked
	next := recs[3]
	next.Version, next.ID = 5, uuid.NewString()
	p.parkRow(t, next, []byte("not json"), "waiting") // version 5, before the real one arrives: it cannot be decoded
	adjust(8)                                         // version 5: ON CONFLICT keeps the undecodable row
	adjust(16)                                        // version 6
	require.Eventually(t, func() bool { return len(p.deadLetters(t, stream)) == 6 }, 30*time.Second, 10*time.Millisecond)

	dl := projector.NewDeadLetters(p.pool, p.codec, f)
	rows := p.deadLetters(t, stream)
	require.Equal(t, []string{"waiting", "parked", "waiting", "waiting", "waiting", "waiting"},
		[]string{rows[0].Status, rows[1].Status, rows[2].Status, rows[3].Status, rows[4].Status, rows[5].Status})
	rel, err := dl.Skip(t.Context(), rows[1].ID)
	require.NoError(t, err, "skip version 2")
	require.Equal(t, projector.Release{Applied: 2, Parked: rows[4].ID}, rel,
		"versions 3 and 4 applied (version 1 again, to no effect); the undecodable version 5 blocks the stream now")
	var stock, version int64
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT stock, version FROM products WHERE id = $1`, ids[0]).Scan(&stock, &version))
	require.Equal(t, []int64{7, 4}, []int64{stock, version}, "versions 3 and 4 applied, version 2 not")
	left := p.deadLetters(t, stream)
	require.Equal(t, []deadLetter{{rows[4].ID, 5, "parked"}, {rows[5].ID, 6, "waiting"}}, left,
		"the undecodable version 5 is now the parked event")

	_, err = dl.Retry(t.Context(), left[0].ID)
	require.Error(t, err, "it still cannot be decoded")
	rel, err = dl.Skip(t.Context(), left[0].ID)
	require.NoError(t, err)
	require.Equal(t, projector.Release{Applied: 1}, rel, "version 6")
	p.waitApplied(t, "products", events.ProductAggregate)
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT stock, version FROM products WHERE id = $1`, ids[0]).Scan(&stock, &version))
	require.Equal(t, []int64{31, 6}, []int64{stock, version})
	require.Empty(t, p.deadLetters(t, stream))
}

// TestMalformedMessagesAreParkedOneByOne publishes messages whose headers text columns cannot hold
// (invalid UTF-8, NUL) into the products' partitions. Those naming no usable stream are parked on
// their own, can be skipped one by one but not retried (their headers were made storable, so they
// might decode as another event), and the partition carries on; one with a usable stream and a
// type that is not text is parked in its stream, in order.
func TestMalformedMessagesAreParkedOneByOne(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, rmpg.Products{})
	ids := workload(t, p.svc, 2, 0)
	p.waitApplied(t, "products", events.ProductAggregate)
	// The relay resumes after the position of the stream's last message when its publish finds
	// another message last: the bad messages carry the position of the last event relayed.
	stream, err := p.js.Stream(t.Context(), streamName)
	require.NoError(t, err)
	last, err := stream.GetLastMsgForSubject(t.Context(), prefix+".>")
	require.NoError(t, err)
	position := last.Header.Get(relay.HeaderPosition)
	for i := range 2 {
		m := nats.NewMsg(relay.Subject(prefix, events.StreamName(events.ProductAggregate, ids[0])))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("bad-%d\x00", i))
		m.Header.Set(relay.HeaderStream, "product-\xff")
		m.Header.Set(relay.HeaderType, "product.renamed")
		m.Header.Set("X-Junk", "a\x00b\xff")
		m.Header.Set(relay.HeaderPosition, position)
		m.Data = []byte("{}")
		_, err := p.js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
	}
	pos, err := events.ParsePosition(position)
	require.NoError(t, err)
	other := events.StreamName(events.ProductAggregate, ids[1])
	badType := relay.Message(prefix, eventstore.RecordedEvent{ID: "bad-type\x00", Stream: other, Version: 2, Position: pos,
		Type: "product.renamed\x00", SchemaVersion: 1, Data: []byte("{}"), OccurredAt: time.Now(), RecordedAt: time.Now()})
	_, err = p.js.PublishMsg(t.Context(), badType)
	require.NoError(t, err)
	_, err = p.svc.AdjustStock(t.Context(), ids[0], 3, "delivery", command.Request{})
	require.NoError(t, err)
	p.waitApplied(t, "products", events.ProductAggregate)

	dl := projector.NewDeadLetters(p.pool, p.codec, rmpg.Products{})
	bad := p.deadLetters(t, "(undecodable)")
	require.Len(t, bad, 2)
	_, err = dl.Retry(t.Context(), bad[0].ID)
	require.ErrorContains(t, err, "cannot be retried, only skipped")
	rel, err := dl.Skip(t.Context(), bad[0].ID)
	require.NoError(t, err)
	require.Equal(t, projector.Release{}, rel)
	require.Equal(t, bad[1:], p.deadLetters(t, "(undecodable)"), "only the one asked for")
	_, err = dl.Skip(t.Context(), bad[1].ID)
	require.NoError(t, err)
	require.Empty(t, p.deadLetters(t, "(undecodable)"))

	inOrder := p.deadLetters(t, other)
	require.Equal(t, []deadLetter{{inOrder[0].ID, 2, "parked"}}, inOrder)
	var typ string
	require.NoError(t, p.pool.QueryRow(t.Context(), `SELECT event_type FROM dead_letters WHERE id = $1`, inOrder[0].ID).Scan(&typ))
	require.Equal(t, "product.renamed\uFFFD", typ)
	_, err = dl.Retry(t.Context(), inOrder[0].ID)
	require.Error(t, err, "its type is unknown")
	_, err = dl.Skip(t.Context(), inOrder[0].ID)
	require.NoError(t, err)
	require.Empty(t, p.deadLetters(t, other))
}

// breaking wraps a projection whose statements for one stream terminate their own connection, as
// a statement that crashes its backend would, every time.
type breaking struct {
	projector.Projection
	mu     sync.Mutex
	stream string
}

func (k *breaking) Apply(b *pgx.Batch, e events.Envelope) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e.Stream == k.stream {
		b.Queue(`SELECT pg_terminate_backend(pg_backend_pid())`)
		return nil
	}
	return k.Projection.Apply(b, e)
}

// TestAnEventThatBreaksItsConnectionIsParked: a lost connection is an outage and does not count as
// an attempt, unless the database answers at once: then the event itself broke it, and it is parked
// after its attempts like any other poison, instead of being retried for ever.
func TestAnEventThatBreaksItsConnectionIsParked(t *testing.T) {
	t.Parallel()
	k := &breaking{Projection: rmpg.Products{}}
	p := newPipeline(t, k)
	ids := workload(t, p.svc, 2, 0)
	p.waitApplied(t, "products", events.ProductAggregate)
	k.mu.Lock()
	k.stream = events.StreamName(events.ProductAggregate, ids[0])
	k.mu.Unlock()
	for _, id := range ids {
		_, err := p.svc.AdjustStock(t.Context(), id, 3, "delivery", command.Request{})
		require.NoError(t, err)
	}
	stream := events.StreamName(events.ProductAggregate, ids[0])
	require.Eventually(t, func() bool {
		dl := p.deadLetters(t, stream)
		return len(dl) == 1 && dl[0].Status == "parked"
	}, 30*time.Second, 10*time.Millisecond, "the event is parked")
	require.Eventually(t, func() bool {
		var stock int64
		err := p.pool.QueryRow(t.Context(), `SELECT stock FROM products WHERE id = $1`, ids[1]).Scan(&stock)
		return err == nil && stock == 3
	}, 30*time.Second, 10*time.Millisecond, "other streams carry on")
}

// TestCheckpointFollowsARecreatedStream: after the events stream is deleted and created again, the
// new stream numbers its messages from 1, below the checkpoints of the old one. The checkpoints must
// follow the new numbering, or they would stay behind (batches only ever raise them) and every
// resume would replay everything since the recreation.
func TestCheckpointFollowsARecreatedStream(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	adjustEach := func(ids []string) {
		for _, id := range ids {
			_, err := p.svc.AdjustStock(t.Context(), id, 1, "count", command.Request{})
			require.NoError(t, err)
		}
	}
	stop := p.runProducts(t)
	ids := workload(t, p.svc, 4, 0)
	for range 5 {
		adjustEach(ids) // 24 messages; the last four, one per product, set every checkpoint at 21 or above
	}
	p.waitApplied(t, "products", events.ProductAggregate)
	stop()

	p.recreateStream(t)
	workload(t, p.svc, 8, 0)
	adjustEach(ids) // 12 messages in all: every partition's last one lies below its old checkpoint
	stream, err := p.js.Stream(t.Context(), streamName)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(t.Context())
		return err == nil && info.State.Msgs == 12
	}, 30*time.Second, 10*time.Millisecond, "the relay should publish the new events into the new stream")

	defer p.runProducts(t)()
	p.waitApplied(t, "products", events.ProductAggregate)
	rows, err := p.pool.Query(t.Context(), `SELECT partition FROM projection_checkpoints WHERE projection = 'products'`)
	require.NoError(t, err)
	checkpointed, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	require.NotEmpty(t, checkpointed)
	for _, part := range checkpointed {
		last, err := stream.GetLastMsgForSubject(t.Context(), fmt.Sprintf("%s.%d.>", prefix, part))
		require.NoError(t, err, "partition %d", part)
		require.Eventually(t, func() bool {
			var seq int64
			var position string
			err := p.pool.QueryRow(t.Context(), `SELECT stream_sequence, position FROM projection_checkpoints
				WHERE projection = 'products' AND partition = $1`, part).Scan(&seq, &position)
			return err == nil && uint64(seq) == last.Sequence && position == last.Header.Get(relay.HeaderPosition)
		}, 10*time.Second, 10*time.Millisecond, "partition %d's checkpoint is its last message in the new stream", part)
	}
	p.requireReadModelEqualsReplay(t)
}
