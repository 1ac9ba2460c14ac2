package esdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	esdbclient "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/esdb"
	"github.com/strata-dev/strata/eventstore/esdb/esdbtest"
	"github.com/strata-dev/strata/eventstore/storetest"
	"github.com/strata-dev/strata/internal/syncbuf"
)

func open(t *testing.T, url string, opts esdb.Options) *esdb.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := esdb.Open(ctx, url, opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// prefix returns a stream prefix no other test uses.
func prefix() string { return "t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12] + "-" }

func TestContract(t *testing.T) {
	t.Parallel()
	t.Run("StandIn", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) eventstore.Store {
			return open(t, esdbtest.Start(t).URL(), esdb.Options{})
		})
	})
	t.Run("StandInSharedByPrefix", func(t *testing.T) {
		// The way the suite runs against a real server: one database, a stream prefix per test.
		t.Parallel()
		srv := esdbtest.Start(t)
		storetest.Run(t, func(t *testing.T) eventstore.Store {
			return open(t, srv.URL(), esdb.Options{StreamPrefix: prefix()})
		})
	})
	t.Run("EventStoreDB", func(t *testing.T) {
		url := os.Getenv("ESDB_URL")
		if url == "" {
			t.Skip("set ESDB_URL (such as esdb://admin:changeit@localhost:2113?tls=false) to run the contract suite against a real EventStoreDB")
		}
		t.Parallel()
		storetest.Run(t, func(t *testing.T) eventstore.Store {
			return open(t, url, esdb.Options{StreamPrefix: prefix()})
		})
	})
}

// rawClient is the plain client on the stand-in, to look at what the adapter stored.
func rawClient(t *testing.T, srv *esdbtest.Server) *esdbclient.Client {
	t.Helper()
	cfg, err := esdbclient.ParseConnectionString(srv.URL())
	require.NoError(t, err)
	cfg.Logger = esdbclient.NoopLogging()
	c, err := esdbclient.NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func readRaw(t *testing.T, c *esdbclient.Client, stream string) []*esdbclient.RecordedEvent {
	t.Helper()
	rs, err := c.ReadStream(t.Context(), stream, esdbclient.ReadStreamOptions{}, 100)
	require.NoError(t, err)
	defer rs.Close()
	var out []*esdbclient.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, ev.Event)
	}
}

func TestExpectedVersionMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   eventstore.ExpectedVersion
		want esdbclient.ExpectedRevision
	}{
		{eventstore.Any, esdbclient.Any{}},
		{eventstore.NoStream, esdbclient.NoStream{}},
		{eventstore.Exact(0), esdbclient.NoStream{}},
		{eventstore.Exact(1), esdbclient.Revision(0)},
		{eventstore.Exact(42), esdbclient.Revision(41)},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, esdb.ExpectedRevision(tt.in), tt.in.String())
	}

	// On the wire: the revision the server receives for each append, claims included.
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), esdb.Options{})
	ctx := t.Context()
	stream := storetest.StreamName("order")
	first := storetest.NewEvents(1, 2)
	_, err := s.Append(ctx, stream, eventstore.NoStream, first)
	require.NoError(t, err)
	_, err = s.Append(ctx, stream, eventstore.Exact(2), storetest.NewEvents(3, 1))
	require.NoError(t, err)
	_, err = s.Append(ctx, stream, eventstore.Exact(7), storetest.NewEvents(4, 1))
	requireConflict(t, err, 3)
	_, err = s.Append(ctx, stream, eventstore.Any, storetest.NewEvents(5, 1))
	require.NoError(t, err)
	require.Equal(t, []string{"no_stream", "1", "6", "any"}, srv.ExpectedRevisions(stream))
	for _, e := range first {
		require.Equal(t, []string{"no_stream"}, srv.ExpectedRevisions("strata-event-id-"+e.ID), "claims expect no stream")
	}
}

func requireConflict(t *testing.T, err error, actual uint64) {
	t.Helper()
	var conflict *eventstore.ConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, actual, conflict.Actual)
	require.ErrorIs(t, err, eventstore.ErrConflict)
}

func TestEventIDsAndMetadataAsStored(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), esdb.Options{})
	raw := rawClient(t, srv)
	stream := storetest.StreamName("product")
	in := storetest.NewEvents(1, 3)
	_, err := s.Append(t.Context(), stream, eventstore.NoStream, in)
	require.NoError(t, err)

	stored := readRaw(t, raw, stream)
	require.Len(t, stored, 3)
	for i, e := range stored {
		require.Equal(t, in[i].ID, e.EventID.String(), "the adapter's id, not the client's random one")
		require.Equal(t, in[i].Type, e.EventType)
		require.Equal(t, "application/json", e.ContentType)
		require.JSONEq(t, string(in[i].Data), string(e.Data))
		var md map[string]any
		require.NoError(t, json.Unmarshal(e.UserMetadata, &md))
		require.Equal(t, in[i].Metadata.CorrelationID, md["correlation_id"])
		require.Equal(t, in[i].Metadata.CausationID, md["causation_id"])
		require.Equal(t, in[i].Metadata.IdempotencyKey, md["idempotency_key"])
		require.Equal(t, in[i].OccurredAt.Format(time.RFC3339Nano), md["occurred_at"])
		require.InDelta(t, 1, md["schema_version"], 0)
	}

	nilID := storetest.NewEvent(4)
	nilID.ID = uuid.Nil.String()
	_, err = s.Append(t.Context(), stream, eventstore.Exact(3), []eventstore.EventData{nilID})
	require.ErrorIs(t, err, eventstore.ErrInvalidAppend, "the client would swap the nil UUID for a random one")
	system := storetest.NewEvent(5)
	system.Type = "$internal"
	_, err = s.Append(t.Context(), stream, eventstore.Exact(3), []eventstore.EventData{system})
	require.ErrorIs(t, err, eventstore.ErrInvalidAppend, "the global log would skip it")
}

