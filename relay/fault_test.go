package relay_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/eventstore/storetest"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/childtest"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/relay"
	"github.com/strata-dev/strata/relay/relaytest"
)

// The fault tests run a relay against a load that does not stop while the relay is broken: several
// writers append one to three events at a time to random streams. At the end the JetStream stream must
// be an exact copy of the store's global log: every event once, in store order.

// TestRelayCrash kills a relay that runs as a separate process with SIGKILL, again and again, at
// random moments of a load of more than 10,000 events, and starts a new one each time.
func TestRelayCrash(t *testing.T) {
	t.Parallel()
	const minKills, minEvents = 12, 10_000
	store, _, dbURL := newStore(t)
	ns := natstest.Start(t)
	js := jetStream(t, ns.Connect(t))
	ensureStream(t, js, streamName, "strata", 1)
	ld := startLoad(t, store, names(50), 2000)

	for kills := 0; kills < minKills || ld.appended.Load() < minEvents; kills++ {
		p := startRelayProcess(t, dbURL, ns.URL())
		before := messages(t, js, streamName)
		if rand.IntN(4) == 0 {
			// A random moment from the start: the relay may be starting, taking the lock, reading
			// JetStream's last message or publishing. The delay itself is the point here.
			time.Sleep(rand.N(500 * time.Millisecond))
		} else {
			// A random number of newly relayed events: the relay is publishing, with a window in flight.
			k := 1 + rand.Uint64N(1500)
			relaytest.WaitForAll(t, js, streamName, before+k, 30*time.Second)
		}
		p.Kill(t)
		t.Logf("kill %d: JetStream held %d messages, %d events appended", kills+1, messages(t, js, streamName), ld.appended.Load())
	}
	ld.finish()

	startRelayProcess(t, dbURL, ns.URL())
	requireCopyOfAll(t, js, streamName, store, 60*time.Second)
}

// TestRelayProcess is the relay process of TestRelayCrash: the test binary runs itself with
// STRATA_RELAY_PROCESS=1 and only this test. Otherwise it does nothing. It relays from DATABASE_URL to
// NATS_URL until it is killed, or its parent closes its standard input (or dies).
func TestRelayProcess(t *testing.T) {
	if os.Getenv("STRATA_RELAY_PROCESS") != "1" {
		return
	}
	ctx, cancel := childtest.UntilStdinCloses(t.Context())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	require.NoError(t, err)
	defer pool.Close()
	store := postgres.New(pool, postgres.Options{PollInterval: 100 * time.Millisecond, Logger: log})
	defer store.Close()
	nc, err := broker.Connect(ctx, broker.ConnectConfig{URLs: []string{os.Getenv("NATS_URL")}, Name: "relay-process"}, log)
	require.NoError(t, err)
	defer nc.Close()
	r, err := relay.New(store, pool, nc, relay.Config{Stream: streamName, SubjectPrefix: "strata", StandbyPoll: 100 * time.Millisecond}, log, nil)
	require.NoError(t, err)
	require.NoError(t, r.Run(ctx))
}

// TestRelaySurvivesNATSRestart stops the NATS server three times during the load and starts it again
// on the same port with the same files. The relay and the test reconnect.
func TestRelaySurvivesNATSRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	log := testLogger(t)
	nc, err := broker.Connect(t.Context(), broker.ConnectConfig{URLs: []string{e.nats.URL()}, Name: "relay"}, log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	reg := prometheus.NewRegistry()
	r, err := relay.New(e.store, e.pool, nc, relay.Config{Stream: streamName, SubjectPrefix: "strata"}, log, reg)
	require.NoError(t, err)
	run(t, r)
	ld := startLoad(t, e.store, names(20), 2000)

	for i := range 3 {
		relaytest.WaitForAll(t, e.js, streamName, messages(t, e.js, streamName)+1+rand.Uint64N(2000), 60*time.Second)
		e.nats.Stop()
		require.Eventually(t, func() bool { return nc.Status() == nats.RECONNECTING && e.nc.Status() == nats.RECONNECTING },
			10*time.Second, 5*time.Millisecond, "both connections notice the server is gone")
		down := ld.appended.Load()
		n := 100 + rand.Int64N(1000)
		require.Eventually(t, func() bool { return ld.appended.Load() >= down+n }, 30*time.Second, 5*time.Millisecond)
		e.nats.Restart()
		t.Logf("restart %d: %d events appended while NATS was down", i+1, ld.appended.Load()-down)
	}
	relaytest.WaitForAll(t, e.js, streamName, messages(t, e.js, streamName)+1, 60*time.Second) // relaying again
	ld.finish()

	requireCopyOfAll(t, e.js, streamName, e.store, 60*time.Second)
	t.Logf("relay restarts: %v", counter(t, reg, "strata_relay_restarts_total"))
}

