package esdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
)

// claimType is the event type of an event-id claim; '$' makes it a system event, skipped by the
// global log.
const claimType = "$strata.event-id"

// claimConcurrency bounds the claims one append sends at once.
const claimConcurrency = 32

// scanPage is how many events a scan of a stream reads per call.
const scanPage = 512

// metadata is what an event's EventStoreDB metadata holds.
type metadata struct {
	events.Metadata
	OccurredAt    time.Time `json:"occurred_at"`
	SchemaVersion int       `json:"schema_version"`
}

// claim is the data of an event-id claim: the stream the id belongs to, as the port names it.
type claim struct {
	Stream string `json:"stream"`
}

// expectedRevision returns the client's expected revision for e: Any is any, NoStream (and Exact(0))
// is no_stream, and Exact(n) is revision n-1, since EventStoreDB counts revisions from 0.
func expectedRevision(e eventstore.ExpectedVersion) esdb.ExpectedRevision {
	v, ok := e.Version()
	switch {
	case !ok:
		return esdb.Any{}
	case v == 0:
		return esdb.NoStream{}
	default:
		return esdb.Revision(v - 1)
	}
}

// Append implements [eventstore.Store.Append]: it claims the event ids (see the package comment),
// settles a repeat by reading the stream, and appends with the expected revision mapped exactly.
// It fails with [eventstore.ErrInvalidAppend] for an append of more than [Options.MaxAppendSize]
// bytes, and with [eventstore.ErrStreamDeleted] for a stream that was deleted.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, evs []eventstore.EventData) (eventstore.AppendResult, error) {
	ids, proposed, err := s.prepare(stream, evs)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	reclaimed, err := s.claim(ctx, stream, ids)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if reclaimed {
		// Some id was claimed for this stream before: a repeat of an earlier append, or a retry of one
		// that failed before it stored anything.
		if res, found, err := s.findRepeat(ctx, stream, expected, ids); err != nil || found {
			return res, err
		}
	}
	res, err := s.write(ctx, stream, expected, proposed)
	if conflict := (*eventstore.ConflictError)(nil); reclaimed && errors.As(err, &conflict) {
		// A twin of this append may have stored the same events since findRepeat looked.
		if dup, found, ferr := s.findRepeat(ctx, stream, expected, ids); ferr != nil || found {
			return dup, ferr
		}
	}
	return res, err
}

// prepare checks an append on its face and encodes its events.
func (s *Store) prepare(stream string, evs []eventstore.EventData) ([]uuid.UUID, []esdb.EventData, error) {
	if stream == "" {
		return nil, nil, fmt.Errorf("append: empty stream name: %w", eventstore.ErrInvalidAppend)
	}
	if strings.HasPrefix(s.name(stream), "$") {
		return nil, nil, fmt.Errorf("append to %s: stream names starting with '$' are EventStoreDB's system streams: %w", stream, eventstore.ErrInvalidAppend)
	}
	if len(evs) == 0 {
		return nil, nil, fmt.Errorf("append to %s: no events: %w", stream, eventstore.ErrInvalidAppend)
	}
	ids := make([]uuid.UUID, len(evs))
	out := make([]esdb.EventData, len(evs))
	seen := make(map[uuid.UUID]struct{}, len(evs))
	size := 0
	for i, e := range evs {
		id, err := uuid.Parse(e.ID)
		if err != nil || id == uuid.Nil {
			return nil, nil, fmt.Errorf("append to %s: event %d: id %q is not a UUID, or is the nil UUID: %w", stream, i, e.ID, eventstore.ErrInvalidAppend)
		}
		if _, dup := seen[id]; dup {
			return nil, nil, fmt.Errorf("append to %s: event id %s given twice: %w", stream, id, eventstore.ErrInvalidAppend)
		}
		seen[id] = struct{}{}
		if e.Type == "" || strings.HasPrefix(e.Type, "$") || !json.Valid(e.Data) {
			return nil, nil, fmt.Errorf("append to %s: event %s: needs a type, not starting with '$', and JSON data: %w", stream, id, eventstore.ErrInvalidAppend)
		}
		md, err := json.Marshal(metadata{Metadata: e.Metadata, OccurredAt: e.OccurredAt, SchemaVersion: e.SchemaVersion})
		if err != nil {
			return nil, nil, fmt.Errorf("append to %s: event %s: encode metadata: %w", stream, id, err)
		}
		size += eventSize(e.Type, e.Data, md)
		ids[i] = id
		out[i] = esdb.EventData{EventID: id, EventType: e.Type, ContentType: esdb.ContentTypeJson, Data: e.Data, Metadata: md}
	}
	if size > s.opts.MaxAppendSize {
		return nil, nil, fmt.Errorf("append to %s: append of %d bytes exceeds the server's limit of %d bytes (--max-append-size; split it into several appends, or raise the server's limit and Options.MaxAppendSize together): %w",
			stream, size, s.opts.MaxAppendSize, eventstore.ErrInvalidAppend)
	}
	return ids, out, nil
}