func TestConflictSurvivesWrapping(t *testing.T) {
	t.Parallel()
	s := open(t, esdbtest.Start(t).URL(), esdb.Options{})
	stream := storetest.StreamName("order")
	_, err := s.Append(t.Context(), stream, eventstore.NoStream, storetest.NewEvents(1, 2))
	require.NoError(t, err)
	_, err = s.Append(t.Context(), stream, eventstore.Exact(1), storetest.NewEvents(3, 1))
	wrapped := fmt.Errorf("place order: %w", fmt.Errorf("decide: %w", err))
	var conflict *eventstore.ConflictError
	require.ErrorAs(t, wrapped, &conflict)
	require.Equal(t, eventstore.ConflictError{Stream: stream, Expected: eventstore.Exact(1), Actual: 2}, *conflict)
	require.ErrorIs(t, wrapped, eventstore.ErrConflict)
}

func TestRetryAfterConflictReusesEventIDs(t *testing.T) {
	// A command retried after a conflict appends the same (derived) event ids again. The claims of the
	// refused attempt name this stream, and must not make the retry a duplicate.
	t.Parallel()
	s := open(t, esdbtest.Start(t).URL(), esdb.Options{})
	ctx := t.Context()
	stream := storetest.StreamName("order")
	_, err := s.Append(ctx, stream, eventstore.NoStream, storetest.NewEvents(1, 1))
	require.NoError(t, err)
	evs := storetest.NewEvents(2, 2)
	_, err = s.Append(ctx, stream, eventstore.NoStream, evs)
	requireConflict(t, err, 1)

	res, err := s.Append(ctx, stream, eventstore.Exact(1), evs)
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	require.Equal(t, uint64(3), res.LastVersion)
	again, err := s.Append(ctx, stream, eventstore.Exact(1), evs)
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, res.Position, again.Position)
}

func TestDeletedStream(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), esdb.Options{})
	ctx := t.Context()
	stream := storetest.StreamName("order")
	_, err := s.Append(ctx, stream, eventstore.NoStream, storetest.NewEvents(1, 2))
	require.NoError(t, err)
	_, err = rawClient(t, srv).TombstoneStream(ctx, stream, esdbclient.TombstoneStreamOptions{ExpectedRevision: esdbclient.Revision(1)})
	require.NoError(t, err)

	_, err = s.ReadStream(ctx, stream, 1, 10)
	require.ErrorIs(t, err, eventstore.ErrStreamDeleted)
	_, err = s.Append(ctx, stream, eventstore.Any, storetest.NewEvents(3, 1))
	require.ErrorIs(t, err, eventstore.ErrStreamDeleted)
	all, err := s.ReadAll(ctx, events.Start, 10)
	require.NoError(t, err)
	require.Len(t, all, 2, "the tombstone is a system event")
}

func TestOversizedAppend(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	ctx := t.Context()
	big := func(n int) []eventstore.EventData {
		evs := storetest.NewEvents(1, n)
		for i := range evs {
			evs[i].Data = fmt.Appendf(nil, `{"blob":%q}`, strings.Repeat("x", 100<<10))
		}
		return evs
	}

	s := open(t, srv.URL(), esdb.Options{})
	stream := storetest.StreamName("order")
	_, err := s.Append(ctx, stream, eventstore.NoStream, big(11))
	require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
	require.ErrorContains(t, err, "exceeds the server's limit of 1048576 bytes")
	_, err = s.Append(ctx, stream, eventstore.NoStream, big(10))
	require.NoError(t, err, "just under the limit")

	// A store that believes the server takes more learns otherwise from the server.
	lax := open(t, srv.URL(), esdb.Options{MaxAppendSize: 4 << 20})
	other := storetest.StreamName("order")
	_, err = lax.Append(ctx, other, eventstore.NoStream, big(11))
	require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
	require.ErrorContains(t, err, "too large")
	got, err := s.ReadStream(ctx, other, 1, 100)
	require.NoError(t, err)
	require.Empty(t, got)
}

// collector gathers what a subscription delivers.
type collector struct {
	mu  sync.Mutex
	got []eventstore.RecordedEvent
}

