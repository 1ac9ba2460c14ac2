package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/eventstore/storetest"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/relay"
	"github.com/strata-dev/strata/relay/relaytest"
)

const streamName = "EVENTS"

type env struct {
	store *postgres.Store
	pool  *pgxpool.Pool
	nats  *natstest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool := pgtest.Pool(t, 16)
	require.NoError(t, postgres.Migrate(t.Context(), pool))
	require.NoError(t, relay.Migrate(t.Context(), pool))
	store := postgres.New(pool, postgres.Options{PollInterval: 100 * time.Millisecond})
	t.Cleanup(store.Close)
	ns := natstest.Start(t)
	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = broker.EnsureStream(t.Context(), js, broker.StreamConfig{Name: streamName, SubjectPrefix: "strata", Replicas: 1, Duplicates: 2 * time.Minute})
	require.NoError(t, err)
	return &env{store: store, pool: pool, nats: ns, nc: nc, js: js}
}

func (e *env) relay(t *testing.T, cfg relay.Config) *relay.Relay {
	t.Helper()
	cfg.Stream, cfg.SubjectPrefix = streamName, "strata"
	r, err := relay.New(e.store, e.pool, e.nc, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	return r
}

// run runs r until the returned stop is called.
func run(t *testing.T, r *relay.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop
}

// appendLoad appends n one-event appends spread over streams from 4 writers, and returns how many.
func appendLoad(t *testing.T, store eventstore.Store, streams []string, n int) int {
	t.Helper()
	var wg sync.WaitGroup
	per := n / 4
	for w := range 4 {
		wg.Go(func() {
			for i := range per {
				_, err := store.Append(t.Context(), streams[rand.IntN(len(streams))], eventstore.Any, storetest.NewEvents(w*per+i, 1))
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return per * 4
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = events.StreamName("product", fmt.Sprint(i))
	}
	return out
}

func TestRelaysBacklogAndLiveEventsOnceInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	streams := names(20)
	total := appendLoad(t, e.store, streams, 2000)
	run(t, e.relay(t, relay.Config{}))
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	total += appendLoad(t, e.store, streams, 1000) // while the relay tails
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	relaytest.RequireExactCopy(t, e.js, streamName, e.store)

	s, err := e.js.Stream(t.Context(), streamName)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(t.Context(), "strata.product.7")
	require.NoError(t, err)
	require.Equal(t, "product-7", m.Header.Get(relay.HeaderStream), "subject is <prefix>.<aggregate type>.<aggregate id>")
}

func TestCheckpointFollowsAcks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appendLoad(t, e.store, names(3), 400)
	r := e.relay(t, relay.Config{CheckpointInterval: 10 * time.Millisecond})
	run(t, r)
	relaytest.WaitForAll(t, e.js, streamName, 400, 30*time.Second)
	log, err := relaytest.ReadLog(t.Context(), e.store)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cp, err := r.Checkpoint(t.Context())
		return err == nil && cp == log[len(log)-1].Position
	}, 10*time.Second, 10*time.Millisecond, "the checkpoint reaches the last acknowledged event")
}

// TestRestartResumesFromJetStream stops a relay, deletes its checkpoint, and starts another: it must
// continue from the stream's last message, republishing nothing.
func TestRestartResumesFromJetStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	streams := names(5)
	total := appendLoad(t, e.store, streams, 600)
	stop := run(t, e.relay(t, relay.Config{}))
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	stop()
	_, err := e.pool.Exec(t.Context(), `DELETE FROM relay_checkpoints`)
	require.NoError(t, err)

	total += appendLoad(t, e.store, streams, 400)
	run(t, e.relay(t, relay.Config{}))
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	relaytest.RequireExactCopy(t, e.js, streamName, e.store)
}