// newStore returns a store on a fresh schema, its pool, and the schema's URL for other processes.
func newStore(t testing.TB) (*postgres.Store, *pgxpool.Pool, string) {
	t.Helper()
	url := pgtest.URL(t)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, postgres.Migrate(t.Context(), pool))
	require.NoError(t, relay.Migrate(t.Context(), pool))
	store := postgres.New(pool, postgres.Options{PollInterval: 100 * time.Millisecond})
	t.Cleanup(store.Close)
	return store, pool, url
}

func jetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

func ensureStream(t testing.TB, js jetstream.JetStream, name, prefix string, replicas int) {
	t.Helper()
	_, err := broker.EnsureStream(t.Context(), js, broker.StreamConfig{Name: name, SubjectPrefix: prefix, Replicas: replicas, Duplicates: 2 * time.Minute})
	require.NoError(t, err)
}

// messages returns how many messages the JetStream stream holds, retrying while the server is away.
func messages(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	var n uint64
	require.Eventually(t, func() bool {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			return false
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return false
		}
		n = info.State.Msgs
		return true
	}, 30*time.Second, 5*time.Millisecond, "stream info of %s", name)
	return n
}

// requireCopyOfAll waits until JetStream holds as many messages as the store holds events, then
// requires an exact copy.
func requireCopyOfAll(t testing.TB, js jetstream.JetStream, name string, store eventstore.Store, timeout time.Duration) {
	t.Helper()
	log, err := relaytest.ReadLog(t.Context(), store)
	require.NoError(t, err)
	relaytest.WaitForAll(t, js, name, uint64(len(log)), timeout)
	relaytest.RequireExactCopy(t, js, name, store)
	t.Logf("JetStream holds an exact copy of %d events", len(log))
}

// load appends to random streams from several writers until finish is called.
type load struct {
	appended atomic.Int64 // events in appends that returned; one cut short by finish may commit too
	stop     context.CancelFunc
	done     chan struct{}
}

// startLoad starts 4 writers that append one to three events at a time to random streams, about
// perSecond events a second in all (fewer if appends are slower). The pace keeps the number of events,
// and so the time the final check takes, in proportion to the time the faults take.
func startLoad(t testing.TB, store eventstore.Store, streams []string, perSecond int) *load {
	const writers, eventsPerAppend = 4, 2
	ctx, cancel := context.WithCancel(t.Context())
	l := &load{stop: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			pace := time.NewTicker(time.Second * writers * eventsPerAppend / time.Duration(perSecond))
			defer pace.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-pace.C:
				}
				n := 1 + rand.IntN(3)
				_, err := store.Append(ctx, streams[rand.IntN(len(streams))], eventstore.Any, storetest.NewEvents(int(l.appended.Load()), n))
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("append: %v", err)
					}
					return
				}
				l.appended.Add(int64(n))
			}
		})
	}
	go func() {
		wg.Wait()
		close(l.done)
	}()
	t.Cleanup(l.finish)
	return l
}

// finish stops the writers and waits for them.
func (l *load) finish() {
	l.stop()
	<-l.done
}

// startRelayProcess starts a relay process (the test binary running TestRelayProcess); it is stopped
// (or killed) when the test ends, and its output is logged if the test failed.
func startRelayProcess(t testing.TB, dbURL, natsURL string) *childtest.Process {
	t.Helper()
	return childtest.Start(t, childtest.Config{Test: "TestRelayProcess", Name: "relay", Grace: 10 * time.Second,
		Env: []string{"STRATA_RELAY_PROCESS=1", "DATABASE_URL=" + dbURL, "NATS_URL=" + natsURL}})
}
