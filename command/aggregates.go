package command

import (
	"context"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
)

// aggregate is the state of one stream, folded from its events by Apply (the aggregates of domain/).
// Decisions only read it; new events are applied to a Clone, so a state handed out by the cache is
// never changed under its readers.
type aggregate[A any] interface {
	Apply(events.Event)
	Clone() A
}

// snapshot is an aggregate as of a version of its stream.
type snapshot[A any] struct {
	state   A
	version uint64
	// read says the state was brought up to date from the store during this command. A state from
	// the cache may be behind: another process may have appended to the stream since.
	read bool
}

// aggregateCache keeps the latest state this process knows of recently used aggregates, so that a
// command neither reads nor folds its stream's history again. It only ever holds states the store
// committed: folded from a read, or from the events of a successful append. A state that fell
// behind (another process appended) is found out by the version check of the next append, or by a
// read before a decision that appends nothing is believed (see [execute]). Entries are evicted least
// recently used first.
type aggregateCache struct {
	entries *lru.Cache[string, cachedState] // nil when the cache is disabled
	lookups *prometheus.CounterVec
}

type cachedState struct {
	state   any // an aggregate[A] of the stream's type
	version uint64
}

func newAggregateCache(size int) *aggregateCache {
	c := &aggregateCache{lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_command_aggregate_cache_total",
		Help: "Aggregate states looked up in the command service's cache, by result: hit, miss, or stale (a hit another process had moved past).",
	}, []string{"result"})}
	if size > 0 {
		c.entries, _ = lru.New[string, cachedState](size) // only a non-positive size fails
	}
	return c
}

// cached returns the cached state of stream, if there is one.
func cached[A aggregate[A]](c *aggregateCache, stream string) (snapshot[A], bool) {
	if c.entries == nil {
		return snapshot[A]{}, false
	}
	e, ok := c.entries.Get(stream)
	state, typed := e.state.(A)
	if !ok || !typed {
		c.lookups.WithLabelValues("miss").Inc()
		return snapshot[A]{}, false
	}
	c.lookups.WithLabelValues("hit").Inc()
	return snapshot[A]{state: state, version: e.version}, true
}

// put caches state as stream's at version, unless a newer one is cached: order pricing reads
// products without their stream's lock, and could otherwise put back a state a command had just
// replaced. (Two racing puts can still leave the older; the next append's version check catches it.)
func (c *aggregateCache) put(stream string, state any, version uint64) {
	if c.entries == nil || version == 0 {
		return
	}
	if e, ok := c.entries.Peek(stream); ok && e.version >= version {
		return
	}
	c.entries.Add(stream, cachedState{state: state, version: version})
}

func (c *aggregateCache) forget(stream string) {
	if c.entries != nil {
		c.entries.Remove(stream)
	}
}

func (c *aggregateCache) stale() { c.lookups.WithLabelValues("stale").Inc() }

// catchUp returns snap with the events stored after its version applied (to a clone), marked as
// read, and those events. Starting from a new aggregate at version 0 it reads the whole stream. The
// result is cached.
func catchUp[A aggregate[A]](ctx context.Context, s *Service, stream string, snap snapshot[A]) (snapshot[A], []eventstore.RecordedEvent, error) {
	records, err := readAfter(ctx, s, stream, snap.version, nil, false)
	if err != nil {
		return snapshot[A]{}, nil, err
	}
	out, err := fold(s, stream, snap, records)
	return out, records, err
}

// readPage is how many events one read of a stream returns at most.
const readPage = 1024

// readAfter returns the events of stream after version. With begun set, reading has begun: records
// are the first of them, and it goes on only if they fill a page.
func readAfter(ctx context.Context, s *Service, stream string, version uint64, records []eventstore.RecordedEvent, begun bool) ([]eventstore.RecordedEvent, error) {
	if begun && len(records) < readPage {
		return records, nil
	}
	for {
		batch, err := s.store.ReadStream(ctx, stream, version+uint64(len(records))+1, readPage)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", stream, err)
		}
		records = append(records, batch...)
		if len(batch) < readPage {
			return records, nil
		}
	}
}

// fold returns snap with records, the events of stream after its version, applied (to a clone) and
// marked as read, and caches it.
func fold[A aggregate[A]](s *Service, stream string, snap snapshot[A], records []eventstore.RecordedEvent) (snapshot[A], error) {
	out := snapshot[A]{state: snap.state, version: snap.version, read: true}
	if len(records) == 0 {
		return out, nil
	}
	out.state = snap.state.Clone()
	for _, r := range records {
		e, err := s.codec.Decode(r.Type, r.SchemaVersion, r.Data)
		if err != nil {
			return snapshot[A]{}, fmt.Errorf("load %s: event %d: %w", stream, r.Version, err)
		}
		out.state.Apply(e)
		out.version = r.Version
	}
	if snap.version > 0 {
		s.cache.stale()
	}
	s.cache.put(stream, out.state, out.version)
	return out, nil
}

// latest returns the current states of streams, aggregates of one type made by newState: the
// cached ones brought up to date with what was stored since (usually nothing), the others folded
// from their whole streams. One read serves all of them, unless a stream is a page or more behind.
func latest[A aggregate[A]](ctx context.Context, s *Service, streams []string, newState func(stream string) A) (map[string]snapshot[A], error) {
	snaps := make(map[string]snapshot[A], len(streams))
	after := make(map[string]uint64, len(streams))
	for _, stream := range streams {
		snap, ok := cached[A](s.cache, stream)
		if !ok {
			snap = snapshot[A]{state: newState(stream)}
		}
		snaps[stream] = snap
		after[stream] = snap.version
	}
	read, err := eventstore.ReadStreams(ctx, s.store, after, readPage)
	if err != nil {
		return nil, fmt.Errorf("load %d streams: %w", len(streams), err)
	}
	for stream, snap := range snaps {
		records, err := readAfter(ctx, s, stream, snap.version, read[stream], true)
		if err != nil {
			return nil, err
		}
		if snaps[stream], err = fold(s, stream, snap, records); err != nil {
			return nil, err
		}
	}
	return snaps, nil
}

// advanced returns snap's state with evs applied, at version.
func advanced[A aggregate[A]](snap snapshot[A], evs []events.Event, version uint64) snapshot[A] {
	state := snap.state.Clone()
	for _, e := range evs {
		state.Apply(e)
	}
	return snapshot[A]{state: state, version: version, read: snap.read}
}