// eventSize is what the server counts against its append limit (Event.SizeOnDisk): data, metadata
// and the event type in UTF-16.
func eventSize(eventType string, data, md []byte) int {
	return len(data) + len(md) + 2*len(utf16.Encode([]rune(eventType)))
}

func (s *Store) name(stream string) string { return s.opts.StreamPrefix + stream }

func (s *Store) claimStream(id uuid.UUID) string {
	return s.opts.StreamPrefix + "strata-event-id-" + id.String()
}

// claim claims every id for stream. It reports whether some id had been claimed for stream before,
// and fails with [eventstore.ErrDuplicateEvent] if some id belongs to another stream.
func (s *Store) claim(ctx context.Context, stream string, ids []uuid.UUID) (bool, error) {
	var (
		mu        sync.Mutex
		reclaimed bool
	)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(claimConcurrency)
	for _, id := range ids {
		g.Go(func() error {
			owner, err := s.claimOne(ctx, stream, id)
			switch {
			case err != nil:
				return err
			case owner == "":
				return nil
			case owner != stream:
				return fmt.Errorf("append to %s: event id %s belongs to stream %s: %w", stream, id, owner, eventstore.ErrDuplicateEvent)
			}
			mu.Lock()
			reclaimed = true
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	return reclaimed, err
}

// claimOne claims id for stream. It returns "" if the claim is new, otherwise the stream the id was
// claimed for.
func (s *Store) claimOne(ctx context.Context, stream string, id uuid.UUID) (string, error) {
	data, err := json.Marshal(claim{Stream: stream})
	if err != nil {
		return "", fmt.Errorf("append to %s: claim event id %s: %w", stream, id, err)
	}
	name := s.claimStream(id)
	_, err = call(ctx, s, func(ctx context.Context, c *esdb.Client) (*esdb.WriteResult, error) {
		return c.AppendToStream(ctx, name, esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}},
			esdb.EventData{EventID: uuid.New(), EventType: claimType, ContentType: esdb.ContentTypeJson, Data: data})
	})
	if err == nil {
		return "", nil
	}
	if !hasCode(err, esdb.ErrorCodeWrongExpectedVersion) {
		return "", fmt.Errorf("append to %s: claim event id %s: %w", stream, id, err)
	}
	first, err := s.readStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Start{}}, 1)
	if err != nil {
		return "", fmt.Errorf("append to %s: read the claim of event id %s: %w", stream, id, err)
	}
	var c claim
	if len(first) == 0 || first[0].EventType != claimType || json.Unmarshal(first[0].Data, &c) != nil || c.Stream == "" {
		return "", fmt.Errorf("append to %s: stream %s does not hold a claim of event id %s", stream, name, id)
	}
	return c.Stream, nil
}

// write appends proposed to stream at expected, and translates the server's refusals.
func (s *Store) write(ctx context.Context, stream string, expected eventstore.ExpectedVersion, proposed []esdb.EventData) (eventstore.AppendResult, error) {
	name := s.name(stream)
	wr, err := call(ctx, s, func(ctx context.Context, c *esdb.Client) (*esdb.WriteResult, error) {
		return c.AppendToStream(ctx, name, esdb.AppendToStreamOptions{ExpectedRevision: expectedRevision(expected)}, proposed...)
	})
	switch {
	case hasCode(err, esdb.ErrorCodeWrongExpectedVersion):
		actual, aerr := s.actualVersion(ctx, name, err)
		if aerr != nil {
			return eventstore.AppendResult{}, fmt.Errorf("append to %s expecting %s: %w", stream, expected, errors.Join(err, aerr))
		}
		return eventstore.AppendResult{}, &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: actual}
	case hasCode(err, esdb.ErrorCodeStreamDeleted):
		return eventstore.AppendResult{}, fmt.Errorf("append to %s: %w", stream, eventstore.ErrStreamDeleted)
	case tooLarge(err):
		return eventstore.AppendResult{}, fmt.Errorf("append to %s: the server refused the append as too large (%w): %w", stream, err, eventstore.ErrInvalidAppend)
	case err != nil:
		return eventstore.AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	n := uint64(len(proposed))
	res := eventstore.AppendResult{
		Stream:       stream,
		FirstVersion: wr.NextExpectedVersion + 2 - n,
		LastVersion:  wr.NextExpectedVersion + 1,
		Position:     events.Position{Commit: wr.CommitPosition, Prepare: wr.PreparePosition},
	}
	if res.Position == (events.Position{}) {
		// The server did not report a position: take the last event's.
		last, err := s.readStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(wr.NextExpectedVersion)}, 1)
		if err != nil || len(last) == 0 {
			return res, fmt.Errorf("append to %s: appended, but could not read the position back: %w", stream, errors.Join(err, errors.New("no event")))
		}
		res.Position = position(last[0])
	}
	return res, nil
}

