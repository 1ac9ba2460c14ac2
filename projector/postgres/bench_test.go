package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	neturl "net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/bench"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/childtest"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	rmpg "github.com/strata-dev/strata/projector/postgres"
	"github.com/strata-dev/strata/relay"
)

const (
	// catchUpPartitions is NATS_PARTITIONS' default: the projector runs this many partitions at once,
	// and the raw baseline this many writers.
	catchUpPartitions = 8
	// catchUpBatch is the projector's default batch size, and the raw baseline's.
	catchUpBatch = 512
	// eventsPerProduct: every product of a backlog has one product.created and then stock
	// adjustments, renames and repricings.
	eventsPerProduct = 10
	// childEnv carries the configuration of the projector process BenchmarkCatchUp starts.
	childEnv = "STRATA_BENCH_PROJECTOR_CHILD"
	// The application names of the PostgreSQL sessions of the projector process and of the raw
	// writers, by which their backends' CPU time is found.
	projectorApp, rawApp = "strata-bench-projector", "strata-bench-raw"
)

// BenchmarkCatchUp measures how fast the products projection catches up on a backlog that is already
// in JetStream, and, in the same run, how fast the same rows are written by plain batched pgx upserts
// with no JetStream and no projector runtime: the raw baseline. It reports both rates and their ratio
// (projector / raw), and the projector's peak memory on two backlogs, N/10 and N, which should be
// about equal: memory must not grow with the backlog.
//
// The backlog is STRATA_BENCH_BACKLOG events (default 1,000,000), N/10 products of 10 events each
// (product.created, then stock adjustments, renames and repricings), published straight to a
// partitioned JetStream stream in relay.Message format (no command service, no event store), round
// by round: every product's version 1, then every product's version 2, and so on. It is built
// outside the timer.
//
//   - projector: a separate process (this test binary again, running TestCatchUpProjectorProcess)
//     runs projector.Runner with the Products projection and the default configuration (8
//     partitions, batches of 512) from an empty schema; timed from its start until every partition's
//     consumer has nothing pending and nothing unacknowledged. A process of its own, so that its
//     memory is the projector's alone and not the NATS server's (which runs in the benchmark's
//     process): every 10 ms it samples runtime.MemStats HeapInuse and the live heap (the heap the
//     last GC found reachable, /gc/heap/live:bytes, which does not depend on when GC ran), and it
//     reports their peaks and its peak RSS (VmHWM). The live heap is the figure to compare.
//   - raw: 8 writers, each holding the events of its share of the products (in order), write every
//     event's resulting row with INSERT … ON CONFLICT (id) DO UPDATE … WHERE version is older, 512
//     per transaction, pipelined in one pgx.Batch, into a products table of the same schema; the
//     rows are computed in memory just before (they are not held during the projector's run, where
//     collecting their garbage would take CPU from it).
//
// Beside the rates it reports CPU time per event, which the host's noise disturbs much less than
// rates: of the projector process, of the NATS server (this process, while the projector runs), of
// the raw writers (this process, while they run) and, when PostgreSQL runs on this machine, of the
// PostgreSQL backends serving each (read from /proc; background processes such as autovacuum and
// the WAL writer are not counted).
//
// Below about 100,000 events the projector's buffers (8 partitions × 1,024 pulled messages) are not
// yet full, so memory is only comparable between backlogs at or above that size. A run takes about a
// minute for the default backlog; one operation is the whole scenario, so the benchmark runs once
// whatever -benchtime says.
func BenchmarkCatchUp(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("STRATA_BENCH_BACKLOG"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err, "STRATA_BENCH_BACKLOG")
	}
	n = max(n/(10*eventsPerProduct)*(10*eventsPerProduct), 10*eventsPerProduct) // N/10 whole products too
	load, loadOK := bench.LoadAverage()
	codec, err := events.NewCommerceCodec()
	require.NoError(b, err)
	ns := natstest.Start(b)
	js, err := jetstream.New(ns.Connect(b))
	require.NoError(b, err)

	b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
		var small, large catchUpRun
		var raw rawRun
		for i := range b.N {
			b.StopTimer()
			smallLog := publishBacklog(b, js, codec, fmt.Sprintf("BENCH_SMALL_%d", i), "small", n/10)
			largeLog := publishBacklog(b, js, codec, fmt.Sprintf("BENCH_LARGE_%d", i), "large", n)
			b.StartTimer()
			small = catchUp(b, ns.URL(), smallLog)
			large = catchUp(b, ns.URL(), largeLog)
			raw = rawUpserts(b, largeLog) // times only the writes
			b.StopTimer()
			require.NoError(b, js.DeleteStream(b.Context(), smallLog.stream))
			require.NoError(b, js.DeleteStream(b.Context(), largeLog.stream))
			b.StartTimer()
		}
		projRate, rawRate := float64(n)/large.elapsed.Seconds(), float64(n)/raw.elapsed.Seconds()
		mb := func(v uint64) float64 { return float64(v) / (1 << 20) }
		b.ReportMetric(projRate, "projector-events/s")
		b.ReportMetric(rawRate, "raw-events/s")
		b.ReportMetric(projRate/rawRate, "ratio")
		b.ReportMetric(float64(n/10)/small.elapsed.Seconds(), "projector-N/10-events/s")
		b.ReportMetric(mb(small.heapPeak), "heap-N/10-MB")
		b.ReportMetric(mb(large.heapPeak), "heap-N-MB")
		b.ReportMetric(mb(small.livePeak), "live-N/10-MB")
		b.ReportMetric(mb(large.livePeak), "live-N-MB")
		b.ReportMetric(mb(small.rssPeak), "rss-N/10-MB")
		b.ReportMetric(mb(large.rssPeak), "rss-N-MB")
		perEvent := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
		b.ReportMetric(perEvent(large.cpu), "projector-cpu-us/event")
		b.ReportMetric(perEvent(large.natsCPU), "nats-cpu-us/event")
		b.ReportMetric(perEvent(raw.cpu), "raw-cpu-us/event")
		if large.pgCPU > 0 && raw.pgCPU > 0 {
			b.ReportMetric(perEvent(large.pgCPU), "projector-pg-cpu-us/event")
			b.ReportMetric(perEvent(raw.pgCPU), "raw-pg-cpu-us/event")
		}
		if loadOK {
			b.ReportMetric(load, "load1") // before the run: the machine's load apart from this benchmark
		}
	})
}

