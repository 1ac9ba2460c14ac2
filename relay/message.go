package relay

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
)

// Headers of a published event. The payload is the event's JSON data; everything else travels in
// headers, so consumers can route and deduplicate without decoding the body. Nats-Msg-Id is the
// event id.
const (
	HeaderStream         = "Strata-Stream"
	HeaderVersion        = "Strata-Version"
	HeaderPosition       = "Strata-Position"
	HeaderType           = "Strata-Type"
	HeaderSchemaVersion  = "Strata-Schema-Version"
	HeaderOccurredAt     = "Strata-Occurred-At"
	HeaderRecordedAt     = "Strata-Recorded-At"
	HeaderCorrelationID  = "Strata-Correlation-Id"
	HeaderCausationID    = "Strata-Causation-Id"
	HeaderIdempotencyKey = "Strata-Idempotency-Key"
)

// Subject returns the subject an event of stream is published on: <prefix>.<aggregate type>.<id>.
// Characters NATS reserves in subject tokens are replaced by '_'; the exact stream name travels in a
// header, so this only affects routing. Streams not named <type>-<id> go to <prefix>._.<name>.
func Subject(prefix, stream string) string {
	typ, id, ok := events.SplitStream(stream)
	if !ok {
		return prefix + "._." + token(stream)
	}
	return prefix + "." + token(typ) + "." + token(id)
}

func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// Message builds the NATS message for e.
func Message(prefix string, e eventstore.RecordedEvent) *nats.Msg {
	m := nats.NewMsg(Subject(prefix, e.Stream))
	m.Data = e.Data
	h := m.Header
	h.Set(nats.MsgIdHdr, e.ID)
	h.Set(HeaderStream, e.Stream)
	h.Set(HeaderVersion, strconv.FormatUint(e.Version, 10))
	h.Set(HeaderPosition, e.Position.String())
	h.Set(HeaderType, e.Type)
	h.Set(HeaderSchemaVersion, strconv.Itoa(e.SchemaVersion))
	h.Set(HeaderOccurredAt, e.OccurredAt.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderRecordedAt, e.RecordedAt.UTC().Format(time.RFC3339Nano))
	setIf(h, HeaderCorrelationID, e.Metadata.CorrelationID)
	setIf(h, HeaderCausationID, e.Metadata.CausationID)
	setIf(h, HeaderIdempotencyKey, e.Metadata.IdempotencyKey)
	return m
}

func setIf(h nats.Header, k, v string) {
	if v != "" {
		h.Set(k, v)
	}
}

// Decode turns a message built by [Message] back into the stored event. It fails on a message that
// lacks a header Message always sets, or carries a malformed one.
func Decode(h nats.Header, data []byte) (eventstore.RecordedEvent, error) {
	e := eventstore.RecordedEvent{
		ID:     h.Get(nats.MsgIdHdr),
		Stream: h.Get(HeaderStream),
		Type:   h.Get(HeaderType),
		Data:   data,
		Metadata: events.Metadata{
			CorrelationID:  h.Get(HeaderCorrelationID),
			CausationID:    h.Get(HeaderCausationID),
			IdempotencyKey: h.Get(HeaderIdempotencyKey),
		},
	}
	if e.ID == "" || e.Stream == "" || e.Type == "" {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event message: missing id, stream or type header")
	}
	// The stream keys every statement and dead letter of the event, and text columns refuse
	// anything else. (The id and the type are checked where they are used: a type that is not
	// text is unknown to the codec, and the event is parked in its stream, in order.)
	if !utf8.ValidString(e.Stream) || strings.ContainsRune(e.Stream, 0) {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event message: stream header %q is not UTF-8 text without NUL", e.Stream)
	}
	var err error
	if e.Version, err = strconv.ParseUint(h.Get(HeaderVersion), 10, 64); err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event %s: version: %w", e.ID, err)
	}
	if e.Position, err = events.ParsePosition(h.Get(HeaderPosition)); err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event %s: %w", e.ID, err)
	}
	if e.SchemaVersion, err = strconv.Atoi(h.Get(HeaderSchemaVersion)); err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event %s: schema version: %w", e.ID, err)
	}
	if e.OccurredAt, err = time.Parse(time.RFC3339Nano, h.Get(HeaderOccurredAt)); err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event %s: occurred at: %w", e.ID, err)
	}
	if e.RecordedAt, err = time.Parse(time.RFC3339Nano, h.Get(HeaderRecordedAt)); err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("decode event %s: recorded at: %w", e.ID, err)
	}
	return e, nil
}
