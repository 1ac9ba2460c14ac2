package esdbtest_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-dev/strata/eventstore/esdb/esdbtest"
)

// These tests pin the server semantics the stand-in claims, through the plain client.

func client(t *testing.T, srv *esdbtest.Server) *esdb.Client {
	t.Helper()
	cfg, err := esdb.ParseConnectionString(srv.URL())
	require.NoError(t, err)
	cfg.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func event(typ string) esdb.EventData {
	return esdb.EventData{EventID: uuid.New(), EventType: typ, ContentType: esdb.ContentTypeJson, Data: []byte(`{}`)}
}

func appendTo(t *testing.T, c *esdb.Client, stream string, expected esdb.ExpectedRevision, evs ...esdb.EventData) (*esdb.WriteResult, error) {
	t.Helper()
	return c.AppendToStream(t.Context(), stream, esdb.AppendToStreamOptions{ExpectedRevision: expected}, evs...)
}

func isCode(err error, code esdb.ErrorCode) bool {
	var e *esdb.Error
	return errors.As(err, &e) && e.Code() == code
}

func read(t *testing.T, rs *esdb.ReadStream, err error) ([]*esdb.RecordedEvent, error) {
	t.Helper()
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev.Event)
	}
}

func readStream(t *testing.T, c *esdb.Client, stream string, opts esdb.ReadStreamOptions, n uint64) ([]*esdb.RecordedEvent, error) {
	t.Helper()
	rs, err := c.ReadStream(t.Context(), stream, opts, n)
	return read(t, rs, err)
}

func readAll(t *testing.T, c *esdb.Client, opts esdb.ReadAllOptions, n uint64) []*esdb.RecordedEvent {
	t.Helper()
	rs, err := c.ReadAll(t.Context(), opts, n)
	evs, err := read(t, rs, err)
	require.NoError(t, err)
	return evs
}

func TestExpectedRevisionsAndIdempotency(t *testing.T) {
	t.Parallel()
	c := client(t, esdbtest.Start(t))
	a, b, x := event("a"), event("b"), event("x")

	_, err := appendTo(t, c, "s", esdb.Revision(0), a)
	require.True(t, isCode(err, esdb.ErrorCodeWrongExpectedVersion), "revision 0 of a missing stream")
	require.ErrorContains(t, err, "but got 'no_stream'")
	first, err := appendTo(t, c, "s", esdb.NoStream{}, a, b)
	require.NoError(t, err)
	require.Equal(t, uint64(1), first.NextExpectedVersion)
	require.Equal(t, first.CommitPosition, first.PreparePosition)

	_, err = appendTo(t, c, "s", esdb.NoStream{}, x)
	require.ErrorContains(t, err, "but got '1'")
	_, err = appendTo(t, c, "s", esdb.Revision(2), x)
	require.True(t, isCode(err, esdb.ErrorCodeWrongExpectedVersion), "revision past the end")

	again, err := appendTo(t, c, "s", esdb.NoStream{}, a, b)
	require.NoError(t, err, "a repeat at its expected revision is idempotent")
	require.Equal(t, *first, *again)
	_, err = appendTo(t, c, "s", esdb.NoStream{}, a, x)
	require.True(t, isCode(err, esdb.ErrorCodeWrongExpectedVersion), "a partial repeat is not")
	_, err = appendTo(t, c, "s", esdb.NoStream{}, a, b, x)
	require.True(t, isCode(err, esdb.ErrorCodeWrongExpectedVersion), "nor is a longer one")

	again, err = appendTo(t, c, "s", esdb.Any{}, a, b)
	require.NoError(t, err)
	require.Equal(t, *first, *again, "any: every id already in the stream")
	_, err = appendTo(t, c, "s", esdb.Any{}, b, x)
	require.True(t, isCode(err, esdb.ErrorCodeWrongExpectedVersion), "any: the first id stored, a later one not")
	res, err := appendTo(t, c, "other", esdb.Any{}, a)
	require.NoError(t, err, "ids are checked per stream only")
	require.Equal(t, uint64(0), res.NextExpectedVersion)
	_, err = appendTo(t, c, "s", esdb.Any{}, x, a)
	require.NoError(t, err, "any: the first id is new, so everything is appended")

	evs, err := readStream(t, c, "s", esdb.ReadStreamOptions{}, 10)
	require.NoError(t, err)
	require.Len(t, evs, 4)
	require.Equal(t, a.EventID, evs[3].EventID)
	require.Equal(t, first.CommitPosition, evs[1].Position.Commit, "stream reads carry $all positions")
}