// backlog is a stream of synthetic product events in JetStream.
type backlog struct {
	stream, prefix string
	events         int
}

// productRow is a products row as the projection leaves it after an event.
type productRow struct {
	id                                    string
	sku, name, description, category, cur string
	price, stock, version                 int64
	at                                    time.Time
}

// generate produces bl's events in order, deterministically (product ids are derived from the
// prefix), calling visit with each event, its stream version and the product's row after it.
func (bl *backlog) generate(visit func(i, version int, e events.Event, row *productRow)) {
	products := bl.events / eventsPerProduct
	state := make([]productRow, products)
	categories := []string{"kitchen", "garden", "books", "toys"}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range bl.events {
		s, v := i%products, i/products+1
		row := &state[s]
		var e events.Event
		switch k := (s + 3*v) % 10; {
		case v == 1:
			id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "strata-bench/%s/%d", bl.prefix, s)).String()
			*row = productRow{id: id, sku: fmt.Sprintf("SKU-%d", s), name: fmt.Sprintf("Product %d", s),
				description: "a product of the catch-up benchmark", category: categories[s%len(categories)], cur: "EUR",
				price: int64(100 + s%5000)}
			e = events.ProductCreatedV1{ProductID: id, SKU: row.sku, Name: row.name, Description: row.description,
				Category: row.category, PriceCents: row.price, Currency: row.cur, Tags: []string{"bench"}}
		case k < 6:
			delta := int64(1 + (s+v)%5)
			row.stock += delta
			e = events.ProductStockAdjustedV1{ProductID: row.id, Delta: delta, Reason: "delivery", Stock: row.stock}
		case k < 8:
			row.name = fmt.Sprintf("Product %d v%d", s, v)
			e = events.ProductRenamedV1{ProductID: row.id, Name: row.name}
		default:
			row.price = int64(100 + (s*v)%5000)
			e = events.ProductRepricedV1{ProductID: row.id, PriceCents: row.price}
		}
		row.version, row.at = int64(v), at.Add(time.Duration(i)*time.Millisecond)
		visit(i, v, e, row)
	}
}

