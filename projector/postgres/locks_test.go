package postgres_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pglock"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/internal/syncbuf"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	rmpg "github.com/strata-dev/strata/projector/postgres"
)

// blackholeConn drops what is written to it once dropping is set, as a network path that loses an
// established connection's packets does: the statements sent meanwhile never reach PostgreSQL and
// their answers never come.
type blackholeConn struct {
	net.Conn
	dropping atomic.Bool
}

func (c *blackholeConn) Write(b []byte) (int, error) {
	if c.dropping.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestPartitionsStopWhenTheLockConnectionHangs: the partition locks live on one connection, and a
// runner must stop applying its partitions when that connection stops answering, since the locks
// may then be lost to another process. Here one partition is another session's, so the runner
// keeps trying to take it; once the connections stop answering, that attempt hangs, and the
// watchdog must not wait behind it.
func TestPartitionsStopWhenTheLockConnectionHangs(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	var mu sync.Mutex
	var conns []*blackholeConn
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 8
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := &blackholeConn{Conn: conn}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c, nil
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer pool.Close()
	defer func() { // at once: closing a connection that lost a request otherwise drains it for up to 15 s
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if c.dropping.Load() {
				_ = c.Conn.Close()
			}
		}
	}()
	require.NoError(t, migrations.Apply(t.Context(), pool, migrations.ReadModel))

	holder, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer holder.Close(context.Background())
	_, got, err := pglock.TryLock(t.Context(), holder, "strata.projector:products/0")
	require.NoError(t, err)
	require.True(t, got, "partition 0 is another session's")

	nc := natstest.Start(t).Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = broker.EnsureStream(t.Context(), js, eventsStream())
	require.NoError(t, err)
	codec, err := events.NewCommerceCodec()
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	var logs syncbuf.Buffer
	r, err := projector.NewRunner(pool, nc, codec, rmpg.Products{}, projector.Config{Stream: streamName, SubjectPrefix: prefix,
		Partitions: partitions, ClaimPoll: 10 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)), reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	var running sync.WaitGroup
	running.Go(func() { _ = r.Run(ctx) })
	defer func() { cancel(); running.Wait() }()

	owned := func() float64 {
		families, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() == "strata_projector_partitions_owned" {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	require.Eventually(t, func() bool { return owned() == partitions-1 }, 10*time.Second, 5*time.Millisecond,
		"every partition but the other session's")
	mu.Lock()
	for _, c := range conns {
		c.dropping.Store(true)
	}
	mu.Unlock()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "lock session lost") }, 20*time.Second, 10*time.Millisecond,
		"the runner gives up a lock connection that stopped answering")
}