func TestReads(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	c := client(t, srv)
	_, err := readStream(t, c, "missing", esdb.ReadStreamOptions{}, 10)
	require.True(t, isCode(err, esdb.ErrorCodeResourceNotFound))
	for i := range 5 {
		_, err := appendTo(t, c, "s"+string(rune('a'+i%2)), esdb.Any{}, event("e"), event("$sys"))
		require.NoError(t, err)
	}

	evs, err := readStream(t, c, "sa", esdb.ReadStreamOptions{From: esdb.Revision(2)}, 3)
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 3, 4}, revisions(evs))
	evs, err = readStream(t, c, "sa", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 2)
	require.NoError(t, err)
	require.Equal(t, []uint64{5, 4}, revisions(evs))
	evs, err = readStream(t, c, "sa", esdb.ReadStreamOptions{From: esdb.Revision(9)}, 3)
	require.NoError(t, err)
	require.Empty(t, evs, "past the end of a stream that exists")

	all := readAll(t, c, esdb.ReadAllOptions{}, 100)
	require.Len(t, all, 10)
	for i := 1; i < len(all); i++ {
		require.Less(t, all[i-1].Position.Commit, all[i].Position.Commit)
	}
	from := readAll(t, c, esdb.ReadAllOptions{From: all[3].Position}, 2)
	require.Equal(t, []*esdb.RecordedEvent{all[3], all[4]}, from, "inclusive of the position")
	back := readAll(t, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: all[3].Position}, 2)
	require.Equal(t, []*esdb.RecordedEvent{all[2], all[1]}, back, "backwards, exclusive of the position")
}

func revisions(evs []*esdb.RecordedEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.EventNumber
	}
	return out
}

func TestSubscribeToAll(t *testing.T) {
	t.Parallel()
	srv := esdbtest.Start(t)
	c := client(t, srv)
	var ids []uuid.UUID
	for range 3 {
		e := event("e")
		ids = append(ids, e.EventID)
		_, err := appendTo(t, c, "user", esdb.Any{}, e, event("$sys"))
		require.NoError(t, err)
	}
	all := readAll(t, c, esdb.ReadAllOptions{}, 100)

	sub, err := c.SubscribeToAll(t.Context(), esdb.SubscribeToAllOptions{
		From:   all[0].Position, // the first user event: skipped
		Filter: esdb.ExcludeSystemEventsFilter(), MaxSearchWindow: 2, CheckpointInterval: 1,
	})
	require.NoError(t, err)
	defer sub.Close()
	var got []uuid.UUID
	checkpoints, caughtUp := 0, false
	for !caughtUp {
		ev := sub.Recv()
		require.Nil(t, ev.SubscriptionDropped)
		switch {
		case ev.EventAppeared != nil:
			got = append(got, ev.EventAppeared.Event.EventID)
		case ev.CheckPointReached != nil:
			checkpoints++
		case ev.CaughtUp != nil:
			caughtUp = true
		}
	}
	require.Equal(t, ids[1:], got, "after the start position, system events filtered out")
	require.Equal(t, 2, checkpoints, "one per 2 events considered")

	live := event("e")
	_, err = appendTo(t, c, "user", esdb.Any{}, live)
	require.NoError(t, err)
	for {
		ev := sub.Recv()
		require.Nil(t, ev.SubscriptionDropped)
		if ev.EventAppeared != nil {
			require.Equal(t, live.EventID, ev.EventAppeared.Event.EventID)
			break
		}
	}
	require.Equal(t, 1, srv.DropSubscriptions())
	for {
		ev := sub.Recv()
		if ev.SubscriptionDropped != nil {
			require.Equal(t, codes.Unavailable, status.Code(ev.SubscriptionDropped.Error))
			break
		}
		require.NotNil(t, ev.CheckPointReached, "only a checkpoint may come before the drop")
	}
}

func TestTombstoneAndLimits(t *testing.T) {
	t.Parallel()
	srv, err := esdbtest.New(esdbtest.Options{MaxAppendSize: 100})
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	c := client(t, srv)
	_, err = appendTo(t, c, "s", esdb.NoStream{}, event("e"))
	require.NoError(t, err)
	_, err = c.TombstoneStream(t.Context(), "s", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Revision(5)})
	require.Error(t, err, "wrong expected revision")
	_, err = c.TombstoneStream(t.Context(), "s", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Revision(0)})
	require.NoError(t, err)
	_, err = readStream(t, c, "s", esdb.ReadStreamOptions{}, 10)
	require.True(t, isCode(err, esdb.ErrorCodeStreamDeleted))
	_, err = appendTo(t, c, "s", esdb.Any{}, event("e"))
	require.True(t, isCode(err, esdb.ErrorCodeStreamDeleted))
	all := readAll(t, c, esdb.ReadAllOptions{}, 10)
	require.Len(t, all, 2)
	require.Equal(t, "$streamDeleted", all[1].EventType)

	big := event(strings.Repeat("t", 10))
	big.Data = []byte(`"` + strings.Repeat("x", 79) + `"`) // 81 bytes + 2×10 for the type: 101
	_, err = appendTo(t, c, "big", esdb.Any{}, big)
	require.Equal(t, codes.InvalidArgument, status.Code(errors.Unwrap(err)))
	require.ErrorContains(t, err, "Maximum Append Size of 100 Exceeded")
	big.Data = big.Data[1:]
	big.Data[0] = '"'
	_, err = appendTo(t, c, "big", esdb.Any{}, big)
	require.NoError(t, err, "100 bytes fit")
}