// rows returns the raw baseline's input: per writer (products split by a hash of their id), the
// product row after each event, in order.
func (bl *backlog) rows() [catchUpPartitions][]productRow {
	var out [catchUpPartitions][]productRow
	bl.generate(func(_, _ int, _ events.Event, row *productRow) {
		h := fnv.New32a()
		h.Write([]byte(row.id))
		w := h.Sum32() % catchUpPartitions
		out[w] = append(out[w], *row)
	})
	return out
}

// publishBacklog publishes n product events (n/eventsPerProduct products) to a new partitioned
// stream.
func publishBacklog(b *testing.B, js jetstream.JetStream, codec *events.Codec, stream, prefix string, n int) *backlog {
	ctx := b.Context()
	_, err := broker.EnsureStream(ctx, js, broker.StreamConfig{Name: stream, SubjectPrefix: prefix, Replicas: 1,
		Duplicates: 5 * time.Second, Partitions: catchUpPartitions})
	require.NoError(b, err)
	bl := &backlog{stream: stream, prefix: prefix, events: n}

	const window = 4096
	pub, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(window+16))
	require.NoError(b, err)
	defer pub.CleanupPublisher()
	inflight := make(chan jetstream.PubAckFuture, window)
	acked := make(chan error, 1)
	go func() {
		var first error
		for ack := range inflight {
			select {
			case <-ack.Ok():
			case err := <-ack.Err():
				if first == nil {
					first = err
				}
			}
		}
		acked <- first
	}()
	var failed error
	bl.generate(func(i, v int, e events.Event, row *productRow) {
		if failed != nil {
			return
		}
		name, schema, data, err := codec.Encode(e)
		if err != nil {
			failed = err
			return
		}
		pos := events.Position{Commit: uint64(i + 1), Prepare: uint64(i + 1)}
		msg := relay.Message(prefix, eventstore.RecordedEvent{ID: uuid.NewString(), Stream: events.StreamName(events.ProductAggregate, row.id),
			Version: uint64(v), Position: pos, Type: name, SchemaVersion: schema, Data: data, OccurredAt: row.at, RecordedAt: row.at})
		ack, err := pub.PublishMsgAsync(msg)
		if err != nil {
			failed = err
			return
		}
		inflight <- ack
	})
	close(inflight)
	require.NoError(b, failed, "publish")
	require.NoError(b, <-acked)
	s, err := js.Stream(ctx, stream)
	require.NoError(b, err)
	info, err := s.Info(ctx)
	require.NoError(b, err)
	require.Equal(b, uint64(n), info.State.Msgs)
	return bl
}

// catchUpRun is what one projector process measured.
type catchUpRun struct {
	elapsed                     time.Duration
	heapPeak, livePeak, rssPeak uint64
	// The CPU time of the projector process, of this process (the NATS server) while it ran, and of
	// the projector's PostgreSQL backends (zero where unknown).
	cpu, natsCPU, pgCPU time.Duration
}

// rawRun is what the raw baseline measured: how long its writes took, the CPU time of this process
// meanwhile, and that of its PostgreSQL backends (zero where unknown).
type rawRun struct {
	elapsed, cpu, pgCPU time.Duration
}

// childConfig is what the projector process is told.
type childConfig struct {
	DatabaseURL, NATSURL, Stream, Prefix string
}

