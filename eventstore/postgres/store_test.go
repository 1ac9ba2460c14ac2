package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/eventstore/storetest"
	"github.com/strata-dev/strata/internal/pgtest"
)

func newStore(t testing.TB, maxConns int32) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.Pool(t, maxConns)
	require.NoError(t, postgres.Migrate(t.Context(), pool))
	// A channel per test keeps parallel tests from waking each other.
	s := postgres.New(pool, postgres.Options{Channel: "events_" + fmt.Sprint(rand.Uint64()), PollInterval: 200 * time.Millisecond})
	t.Cleanup(s.Close)
	return s, pool
}

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		s, _ := newStore(t, 12)
		return s
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	_, pool := newStore(t, 2)
	require.NoError(t, postgres.Migrate(t.Context(), pool))
}

// TestTailingReaderNeverSkipsLateCommits holds many appends open in their own transactions, so that
// their sequence numbers are taken, and commits (or rolls back) them in random order while a
// subscription tails the log. Ordering by sequence alone would skip every event that commits after a
// later-numbered one; the subscription must receive each committed event exactly once, no rolled-back
// event, and every stream in version order.
func TestTailingReaderNeverSkipsLateCommits(t *testing.T) {
	t.Parallel()
	const (
		writers = 12
		rounds  = 25
		streams = 5
	)
	store, pool := newStore(t, writers+4)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var mu sync.Mutex
	received := map[string]int{}
	var log []eventstore.RecordedEvent
	subErr := make(chan error, 1)
	go func() {
		subErr <- store.Subscribe(ctx, events.Start, func(_ context.Context, e eventstore.RecordedEvent) error {
			mu.Lock()
			defer mu.Unlock()
			received[e.ID]++
			log = append(log, e)
			return nil
		})
	}()

	names := make([]string, streams)
	for i := range names {
		names[i] = storetest.StreamName("stock")
	}
	committed := map[string]bool{}
	for round := range rounds {
		// Open one transaction per writer, each appending to a random stream, all left uncommitted.
		// Writers of one stream wait on its lock, so each round opens them one at a time and only on
		// streams it has not used yet in this round.
		type open struct {
			ids      []string
			commit   func() error
			rollback func() error
		}
		var txs []open
		perm := rand.Perm(streams)
		for w := range min(writers, streams) {
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			evs := storetest.NewEvents(round*100+w, 1+rand.IntN(3))
			ids := make([]string, len(evs))
			for i, e := range evs {
				ids[i] = e.ID
			}
			require.NoError(t, postgres.AppendInTx(ctx, tx, names[perm[w]], evs))
			txs = append(txs, open{ids: ids, commit: func() error { return tx.Commit(ctx) }, rollback: func() error { return tx.Rollback(ctx) }})
		}
		// And several more on fresh streams, which never wait.
		for w := range writers - len(txs) {
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			evs := storetest.NewEvents(round*100+50+w, 1)
			require.NoError(t, postgres.AppendInTx(ctx, tx, storetest.StreamName("order"), evs))
			txs = append(txs, open{ids: []string{evs[0].ID}, commit: func() error { return tx.Commit(ctx) }, rollback: func() error { return tx.Rollback(ctx) }})
		}
		// Autocommit appends to the same streams race the open transactions: they wait on the
		// versions those hold, then retry on top of whatever committed.
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				e := storetest.NewEvent(round)
				_, err := store.Append(ctx, names[rand.IntN(streams)], eventstore.Any, []eventstore.EventData{e})
				if err == nil {
					mu.Lock()
					committed[e.ID] = true
					mu.Unlock()
				}
			})
		}
		for _, i := range rand.Perm(len(txs)) {
			if rand.IntN(10) == 0 {
				require.NoError(t, txs[i].rollback())
				continue
			}
			require.NoError(t, txs[i].commit())
			mu.Lock()
			for _, id := range txs[i].ids {
				committed[id] = true
			}
			mu.Unlock()
		}
		wg.Wait()
	}

	mu.Lock()
	want := len(committed)
	mu.Unlock()
	require.Greater(t, want, rounds*writers, "most appends must commit")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(log) >= want
	}, 30*time.Second, 10*time.Millisecond, "subscription must catch up with every committed event")

	cancel()
	require.ErrorIs(t, <-subErr, context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	for id := range committed {
		require.Equal(t, 1, received[id], "committed event %s", id)
	}
	for id, n := range received {
		require.True(t, committed[id], "event %s received %d times but never committed", id, n)
	}
	require.Equal(t, want, len(log), "nothing extra, nothing twice")
	next := map[string]uint64{}
	for i, e := range log {
		if i > 0 {
			require.True(t, log[i-1].Position.Less(e.Position))
		}
		next[e.Stream]++
		require.Equal(t, next[e.Stream], e.Version, "stream %s out of order", e.Stream)
	}
}

// TestGlobalOrderIsNumeric pins transaction ids that straddle a power of ten, where a text sort
// ("10" < "9") would reorder the log. Tiny ids are below any snapshot's xmin, so both rows are
// readable at once.
func TestGlobalOrderIsNumeric(t *testing.T) {
	t.Parallel()
	store, pool := newStore(t, 2)
	for _, xid := range []string{"99", "100", "9", "10"} {
		_, err := pool.Exec(t.Context(), `INSERT INTO events (transaction_id, event_id, stream_id, version, type, schema_version, data, metadata, occurred_at)
			VALUES ($1::text::xid8, gen_random_uuid(), 'order-'||$1, 1, 'test.happened', 1, '{}', '{}', now())`, xid)
		require.NoError(t, err)
	}
	got, err := store.ReadAll(t.Context(), events.Start, 10)
	require.NoError(t, err)
	var commits []uint64
	for _, e := range got {
		commits = append(commits, e.Position.Commit)
	}
	require.Equal(t, []uint64{9, 10, 99, 100}, commits)

	from9, err := store.ReadAll(t.Context(), got[0].Position, 10)
	require.NoError(t, err)
	require.Len(t, from9, 3, "reading on from xid 9 must not skip xid 10")
}