// TestOneLeaderAtATime runs two relays: one publishes, the other stands by and takes over when the
// first stops.
func TestOneLeaderAtATime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	streams := names(5)
	first := e.relay(t, relay.Config{StandbyPoll: 50 * time.Millisecond})
	second := e.relay(t, relay.Config{StandbyPoll: 50 * time.Millisecond})
	stopFirst := run(t, first)
	total := appendLoad(t, e.store, streams, 400)
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	run(t, second)
	total += appendLoad(t, e.store, streams, 400)
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	stopFirst()
	total += appendLoad(t, e.store, streams, 400)
	relaytest.WaitForAll(t, e.js, streamName, uint64(total), 30*time.Second)
	relaytest.RequireExactCopy(t, e.js, streamName, e.store)
}

// TestForeignLastMessageStopsTheRelay puts a message the relay did not publish at the end of the
// stream. The relay resumes from the position in the stream's last message; without one it must not
// guess, and publishes nothing.
func TestForeignLastMessageStopsTheRelay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.js.Publish(t.Context(), "strata.product.x", []byte("{}"))
	require.NoError(t, err)
	appendLoad(t, e.store, names(2), 40)
	r := e.relay(t, relay.Config{})
	run(t, r)
	// The stream's last message carries no position: the relay must refuse to guess where to resume.
	s, err := e.js.Stream(t.Context(), streamName)
	require.NoError(t, err)
	require.Never(t, func() bool {
		info, err := s.Info(t.Context())
		return err == nil && info.State.Msgs > 1
	}, 500*time.Millisecond, 50*time.Millisecond)
}

func TestMessageRoundTrip(t *testing.T) {
	t.Parallel()
	in := eventstore.RecordedEvent{
		ID: "0b6c2d3e-0000-4000-8000-000000000001", Stream: "order-42", Version: 7,
		Position: events.Position{Commit: 901, Prepare: 17}, Type: "order.placed", SchemaVersion: 1,
		Data:       []byte(`{"order_id":"42"}`),
		Metadata:   events.Metadata{CorrelationID: "c", CausationID: "d", IdempotencyKey: "k"},
		OccurredAt: time.Date(2026, 11, 21, 10, 0, 0, 123456789, time.UTC),
		RecordedAt: time.Date(2026, 11, 21, 10, 0, 1, 0, time.UTC),
	}
	m := relay.Message("strata", in)
	require.Equal(t, "strata.order.42", m.Subject)
	out, err := relay.Decode(m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, in, out)
	require.Equal(t, "strata._.no_dash_here", relay.Subject("strata", "no.dash.here"))
}

// TestDecodeRefusesAStreamTextColumnsCannotHold: the stream keys read-model statements and dead
// letters, in text columns, which refuse invalid UTF-8 and NUL; NATS does not check header bytes.
func TestDecodeRefusesAStreamTextColumnsCannotHold(t *testing.T) {
	t.Parallel()
	in := eventstore.RecordedEvent{ID: "0b6c2d3e-0000-4000-8000-000000000001", Stream: "order-42", Version: 7,
		Position: events.Position{Commit: 901, Prepare: 17}, Type: "order.placed", SchemaVersion: 1, Data: []byte(`{}`)}
	for _, bad := range []string{"order-\xff", "order-\x0042"} {
		m := relay.Message("strata", in)
		m.Header.Set(relay.HeaderStream, bad)
		_, err := relay.Decode(m.Header, m.Data)
		require.Error(t, err, "%q", bad)
	}
	_, err := relay.Decode(relay.Message("strata", in).Header, in.Data)
	require.NoError(t, err)
}

// TestRelaysOfDifferentSchemasBothLead: the leader lock is per schema, so two deployments sharing a
// database (or parallel tests) do not exclude each other.
func TestRelaysOfDifferentSchemasBothLead(t *testing.T) {
	t.Parallel()
	a, b := newEnv(t), newEnv(t)
	run(t, a.relay(t, relay.Config{}))
	run(t, b.relay(t, relay.Config{}))
	na := appendLoad(t, a.store, names(3), 200)
	nb := appendLoad(t, b.store, names(3), 200)
	relaytest.WaitForAll(t, a.js, streamName, uint64(na), 30*time.Second)
	relaytest.WaitForAll(t, b.js, streamName, uint64(nb), 30*time.Second)
}
