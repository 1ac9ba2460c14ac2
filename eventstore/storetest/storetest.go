// Package storetest is the contract suite of the [eventstore.Store] port. Every adapter runs it against
// a real server from its own tests:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventstore.Store { return newStore(t) })
//	}
//
// The factory must return an empty store that no other test writes to.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
)

// Factory returns a fresh, empty store for one test and arranges its cleanup.
type Factory func(t *testing.T) eventstore.Store

// Run runs every contract test against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, eventstore.Store)
	}{
		{"AppendAndReadStream", testAppendAndReadStream},
		{"ExpectedVersion", testExpectedVersion},
		{"RepeatedAppendIsIdempotent", testRepeatedAppend},
		{"ReusedEventIDIsRefused", testReusedEventID},
		{"InvalidAppend", testInvalidAppend},
		{"ReadStreamPaging", testReadStreamPaging},
		{"ReadStreams", testReadStreams},
		{"ReadAllOrderAndPaging", testReadAll},
		{"ConcurrentAppendsToOneStream", testConcurrentAppends},
		{"SubscribeBacklogThenLive", testSubscribe},
		{"SubscribeReturnsHandlerError", testSubscribeHandlerError},
		{"LargeAppend", testLargeAppend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

// NewEvent returns an event to append with a fresh id and a small JSON payload naming n.
func NewEvent(n int) eventstore.EventData {
	return eventstore.EventData{
		ID:            uuid.NewString(),
		Type:          "test.happened",
		SchemaVersion: 1,
		Data:          fmt.Appendf(nil, `{"n":%d}`, n),
		Metadata:      events.Metadata{CorrelationID: "corr-" + fmt.Sprint(n), CausationID: "cause", IdempotencyKey: "key"},
		OccurredAt:    time.Date(2026, 11, 21, 10, 0, 0, n*int(time.Millisecond), time.UTC),
	}
}

// NewEvents returns n events made by [NewEvent], numbered from first.
func NewEvents(first, n int) []eventstore.EventData {
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = NewEvent(first + i)
	}
	return evs
}

// StreamName returns a stream name no other test uses.
func StreamName(prefix string) string {
	return prefix + "-" + uuid.NewString()
}

func testAppendAndReadStream(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("order")
	in := NewEvents(1, 3)
	res, err := s.Append(ctx, stream, eventstore.NoStream, in)
	require.NoError(t, err)
	require.Equal(t, stream, res.Stream)
	require.Equal(t, uint64(1), res.FirstVersion)
	require.Equal(t, uint64(3), res.LastVersion)
	require.False(t, res.Duplicate)

	got, err := s.ReadStream(ctx, stream, 1, 100)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, e := range got {
		require.Equal(t, in[i].ID, e.ID)
		require.Equal(t, stream, e.Stream)
		require.Equal(t, uint64(i+1), e.Version)
		require.Equal(t, in[i].Type, e.Type)
		require.Equal(t, in[i].SchemaVersion, e.SchemaVersion)
		require.JSONEq(t, string(in[i].Data), string(e.Data))
		require.Equal(t, in[i].Metadata, e.Metadata)
		require.True(t, in[i].OccurredAt.Equal(e.OccurredAt), "occurred at %s, want %s", e.OccurredAt, in[i].OccurredAt)
		require.False(t, e.RecordedAt.IsZero())
	}
	require.Equal(t, got[2].Position, res.Position, "append result names the last event's position")
	require.True(t, got[0].Position.Less(got[1].Position) && got[1].Position.Less(got[2].Position))

	missing, err := s.ReadStream(ctx, StreamName("order"), 1, 100)
	require.NoError(t, err)
	require.Empty(t, missing)
}

func testExpectedVersion(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("product")

	_, err := s.Append(ctx, stream, eventstore.Exact(2), NewEvents(1, 1))
	requireConflict(t, err, 0)

	_, err = s.Append(ctx, stream, eventstore.NoStream, NewEvents(1, 2))
	require.NoError(t, err)

	_, err = s.Append(ctx, stream, eventstore.NoStream, NewEvents(3, 1))
	requireConflict(t, err, 2)
	_, err = s.Append(ctx, stream, eventstore.Exact(1), NewEvents(3, 1))
	requireConflict(t, err, 2)
	_, err = s.Append(ctx, stream, eventstore.Exact(3), NewEvents(3, 1))
	requireConflict(t, err, 2)

	res, err := s.Append(ctx, stream, eventstore.Exact(2), NewEvents(3, 1))
	require.NoError(t, err)
	require.Equal(t, uint64(3), res.LastVersion)

	res, err = s.Append(ctx, stream, eventstore.Any, NewEvents(4, 2))
	require.NoError(t, err)
	require.Equal(t, uint64(4), res.FirstVersion)
	require.Equal(t, uint64(5), res.LastVersion)

	res, err = s.Append(ctx, StreamName("product"), eventstore.Any, NewEvents(1, 1))
	require.NoError(t, err, "any creates a stream")
	require.Equal(t, uint64(1), res.LastVersion)

	got, err := s.ReadStream(ctx, stream, 1, 100)
	require.NoError(t, err)
	require.Len(t, got, 5, "refused appends store nothing")
}

func requireConflict(t *testing.T, err error, actual uint64) {
	t.Helper()
	require.ErrorIs(t, err, eventstore.ErrConflict)
	var conflict *eventstore.ConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, actual, conflict.Actual)
}

