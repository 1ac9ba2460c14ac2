package relay_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/storetest"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/relay"
	"github.com/strata-dev/strata/relay/relaytest"
)

// BenchmarkRelay measures how fast the relay empties a backlog of stored events into JetStream, and,
// in the same run, how fast a bare asynchronous JetStream publisher sends the same messages (built with
// relay.Message from the events, already read into memory) to a second stream: the same server, the
// same window of unacknowledged publishes, acks taken in order, but no event store and no
// Nats-Expected-Last-Sequence. It reports both rates and their ratio (relay / raw); the ratio is what
// to compare across machines.
//
// The backlog is appended once per run of the benchmark, outside the timer. One operation relays the
// whole backlog into a fresh stream (timed from the relay's start until the stream holds every event)
// and then publishes it raw into another fresh stream (timed from the first publish until the last ack).
// A run takes tens of seconds, so use -benchtime 1x (one operation) and -count for repetitions.
func BenchmarkRelay(b *testing.B) {
	const backlog, window = 200_000, 4096
	store, pool, _ := newStore(b)
	appendBacklog(b, store, backlog)
	log, err := relaytest.ReadLog(b.Context(), store)
	require.NoError(b, err)
	require.Len(b, log, backlog)

	ns := natstest.Start(b)
	js := jetStream(b, ns.Connect(b))
	relayConn, rawConn := ns.Connect(b), ns.Connect(b)

	b.Run(fmt.Sprintf("events=%d", backlog), func(b *testing.B) {
		var relayTime, rawTime time.Duration
		for range b.N {
			b.StopTimer()
			ensureStream(b, js, "BENCH_RELAY", "relay", 1)
			ensureStream(b, js, "BENCH_RAW", "raw", 1)
			b.StartTimer()

			relayTime += relayAll(b, store, pool, relayConn, js, window, backlog)
			rawTime += publishRaw(b, rawConn, js, log, window)

			b.StopTimer()
			relaytest.RequireExactCopy(b, js, "BENCH_RELAY", store)
			require.NoError(b, js.DeleteStream(b.Context(), "BENCH_RELAY"))
			require.NoError(b, js.DeleteStream(b.Context(), "BENCH_RAW"))
			b.StartTimer()
		}
		n := float64(backlog * b.N)
		relayRate, rawRate := n/relayTime.Seconds(), n/rawTime.Seconds()
		b.ReportMetric(relayRate, "relay-events/s")
		b.ReportMetric(rawRate, "raw-events/s")
		b.ReportMetric(relayRate/rawRate, "ratio")
	})
}

// relayAll runs a new relay into the stream BENCH_RELAY until it holds n messages, and returns how
// long that took.
func relayAll(b *testing.B, store eventstore.Store, pool *pgxpool.Pool, nc *nats.Conn, js jetstream.JetStream, window, n int) time.Duration {
	// A relay name never used before: no checkpoint, so the relay starts from the beginning.
	r, err := relay.New(store, pool, nc, relay.Config{Name: "bench-" + uuid.NewString(), Stream: "BENCH_RELAY", SubjectPrefix: "relay", MaxInFlight: window}, nil, nil)
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Run(ctx) }()
	s, err := js.Stream(b.Context(), "BENCH_RELAY")
	require.NoError(b, err)
	require.Eventually(b, func() bool {
		info, err := s.Info(b.Context())
		return err == nil && info.State.Msgs >= uint64(n)
	}, 5*time.Minute, time.Millisecond, "the relay publishes the backlog")
	elapsed := time.Since(start)
	cancel()
	require.NoError(b, <-done)
	return elapsed
}

// publishRaw publishes the events to the stream BENCH_RAW like the relay does, minus the store and
// the expected last sequence, and returns how long it took until every publish was acknowledged.
func publishRaw(b *testing.B, nc *nats.Conn, js jetstream.JetStream, log []eventstore.RecordedEvent, window int) time.Duration {
	pub, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window+16))
	require.NoError(b, err)
	defer pub.CleanupPublisher()
	inflight := make(chan jetstream.PubAckFuture, window)
	acked := make(chan error, 1)
	start := time.Now()
	go func() {
		for ack := range inflight {
			select {
			case <-ack.Ok():
			case err := <-ack.Err():
				acked <- err
				for range inflight { // let the publisher finish
				}
				return
			}
		}
		acked <- nil
	}()
	for _, e := range log {
		ack, err := pub.PublishMsgAsync(relay.Message("raw", e))
		if err != nil {
			close(inflight)
			b.Fatalf("raw publish: %v", err)
		}
		inflight <- ack
	}
	close(inflight)
	require.NoError(b, <-acked)
	elapsed := time.Since(start)

	s, err := js.Stream(b.Context(), "BENCH_RAW")
	require.NoError(b, err)
	info, err := s.Info(b.Context())
	require.NoError(b, err)
	require.Equal(b, uint64(len(log)), info.State.Msgs)
	return elapsed
}

// appendBacklog appends n events (a multiple of 100) in appends of 100 from 8 writers, each to its own
// streams.
func appendBacklog(b *testing.B, store eventstore.Store, n int) {
	const writers, per = 8, 100
	appends := make(chan int, n/per)
	for i := range n / per {
		appends <- i
	}
	close(appends)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				stream := events.StreamName("product", fmt.Sprintf("%d-%d", w, i%50))
				if _, err := store.Append(b.Context(), stream, eventstore.Any, storetest.NewEvents(i*per, per)); err != nil {
					b.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}