// tooLarge reports whether err is the server's refusal of an append over its size limit.
func tooLarge(err error) bool {
	var st interface{ GRPCStatus() *status.Status }
	return errors.As(err, &st) && st.GRPCStatus().Code() == codes.InvalidArgument &&
		strings.Contains(st.GRPCStatus().Message(), "Maximum Append")
}

// currentRevision finds the server's current revision in the client's wrong-expected-version error,
// which carries it only in its message: "... expecting '…' but got '<revision>|no_stream'".
var currentRevision = regexp.MustCompile(`but got '([^']*)'`)

// actualVersion returns the version of stream when an append was refused with err: from the
// server's answer when it can be read, otherwise by reading the stream.
func (s *Store) actualVersion(ctx context.Context, name string, err error) (uint64, error) {
	if m := currentRevision.FindStringSubmatch(err.Error()); m != nil {
		if m[1] == "no_stream" {
			return 0, nil
		}
		if rev, perr := strconv.ParseUint(m[1], 10, 64); perr == nil {
			return rev + 1, nil
		}
	}
	return s.lastVersion(ctx, name)
}

// lastVersion returns the version of the stream named name, 0 if it does not exist.
func (s *Store) lastVersion(ctx context.Context, name string) (uint64, error) {
	last, err := s.readStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1)
	if err != nil || len(last) == 0 {
		return 0, err
	}
	return last[0].EventNumber + 1, nil
}

// findRepeat reports whether ids are all stored in stream, in order at consecutive versions, and if
// so returns the earlier append's result. Any other use of them in stream is
// [eventstore.ErrDuplicateEvent]; none of them in stream is not found.
func (s *Store) findRepeat(ctx context.Context, stream string, expected eventstore.ExpectedVersion, ids []uuid.UUID) (eventstore.AppendResult, bool, error) {
	name := s.name(stream)
	if v, ok := expected.Version(); ok {
		// A retry with the same expected version finds its events right after it.
		got, err := s.readStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(v)}, uint64(len(ids)))
		if err != nil {
			return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: look for a repeat: %w", stream, err)
		}
		if res, ok := repeatOf(stream, got, ids); ok {
			return res, true, nil
		}
	}
	want := make(map[uuid.UUID]*esdb.RecordedEvent, len(ids))
	for _, id := range ids {
		want[id] = nil
	}
	for from := uint64(0); ; {
		page, err := s.readStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(from)}, scanPage)
		if err != nil {
			return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: look for a repeat: %w", stream, err)
		}
		for _, e := range page {
			if _, ok := want[e.EventID]; ok {
				want[e.EventID] = e
			}
		}
		if len(page) < scanPage {
			break
		}
		from = page[len(page)-1].EventNumber + 1
	}
	var stored []*esdb.RecordedEvent
	for _, id := range ids {
		if e := want[id]; e != nil {
			stored = append(stored, e)
		}
	}
	if len(stored) == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	if res, ok := repeatOf(stream, stored, ids); ok {
		return res, true, nil
	}
	e := stored[0]
	return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: event %s is already stored at version %d, and the append does not repeat an earlier one: %w",
		stream, e.EventID, e.EventNumber+1, eventstore.ErrDuplicateEvent)
}

// repeatOf returns the result of the append that stored the events ids name, if stored holds exactly
// them, in order, at consecutive revisions.
func repeatOf(stream string, stored []*esdb.RecordedEvent, ids []uuid.UUID) (eventstore.AppendResult, bool) {
	if len(stored) == 0 || len(stored) != len(ids) {
		return eventstore.AppendResult{}, false
	}
	for i, e := range stored {
		if e.EventID != ids[i] || e.EventNumber != stored[0].EventNumber+uint64(i) {
			return eventstore.AppendResult{}, false
		}
	}
	last := stored[len(stored)-1]
	return eventstore.AppendResult{
		Stream: stream, FirstVersion: stored[0].EventNumber + 1, LastVersion: last.EventNumber + 1,
		Position: position(last), Duplicate: true,
	}, true
}