func testRepeatedAppend(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("product")
	first := NewEvents(1, 2)
	res1, err := s.Append(ctx, stream, eventstore.NoStream, first)
	require.NoError(t, err)
	_, err = s.Append(ctx, stream, eventstore.Exact(2), NewEvents(3, 1))
	require.NoError(t, err)

	// A retry of the first append, with its now stale expected version, after another append.
	res2, err := s.Append(ctx, stream, eventstore.NoStream, first)
	require.NoError(t, err)
	require.True(t, res2.Duplicate)
	require.Equal(t, res1.FirstVersion, res2.FirstVersion)
	require.Equal(t, res1.LastVersion, res2.LastVersion)
	require.Equal(t, res1.Position, res2.Position)

	got, err := s.ReadStream(ctx, stream, 1, 100)
	require.NoError(t, err)
	require.Len(t, got, 3, "a repeat stores nothing")
}

func testReusedEventID(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("product")
	evs := NewEvents(1, 2)
	_, err := s.Append(ctx, stream, eventstore.NoStream, evs)
	require.NoError(t, err)

	_, err = s.Append(ctx, StreamName("product"), eventstore.Any, evs[:1])
	require.ErrorIs(t, err, eventstore.ErrDuplicateEvent, "same id in another stream")

	_, err = s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{evs[0], NewEvent(9)})
	require.ErrorIs(t, err, eventstore.ErrDuplicateEvent, "only part of the append was stored")

	_, err = s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{NewEvent(9), evs[1]})
	require.ErrorIs(t, err, eventstore.ErrDuplicateEvent, "a stored id after a new one")

	_, err = s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{evs[1], evs[0]})
	require.ErrorIs(t, err, eventstore.ErrDuplicateEvent, "stored ids in another order")

	got, err := s.ReadStream(ctx, stream, 1, 100)
	require.NoError(t, err)
	require.Len(t, got, 2)
}

func testInvalidAppend(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	e := NewEvent(1)
	noID := NewEvent(2)
	noID.ID = ""
	badID := NewEvent(3)
	badID.ID = "not-a-uuid"
	badJSON := NewEvent(4)
	badJSON.Data = []byte("{")
	cases := map[string]struct {
		stream string
		evs    []eventstore.EventData
	}{
		"no events":     {StreamName("x"), nil},
		"empty stream":  {"", []eventstore.EventData{NewEvent(1)}},
		"id twice":      {StreamName("x"), []eventstore.EventData{e, e}},
		"empty id":      {StreamName("x"), []eventstore.EventData{noID}},
		"id not a UUID": {StreamName("x"), []eventstore.EventData{badID}},
		"data not JSON": {StreamName("x"), []eventstore.EventData{badJSON}},
	}
	for name, c := range cases {
		_, err := s.Append(ctx, c.stream, eventstore.Any, c.evs)
		require.ErrorIs(t, err, eventstore.ErrInvalidAppend, name)
	}
	all, err := s.ReadAll(ctx, events.Start, 10)
	require.NoError(t, err)
	require.Empty(t, all)
}

func testReadStreamPaging(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("order")
	_, err := s.Append(ctx, stream, eventstore.NoStream, NewEvents(1, 10))
	require.NoError(t, err)
	got, err := s.ReadStream(ctx, stream, 4, 3)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, []uint64{4, 5, 6}, []uint64{got[0].Version, got[1].Version, got[2].Version})
	got, err = s.ReadStream(ctx, stream, 11, 3)
	require.NoError(t, err)
	require.Empty(t, got)
}

// testReadStreams reads the ends of several streams at once, through the store's own
// eventstore.StreamsReader if it has one.
func testReadStreams(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	long, short, missing := StreamName("order"), StreamName("order"), StreamName("order")
	_, err := s.Append(ctx, long, eventstore.NoStream, NewEvents(1, 10))
	require.NoError(t, err)
	_, err = s.Append(ctx, short, eventstore.NoStream, NewEvents(1, 2))
	require.NoError(t, err)

	got, err := eventstore.ReadStreams(ctx, s, map[string]uint64{long: 6, short: 2, missing: 0}, 3)
	require.NoError(t, err)
	require.Len(t, got, 1, "streams without newer events are absent")
	require.Len(t, got[long], 3)
	for i, e := range got[long] {
		require.Equal(t, long, e.Stream)
		require.Equal(t, uint64(7+i), e.Version)
		require.JSONEq(t, string(NewEvent(7+i).Data), string(e.Data))
	}

	got, err = eventstore.ReadStreams(ctx, s, map[string]uint64{long: 0, short: 1}, 100)
	require.NoError(t, err)
	require.Len(t, got[long], 10)
	require.Len(t, got[short], 1)
	require.Equal(t, uint64(2), got[short][0].Version)

	got, err = eventstore.ReadStreams(ctx, s, nil, 10)
	require.NoError(t, err)
	require.Empty(t, got)
}