func (c *collector) handle(_ context.Context, e eventstore.RecordedEvent) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, e)
	return nil
}

func (c *collector) reached(n int) func() bool {
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.got) >= n
	}
}

func (c *collector) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, len(c.got))
	for i, e := range c.got {
		ids[i] = e.ID
	}
	return ids
}

func eventIDs(evs ...[]eventstore.EventData) []string {
	var ids []string
	for _, batch := range evs {
		for _, e := range batch {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

func TestSubscribeResubscribesWhenDropped(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), esdb.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream := storetest.StreamName("order")
	b1 := storetest.NewEvents(1, 3)
	_, err := s.Append(ctx, stream, eventstore.NoStream, b1)
	require.NoError(t, err)

	var c collector
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, events.Start, c.handle) }()
	require.Eventually(t, c.reached(3), 10*time.Second, 5*time.Millisecond)

	var want []string
	want = append(want, eventIDs(b1)...)
	for round := range 3 {
		require.Eventually(t, func() bool { return srv.DropSubscriptions() > 0 }, 10*time.Second, 5*time.Millisecond)
		batch := storetest.NewEvents(10*(round+1), 2)
		_, err := s.Append(ctx, stream, eventstore.Any, batch)
		require.NoError(t, err)
		want = append(want, eventIDs(batch)...)
		require.Eventually(t, c.reached(len(want)), 10*time.Second, 5*time.Millisecond, "round %d", round)
	}
	require.GreaterOrEqual(t, srv.Subscriptions(), 4, "subscribed again after every drop")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.Equal(t, want, c.ids(), "every event once, in order, across drops")
}

func TestSubscribeFromPositionAndHandlerError(t *testing.T) {
	t.Parallel()
	s := open(t, esdbtest.Start(t).URL(), esdb.Options{})
	ctx := t.Context()
	stream := storetest.StreamName("order")
	_, err := s.Append(ctx, stream, eventstore.NoStream, storetest.NewEvents(1, 4))
	require.NoError(t, err)
	all, err := s.ReadAll(ctx, events.Start, 10)
	require.NoError(t, err)
	require.Len(t, all, 4)

	boom := errors.New("boom")
	var seen []uint64
	err = s.Subscribe(ctx, all[1].Position, func(_ context.Context, e eventstore.RecordedEvent) error {
		seen = append(seen, e.Version)
		if len(seen) == 2 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, []uint64{3, 4}, seen, "after the position, not at it")
}

func TestSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	// Few discovery attempts, so that the client gives up (and is replaced) while the server is down.
	var logs syncbuf.Buffer
	s := open(t, srv.URL()+"&maxDiscoverAttempts=1&discoveryInterval=10",
		esdb.Options{Timeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream := storetest.StreamName("order")
	b1 := storetest.NewEvents(1, 2)
	_, err := s.Append(ctx, stream, eventstore.NoStream, b1)
	require.NoError(t, err)
	var c collector
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, events.Start, c.handle) }()
	require.Eventually(t, c.reached(2), 10*time.Second, 5*time.Millisecond)

	srv.Stop()
	require.Eventually(t, func() bool {
		_, err := s.Append(ctx, stream, eventstore.Exact(2), storetest.NewEvents(9, 1))
		return err != nil && strings.Contains(logs.String(), "closed itself; replaced it")
	}, 20*time.Second, 10*time.Millisecond, "appends fail while the server is down, and the client that gives up is replaced")
	require.NoError(t, srv.Restart())

	b2 := storetest.NewEvents(3, 2)
	require.Eventually(t, func() bool {
		_, err := s.Append(ctx, stream, eventstore.Exact(2), b2)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "appends work again")
	require.Eventually(t, c.reached(4), 20*time.Second, 5*time.Millisecond, "the subscription resumed")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.Equal(t, eventIDs(b1, b2), c.ids())
	require.Contains(t, logs.String(), "subscription to $all resumed")
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

func TestOpenWaitsForTheServer(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	var logs syncbuf.Buffer
	opened := make(chan error, 1)
	var s *esdb.Store
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var err error
		s, err = esdb.Open(ctx, "esdb://"+addr+"?tls=false&maxDiscoverAttempts=1&discoveryInterval=10",
			esdb.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		opened <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "not reachable") }, 10*time.Second, 5*time.Millisecond,
		"Open has failed to connect at least once")

	srv, err := esdbtest.New(esdbtest.Options{Addr: addr})
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	require.NoError(t, <-opened)
	t.Cleanup(s.Close)
	_, err = s.Append(t.Context(), storetest.StreamName("order"), eventstore.NoStream, storetest.NewEvents(1, 1))
	require.NoError(t, err)
}

func TestOpenGivesUp(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err := esdb.Open(ctx, "esdb://admin:secret@"+addr+"?tls=false&maxDiscoverAttempts=1&discoveryInterval=10", esdb.Options{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, addr)
	require.NotContains(t, err.Error(), "secret")

	_, err = esdb.Open(t.Context(), "esdb://admin:secret@host:port?tls=false", esdb.Options{})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret")
}
