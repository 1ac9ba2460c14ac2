// Package events holds strata's wire contracts: event type names, versioned payloads, the envelope and
// metadata every stored event carries, and the explicit [Codec] that turns payloads into bytes and back.
//
// A payload type is never edited once shipped. To change a schema, add a new version (a …V2 type with
// EventType "….v2") and an [Upcaster] from the previous version; golden files under testdata/ freeze the
// JSON of every version so that an accidental edit fails the tests.
package events

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event is a domain event payload. EventType returns a constant such as "product.created.v1": the
// event's name, a dot, and "v" followed by its schema version. It is never derived from the Go type name,
// so renaming a Go type cannot break stored history.
type Event interface {
	EventType() string
}

// Metadata is what an event carries besides its payload and its place in the store.
type Metadata struct {
	// CorrelationID ties together every event caused, directly or not, by one external request.
	CorrelationID string `json:"correlation_id,omitempty"`
	// CausationID is the id of the command or event that directly caused this one.
	CausationID string `json:"causation_id,omitempty"`
	// IdempotencyKey is the Idempotency-Key of the command that produced the event, if it had one.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Position is an event's place in the store's global log. Positions are totally ordered by (Commit,
// Prepare). On EventStoreDB they are the $all commit and prepare positions; on PostgreSQL Commit is the
// id of the appending transaction and Prepare the event's sequence number (see eventstore/postgres).
type Position struct {
	Commit  uint64 `json:"commit"`
	Prepare uint64 `json:"prepare"`
}

// Start is the position before the first event of the global log.
var Start = Position{}

// Less reports whether p comes before q in the global log.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Prepare < q.Prepare
}

// String formats p as "commit/prepare", the form [ParsePosition] reads.
func (p Position) String() string {
	return strconv.FormatUint(p.Commit, 10) + "/" + strconv.FormatUint(p.Prepare, 10)
}

// ParsePosition reads a position written by [Position.String]. It fails on any other form.
func ParsePosition(s string) (Position, error) {
	c, pr, ok := strings.Cut(s, "/")
	if !ok {
		return Position{}, fmt.Errorf("parse position %q: want commit/prepare", s)
	}
	commit, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	prepare, err := strconv.ParseUint(pr, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	return Position{Commit: commit, Prepare: prepare}, nil
}

// Envelope is a decoded, stored event: its payload plus everything the store knows about it.
type Envelope struct {
	// ID is the event id, unique across the store; appends are idempotent by it.
	ID string
	// Stream is the stream the event belongs to, "<aggregate type>-<aggregate id>".
	Stream string
	// Version is the event's 1-based number within its stream.
	Version uint64
	// Position is the event's place in the global log.
	Position Position
	// Type is the event's name without its version, such as "product.created".
	Type string
	// SchemaVersion is the payload version as stored, before any upcasting.
	SchemaVersion int
	// OccurredAt is when the command that produced the event was decided.
	OccurredAt time.Time
	Metadata   Metadata
	// Event is the payload, upcast to the newest version of its type.
	Event Event
}

// StreamName joins an aggregate type and id into a stream name, "<type>-<id>". The type must not
// contain '-'; ids may.
func StreamName(aggregateType, id string) string {
	return aggregateType + "-" + id
}

// SplitStream splits a stream name made by [StreamName] into aggregate type and id. ok is false when
// the name has no '-' or an empty part.
func SplitStream(stream string) (aggregateType, id string, ok bool) {
	aggregateType, id, ok = strings.Cut(stream, "-")
	return aggregateType, id, ok && aggregateType != "" && id != ""
}