func testReadAll(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	streams := []string{StreamName("a"), StreamName("b"), StreamName("c")}
	var ids []string
	for round := range 4 {
		for i, stream := range streams {
			evs := NewEvents(round*10+i, 1+i)
			_, err := s.Append(ctx, stream, eventstore.Any, evs)
			require.NoError(t, err)
			for _, e := range evs {
				ids = append(ids, e.ID)
			}
		}
	}
	all := readAllEventually(t, s, len(ids))
	for i, e := range all {
		require.Equal(t, ids[i], e.ID, "sequential appends read back in append order")
	}
	requireLogOrder(t, all)

	// Paging by the last position read yields the same log.
	var paged []eventstore.RecordedEvent
	from := events.Start
	for {
		page, err := s.ReadAll(ctx, from, 4)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		from = page[len(page)-1].Position
	}
	require.Equal(t, all, paged)
	tail, err := s.ReadAll(ctx, all[len(all)-1].Position, 10)
	require.NoError(t, err)
	require.Empty(t, tail)
}

// requireLogOrder checks that positions strictly increase and each stream's versions go up by one.
func requireLogOrder(t *testing.T, log []eventstore.RecordedEvent) {
	t.Helper()
	next := map[string]uint64{}
	for i, e := range log {
		if i > 0 {
			require.True(t, log[i-1].Position.Less(e.Position), "position %s after %s", e.Position, log[i-1].Position)
		}
		if next[e.Stream] == 0 {
			next[e.Stream] = 1
		}
		require.Equal(t, next[e.Stream], e.Version, "stream %s out of order in the global log", e.Stream)
		next[e.Stream]++
	}
}

// readAllEventually polls the global log until it holds n events. An append can become readable
// some time after it returned: an adapter may hold events back until no earlier one can still commit.
func readAllEventually(t *testing.T, s eventstore.Store, n int) []eventstore.RecordedEvent {
	t.Helper()
	var all []eventstore.RecordedEvent
	require.Eventually(t, func() bool {
		var err error
		all, err = s.ReadAll(t.Context(), events.Start, n+1)
		require.NoError(t, err)
		return len(all) >= n
	}, 10*time.Second, 5*time.Millisecond, "global log should reach %d events", n)
	require.Len(t, all, n)
	return all
}

func testConcurrentAppends(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("product")
	_, err := s.Append(ctx, stream, eventstore.NoStream, NewEvents(0, 1))
	require.NoError(t, err)

	const writers = 8
	var wg sync.WaitGroup
	results := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			_, err := s.Append(ctx, stream, eventstore.Exact(1), NewEvents(w+1, 1))
			results <- err
		})
	}
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		if err == nil {
			won++
			continue
		}
		require.ErrorIs(t, err, eventstore.ErrConflict)
	}
	require.Equal(t, 1, won, "exactly one writer may append at version 1")
	got, err := s.ReadStream(ctx, stream, 1, 100)
	require.NoError(t, err)
	require.Len(t, got, 2)
}

func testSubscribe(t *testing.T, s eventstore.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream := StreamName("order")
	_, err := s.Append(ctx, stream, eventstore.NoStream, NewEvents(1, 3))
	require.NoError(t, err)

	var mu sync.Mutex
	var got []eventstore.RecordedEvent
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(ctx, events.Start, func(_ context.Context, e eventstore.RecordedEvent) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e)
			return nil
		})
	}()
	received := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= n
		}
	}
	require.Eventually(t, received(3), 10*time.Second, 5*time.Millisecond, "backlog")
	_, err = s.Append(ctx, stream, eventstore.Exact(3), NewEvents(4, 2))
	require.NoError(t, err)
	_, err = s.Append(ctx, StreamName("order"), eventstore.NoStream, NewEvents(6, 1))
	require.NoError(t, err)
	require.Eventually(t, received(6), 10*time.Second, 5*time.Millisecond, "live events")

	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 6, "no event delivered twice")
	requireLogOrder(t, got)
}

func testSubscribeHandlerError(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	_, err := s.Append(ctx, StreamName("order"), eventstore.NoStream, NewEvents(1, 2))
	require.NoError(t, err)
	boom := errors.New("boom")
	calls := 0
	err = s.Subscribe(ctx, events.Start, func(context.Context, eventstore.RecordedEvent) error {
		calls++
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)
}

func testLargeAppend(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := StreamName("order")
	res, err := s.Append(ctx, stream, eventstore.NoStream, NewEvents(1, 500))
	require.NoError(t, err)
	require.Equal(t, uint64(500), res.LastVersion)
	got, err := s.ReadStream(ctx, stream, 1, 1000)
	require.NoError(t, err)
	require.Len(t, got, 500)
	requireLogOrder(t, got)
}
