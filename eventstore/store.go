// Package eventstore is the port between strata and the database that keeps its events: append to a
// stream with an expected version, read a stream, read the global log in order, and tail it from a
// checkpoint. Adapters live in subpackages named after their technology (eventstore/postgres,
// eventstore/esdb); every adapter runs the contract suite in eventstore/storetest.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-dev/strata/events"
)

// ErrConflict is returned, wrapped in a [*ConflictError], when a stream's version is not the one an
// append expected.
var ErrConflict = errors.New("wrong expected version")

// ErrDuplicateEvent is returned when an append carries an event id that is already stored but the
// append is not an exact repeat of the earlier one (another stream, another place, or only some of its
// events stored).
var ErrDuplicateEvent = errors.New("duplicate event id")

// ErrInvalidAppend is returned for an append the store refuses on its face: no events, an empty
// stream name, an empty or repeated event id, or an event too large for the store.
var ErrInvalidAppend = errors.New("invalid append")

// ErrStreamDeleted is returned when reading or appending to a stream that was deleted.
var ErrStreamDeleted = errors.New("stream deleted")

// ConflictError says which version an append expected and which it found. It unwraps to [ErrConflict].
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
	// Actual is the stream's version when the append was refused; 0 when the stream did not exist.
	Actual uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append to %s expecting %s: stream is at version %d: %v", e.Stream, e.Expected, e.Actual, ErrConflict)
}

// Unwrap returns [ErrConflict].
func (e *ConflictError) Unwrap() error { return ErrConflict }

// ExpectedVersion states what an append expects of its stream. The zero value is [Any].
type ExpectedVersion struct {
	kind    expectKind
	version uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectExact
)

// Any appends whatever the stream's version. Never use it for aggregate streams: it disables the
// optimistic concurrency check that keeps decisions consistent.
var Any = ExpectedVersion{kind: expectAny}

// NoStream appends only if the stream has no events yet.
var NoStream = ExpectedVersion{kind: expectNoStream}

// Exact appends only if the stream's version (its number of events) is v. Exact(0) is [NoStream].
func Exact(v uint64) ExpectedVersion {
	if v == 0 {
		return NoStream
	}
	return ExpectedVersion{kind: expectExact, version: v}
}

// IsAny reports whether e is [Any].
func (e ExpectedVersion) IsAny() bool { return e.kind == expectAny }

// Version returns the number of events e expects the stream to hold, and false for [Any].
func (e ExpectedVersion) Version() (uint64, bool) {
	switch e.kind {
	case expectNoStream:
		return 0, true
	case expectExact:
		return e.version, true
	default:
		return 0, false
	}
}

// Matches reports whether a stream at version actual satisfies e.
func (e ExpectedVersion) Matches(actual uint64) bool {
	v, ok := e.Version()
	return !ok || v == actual
}

func (e ExpectedVersion) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectExact:
		return fmt.Sprintf("version %d", e.version)
	default:
		return "any version"
	}
}

// EventData is an event to append: an encoded payload and what goes with it.
type EventData struct {
	// ID identifies the event across the store. Appending an id that is already stored is a no-op when
	// the whole append repeats an earlier one (see [Store.Append]). Required.
	ID string
	// Type is the event's name without version, such as "product.created".
	Type          string
	SchemaVersion int
	// Data is the JSON payload.
	Data       []byte
	Metadata   events.Metadata
	OccurredAt time.Time
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	ID            string
	Stream        string
	Version       uint64
	Position      events.Position
	Type          string
	SchemaVersion int
	Data          []byte
	Metadata      events.Metadata
	OccurredAt    time.Time
	// RecordedAt is when the store committed the event.
	RecordedAt time.Time
}

// AppendResult describes a successful append.
type AppendResult struct {
	Stream string
	// FirstVersion and LastVersion are the versions of the first and last appended events.
	FirstVersion, LastVersion uint64
	// Position is the global position of the last appended event.
	Position events.Position
	// Duplicate is true when the append repeated an earlier one and stored nothing new; the other fields
	// then describe the earlier append.
	Duplicate bool
}

// Store is the event store port.
type Store interface {
	// Append adds evs to the end of stream if the stream's version matches expected, atomically: all of
	// them or none. It fails with a [*ConflictError] when the version does not match. If every event id
	// of evs is already stored in stream, in the same order at consecutive versions, the append is a
	// repeat: it stores nothing and returns the earlier result with Duplicate set, whatever expected
	// says. Any other reuse of a stored id fails with [ErrDuplicateEvent].
	Append(ctx context.Context, stream string, expected ExpectedVersion, evs []EventData) (AppendResult, error)

	// ReadStream returns up to max events of stream with versions from fromVersion (1-based) on, in
	// version order. A stream that does not exist reads as empty.
	ReadStream(ctx context.Context, stream string, fromVersion uint64, max int) ([]RecordedEvent, error)

	// ReadAll returns up to max events of the global log that come after position from, in log order.
	// The log order is consistent with every stream's version order, and an adapter returns an event
	// only once no event can ever appear before it: a reader that advances its checkpoint to the last
	// event it received never skips an event that commits late.
	ReadAll(ctx context.Context, from events.Position, max int) ([]RecordedEvent, error)

	// Subscribe tails the global log from after position from: it calls handle for every event in log
	// order, first the backlog, then new events as they commit, until ctx ends or handle fails. It
	// returns handle's error, or ctx's.
	Subscribe(ctx context.Context, from events.Position, handle func(context.Context, RecordedEvent) error) error

	// Close releases the store's resources.
	Close()
}

// StreamsReader is implemented by stores that can read the ends of many streams in one request.
// Use it through [ReadStreams].
type StreamsReader interface {
	// ReadStreams returns, for every stream of after, up to max of its events with versions above
	// after[stream], in version order. Streams without such events, including streams that do not
	// exist, are absent from the result.
	ReadStreams(ctx context.Context, after map[string]uint64, max int) (map[string][]RecordedEvent, error)
}

// ReadStreams returns what [StreamsReader.ReadStreams] does: in one request when s is a
// StreamsReader, with one [Store.ReadStream] per stream otherwise.
func ReadStreams(ctx context.Context, s Store, after map[string]uint64, max int) (map[string][]RecordedEvent, error) {
	if r, ok := s.(StreamsReader); ok {
		return r.ReadStreams(ctx, after, max)
	}
	out := make(map[string][]RecordedEvent, len(after))
	for stream, version := range after {
		evs, err := s.ReadStream(ctx, stream, version+1, max)
		if err != nil {
			return nil, err
		}
		if len(evs) > 0 {
			out[stream] = evs
		}
	}
	return out, nil
}

// Counter is implemented by stores that can count the events of the global log after a position,
// which the relay and projectors report as their lag. Counting stops at limit.
type Counter interface {
	CountAfter(ctx context.Context, from events.Position, limit int64) (int64, error)
}
