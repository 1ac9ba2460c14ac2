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
	const page = 1024
	var records []eventstore.RecordedEvent
	for {
		batch, err := s.store.ReadStream(ctx, stream, snap.version+uint64(len(records))+1, page)
		if err != nil {
			return snapshot[A]{}, nil, fmt.Errorf("load %s: %w", stream, err)
		}
		records = append(records, batch...)
		if len(batch) < page {
			break
		}
	}
	out := snapshot[A]{state: snap.state, version: snap.version, read: true}
	if len(records) == 0 {
		return out, nil, nil
	}
	out.state = snap.state.Clone()
	for _, r := range records {
		e, err := s.codec.Decode(r.Type, r.SchemaVersion, r.Data)
		if err != nil {
			return snapshot[A]{}, nil, fmt.Errorf("load %s: event %d: %w", stream, r.Version, err)
		}
		out.state.Apply(e)
		out.version = r.Version
	}
	if snap.version > 0 {
		s.cache.stale()
	}
	s.cache.put(stream, out.state, out.version)
	return out, records, nil
}

// latest returns the current state of stream: the cached one brought up to date with what was
// stored since (usually nothing, one cheap read), or the whole stream folded onto newState.
func latest[A aggregate[A]](ctx context.Context, s *Service, stream string, newState A) (snapshot[A], error) {
	snap, ok := cached[A](s.cache, stream)
	if !ok {
		snap = snapshot[A]{state: newState}
	}
	snap, _, err := catchUp(ctx, s, stream, snap)
	return snap, err
}

// advanced returns snap's state with evs applied, at version.
func advanced[A aggregate[A]](snap snapshot[A], evs []events.Event, version uint64) snapshot[A] {
	state := snap.state.Clone()
	for _, e := range evs {
		state.Apply(e)
	}
	return snapshot[A]{state: state, version: version, read: snap.read}
}