// catchUp runs the products projection in a process of its own on bl from an empty schema, until
// it has applied everything, and returns how long that took and the process's peak memory.
func catchUp(b *testing.B, natsURL string, bl *backlog) catchUpRun {
	ctx := b.Context()
	dbURL := pgtest.URL(b)
	pool := openPool(b, dbURL, 4)
	require.NoError(b, migrations.Apply(ctx, pool, migrations.ReadModel))
	cfg, err := json.Marshal(childConfig{DatabaseURL: dbURL, NATSURL: natsURL, Stream: bl.stream, Prefix: bl.prefix})
	require.NoError(b, err)
	exe, err := os.Executable()
	require.NoError(b, err)
	args := []string{"-test.run=^TestCatchUpProjectorProcess$", "-test.count=1", "-test.v"}
	if prof := os.Getenv("STRATA_BENCH_PROJECTOR_CPUPROFILE"); prof != "" {
		args = append(args, "-test.cpuprofile="+prof) // the last catch-up's, the backlog of N
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out

	js, err := jetstream.New(connect(b, natsURL))
	require.NoError(b, err)
	start, startCPU := time.Now(), processCPU(os.Getpid())
	require.NoError(b, cmd.Start())
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	caughtUp := func() bool {
		for p := range catchUpPartitions {
			c, err := js.Consumer(ctx, bl.stream, projector.ConsumerName("products", p))
			if err != nil {
				return false
			}
			info := c.CachedInfo()
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Minute)
	for !caughtUp() {
		if time.Now().After(deadline) {
			b.Fatalf("the projector did not catch up within 10 minutes; its output:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	run := catchUpRun{elapsed: time.Since(start), natsCPU: processCPU(os.Getpid()) - startCPU}
	run.pgCPU, _ = backendsCPU(b, pool, projectorApp)
	require.NoError(b, stdin.Close())
	require.NoError(b, cmd.Wait(), "projector process:\n%s", out.String())
	run.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	output := out.String()
	for line := range strings.Lines(output) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "strata-bench-memory "); ok {
			_, err := fmt.Sscanf(rest, "heap_inuse_peak=%d heap_live_peak=%d rss_peak=%d", &run.heapPeak, &run.livePeak, &run.rssPeak)
			require.NoError(b, err, rest)
		}
	}
	require.NotZero(b, run.heapPeak, "the projector process reports its memory:\n%s", output)
	requireRows(b, pool, bl)
	return run
}

// requireRows checks that the products table holds every product of bl at its last version.
func requireRows(b *testing.B, pool *pgxpool.Pool, bl *backlog) {
	var count, lo, hi int64
	require.NoError(b, pool.QueryRow(b.Context(), `SELECT count(*), coalesce(min(version), 0), coalesce(max(version), 0) FROM products`).
		Scan(&count, &lo, &hi))
	require.Equal(b, []int64{int64(bl.events / eventsPerProduct), eventsPerProduct, eventsPerProduct}, []int64{count, lo, hi})
}

// rawUpserts writes bl's rows with batched upserts, one writer per partition, and returns how long
// it took and the CPU it took.
func rawUpserts(b *testing.B, bl *backlog) rawRun {
	ctx := b.Context()
	all := bl.rows()
	url, err := withApplicationName(pgtest.URL(b), rawApp)
	require.NoError(b, err)
	pool := openPool(b, url, catchUpPartitions+2)
	require.NoError(b, migrations.Apply(ctx, pool, migrations.ReadModel))
	const upsert = `INSERT INTO products (id, sku, name, description, category, price_cents, currency, tags, stock, version, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents, stock = excluded.stock,
			version = excluded.version, updated_at = excluded.updated_at
		WHERE products.version < excluded.version`
	tags := []string{"bench"}
	var wg sync.WaitGroup
	errs := make(chan error, catchUpPartitions)
	pgStart, pgKnown := backendsCPU(b, pool, rawApp) // the migrations'
	start, startCPU := time.Now(), processCPU(os.Getpid())
	for w := range catchUpPartitions {
		rows := all[w]
		wg.Go(func() {
			for len(rows) > 0 {
				batch := rows[:min(catchUpBatch, len(rows))]
				rows = rows[len(batch):]
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					pb := &pgx.Batch{}
					for _, r := range batch {
						pb.Queue(upsert, r.id, r.sku, r.name, r.description, r.category, r.price, r.cur, tags, r.stock, r.version, r.at)
					}
					return tx.SendBatch(ctx, pb).Close()
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	run := rawRun{elapsed: time.Since(start), cpu: processCPU(os.Getpid()) - startCPU}
	if pg, ok := backendsCPU(b, pool, rawApp); ok && pgKnown {
		run.pgCPU = pg - pgStart
	}
	close(errs)
	require.NoError(b, <-errs)
	requireRows(b, pool, bl)
	return run
}

// withApplicationName returns url with its application_name set to name.
func withApplicationName(url, name string) (string, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// backendsCPU is the CPU time of the PostgreSQL backends of the sessions named app, read from /proc;
// false when PostgreSQL does not run on this machine. It counts only the backends alive now.
func backendsCPU(b *testing.B, pool *pgxpool.Pool, app string) (time.Duration, bool) {
	rows, err := pool.Query(b.Context(), `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, app)
	require.NoError(b, err)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(b, err)
	var total time.Duration
	for _, pid := range pids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			return 0, false // PostgreSQL runs elsewhere (or the pid is another process's here)
		}
		total += processCPU(pid)
	}
	return total, len(pids) > 0
}

// processCPU is bench.ProcessCPU, zero where unknown.
func processCPU(pid int) time.Duration {
	cpu, _ := bench.ProcessCPU(pid)
	return cpu
}

func openPool(b *testing.B, url string, maxConns int32) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(b, err)
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return pool
}

func connect(b *testing.B, url string) *nats.Conn {
	nc, err := nats.Connect(url)
	require.NoError(b, err)
	b.Cleanup(nc.Close)
	return nc
}

// TestCatchUpProjectorProcess is not a test: it is the projector process of BenchmarkCatchUp, which
// runs this test binary again with only this test and its configuration in STRATA_BENCH_PROJECTOR_CHILD.
// Otherwise it returns at once. It runs the products projection with the default configuration until its
// standard input closes, then prints its peak heap in use, peak live heap and peak RSS.
func TestCatchUpProjectorProcess(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		return // an entry point for the benchmark's child process, not a test of its own
	}
	var cfg childConfig
	require.NoError(t, json.Unmarshal([]byte(raw), &cfg))
	ctx, cancel := childtest.UntilStdinCloses(context.Background())
	defer cancel()

	var peak, livePeak uint64
	var sampled sync.WaitGroup
	sampled.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			metrics.Read(live)
			if live[0].Value.Kind() == metrics.KindUint64 {
				livePeak = max(livePeak, live[0].Value.Uint64())
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})

	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	require.NoError(t, err)
	pcfg.MaxConns = 32 // as strata's services
	pcfg.ConnConfig.RuntimeParams["application_name"] = projectorApp
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	defer pool.Close()
	nc, err := nats.Connect(cfg.NATSURL)
	require.NoError(t, err)
	defer nc.Close()
	codec, err := events.NewCommerceCodec()
	require.NoError(t, err)
	r, err := projector.NewRunner(pool, nc, codec, rmpg.Products{},
		projector.Config{Stream: cfg.Stream, SubjectPrefix: cfg.Prefix, Partitions: catchUpPartitions}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, r.Run(ctx))
	sampled.Wait()
	fmt.Printf("strata-bench-memory heap_inuse_peak=%d heap_live_peak=%d rss_peak=%d\n", peak, livePeak, peakRSS())
}

// peakRSS is the process's peak resident set size (VmHWM), in bytes; 0 where unknown.
func peakRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
