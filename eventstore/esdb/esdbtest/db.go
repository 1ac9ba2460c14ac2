package esdbtest

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/google/uuid"
)

// Expected revisions as the server encodes them (ExpectedVersion in EventStore.Core).
const (
	expectAny          int64 = -2
	expectNoStream     int64 = -1
	expectStreamExists int64 = -4
)

// deletedRevision is the revision of a tombstone, long.MaxValue on the server.
const deletedRevision = math.MaxInt64

// firstPosition is the $all position of the first record; the server's log starts with its own
// records, so no event sits at position 0.
const firstPosition = 512

// record is one event in the log. Records never change once appended.
type record struct {
	id          uuid.UUID
	stream      string
	revision    uint64
	eventType   string
	contentType string
	data        []byte
	metadata    []byte
	created     time.Time
	position    uint64 // commit and prepare position alike
}

type stream struct {
	events     []*record
	tombstoned bool
}

// current returns the stream's last revision, -1 when it has no events.
func (st *stream) current() int64 {
	if st == nil {
		return -1
	}
	return int64(len(st.events)) - 1
}

type idInfo struct {
	stream   string
	revision int64
}

// db is the stand-in's storage: the $all log, the streams and the server's event-id cache.
type db struct {
	maxAppendSize int

	mu            sync.Mutex
	log           []*record
	streams       map[string]*stream
	ids           map[uuid.UUID]idInfo // the server's committed-events cache, never evicted here
	next          uint64               // position of the next record
	changed       chan struct{}        // closed and replaced after every write
	subs          map[chan struct{}]struct{}
	subscriptions int
	expected      map[string][]string
}

func newDB(maxAppendSize int) *db {
	return &db{
		maxAppendSize: maxAppendSize,
		streams:       map[string]*stream{},
		ids:           map[uuid.UUID]idInfo{},
		next:          firstPosition,
		changed:       make(chan struct{}),
		subs:          map[chan struct{}]struct{}{},
		expected:      map[string][]string{},
	}
}

type decision int

const (
	decisionOK decision = iota
	decisionWrongExpectedVersion
	decisionIdempotent
	decisionDeleted
)

// checkCommit decides an append of ids to name at expected, as the server's IndexCommitter.CheckCommit
// does. For an idempotent append it also returns the revision of the last event it repeats, whose
// position the server answers with. The caller holds d.mu.
func (d *db) checkCommit(name string, expected int64, ids []uuid.UUID) (dec decision, last int64) {
	st := d.streams[name]
	if st != nil && st.tombstoned {
		return decisionDeleted, -1
	}
	cur := st.current()
	if expected == expectStreamExists && cur < 0 {
		return decisionWrongExpectedVersion, -1
	}
	if expected == expectAny || expected == expectStreamExists {
		// The server looks the ids up in its cache of committed events, in any order.
		for i, id := range ids {
			info, ok := d.ids[id]
			if !ok || info.stream != name {
				if i == 0 {
					return decisionOK, -1
				}
				return decisionWrongExpectedVersion, -1 // corrupted idempotency
			}
			last = info.revision
		}
		if len(ids) == 0 {
			return decisionOK, -1
		}
		return decisionIdempotent, last
	}
	if expected < cur {
		n := expected
		for _, id := range ids {
			n++
			if n <= cur && st.events[n].id == id {
				continue
			}
			return decisionWrongExpectedVersion, -1 // the first differs, or a later one (corrupted)
		}
		if n == expected {
			return decisionWrongExpectedVersion, -1 // no events
		}
		return decisionIdempotent, n
	}
	if expected > cur {
		return decisionWrongExpectedVersion, -1
	}
	return decisionOK, -1
}

// write appends recs to name, which the caller checked with checkCommit, and returns the last
// record. The caller holds d.mu.
func (d *db) write(name string, recs []*record) *record {
	st := d.streams[name]
	if st == nil {
		st = &stream{}
		d.streams[name] = st
	}
	now := time.Now().UTC()
	for _, r := range recs {
		r.stream = name
		r.revision = uint64(len(st.events))
		r.created = now
		d.place(r)
		st.events = append(st.events, r)
		d.ids[r.id] = idInfo{stream: name, revision: int64(r.revision)}
	}
	d.wake()
	return recs[len(recs)-1]
}

// place gives r the next $all position and adds it to the log. The caller holds d.mu.
func (d *db) place(r *record) {
	r.position = d.next
	d.next += uint64(64 + len(r.stream) + len(r.eventType) + len(r.data) + len(r.metadata))
	d.log = append(d.log, r)
}

// wake tells subscriptions that the log grew. The caller holds d.mu.
func (d *db) wake() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// tombstone deletes name for good. The caller holds d.mu and checked the expected revision.
func (d *db) tombstone(name string) *record {
	st := d.streams[name]
	if st == nil {
		st = &stream{}
		d.streams[name] = st
	}
	st.tombstoned = true
	r := &record{
		id: uuid.New(), stream: name, revision: deletedRevision, eventType: "$streamDeleted",
		contentType: "application/octet-stream", created: time.Now().UTC(),
	}
	d.place(r)
	d.wake()
	return r
}

// subscribe registers a subscription and returns the channel dropSubscriptions closes.
func (d *db) subscribe() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	drop := make(chan struct{})
	d.subs[drop] = struct{}{}
	d.subscriptions++
	return drop
}

func (d *db) unsubscribe(drop chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.subs, drop)
}

func (d *db) dropSubscriptions() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.subs)
	for drop := range d.subs {
		close(drop)
	}
	clear(d.subs)
	return n
}

// since returns the log from index i on and the channel closed at the next write.
func (d *db) since(i int) ([]*record, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log[min(i, len(d.log)):], d.changed
}

// searchAll returns the index of the first record at or after position p.
func (d *db) searchAll(p uint64) int {
	lo, hi := 0, len(d.log)
	for lo < hi {
		mid := (lo + hi) / 2
		if d.log[mid].position < p {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// eventSize is what the server counts against the maximum append size: Event.SizeOnDisk.
func eventSize(eventType string, data, metadata []byte) int {
	return len(data) + len(metadata) + 2*len(utf16.Encode([]rune(eventType)))
}

func expectedString(expected int64) string {
	switch expected {
	case expectAny:
		return "any"
	case expectNoStream:
		return "no_stream"
	case expectStreamExists:
		return "stream_exists"
	default:
		return strconv.FormatInt(expected, 10)
	}
}

// filter is a server-side $all filter.
type filter struct {
	onStream bool // stream name, otherwise event type
	prefixes []string
	re       *regexp.Regexp
	window   int
	interval int // checkpoint every interval records considered
}

func (f *filter) allows(r *record) bool {
	if f == nil {
		return true
	}
	v := r.eventType
	if f.onStream {
		v = r.stream
	}
	if f.re != nil {
		return f.re.MatchString(v)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	return false
}
