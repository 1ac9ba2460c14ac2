// Package command is strata's write side: the REST command service. A request is decoded and
// validated here, decided by an aggregate of domain/ against its history, and appended to the event
// store with the version it was decided on. Appending is all it does: the relay publishes, the
// projectors build read models.
package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/backoff"
	"github.com/strata-dev/strata/internal/problem"
)

// Result describes the state of the stream a command was decided on, after the command.
type Result struct {
	// ID is the aggregate's id.
	ID string
	// Stream is the aggregate's stream.
	Stream string
	// Version is the stream's version after the command: the version of its last event.
	Version uint64
}

// Request is what a command carries besides its arguments.
type Request struct {
	// IfMatch, when set, makes the command conditional on the stream's current version.
	IfMatch *uint64
	// Metadata goes on every event the command appends. Its IdempotencyKey also makes the
	// command's event ids deterministic, so a retry after a lost reply appends nothing new.
	Metadata events.Metadata
}

// Options tune a [Service]. The zero value is usable.
type Options struct {
	// MaxAttempts bounds how often a command without If-Match is decided again after losing a
	// race for its stream. Default 8.
	MaxAttempts int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default discards.
	Logger *slog.Logger
	// CacheSize is how many aggregate states the service keeps between commands (see
	// [aggregateCache]). Default 10,000; negative disables the cache.
	CacheSize int
	// Registerer receives the service's metrics; default none.
	Registerer prometheus.Registerer
}

// Service decides commands against event-sourced aggregates and appends their events.
type Service struct {
	store eventstore.Store
	codec *events.Codec
	skus  SKUClaims
	opts  Options
	log   *slog.Logger
	locks streamLocks
	cache *aggregateCache

	appends   *prometheus.CounterVec
	conflicts prometheus.Counter
}

// SKUClaims keeps SKUs unique across products, which no single stream can do.
type SKUClaims interface {
	// Claim reserves sku for productID. Claiming a SKU again for the same product succeeds. It fails
	// with [ErrSKUTaken] when another product holds it.
	Claim(ctx context.Context, sku, productID string, productExists func(context.Context, string) (bool, error)) error
	// Release drops productID's claim on sku, after its product.created append failed.
	Release(ctx context.Context, sku, productID string) error
}

// NewService returns a service appending to store.
func NewService(store eventstore.Store, codec *events.Codec, skus SKUClaims, opts Options) *Service {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 8
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 10_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store: store, codec: codec, skus: skus, opts: opts, log: opts.Logger, cache: newAggregateCache(opts.CacheSize),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_command_appends_total", Help: "Commands that appended events, by aggregate type.",
		}, []string{"aggregate"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_command_version_conflicts_total", Help: "Appends refused because the stream moved on; retried unless If-Match was given.",
		}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.appends, s.conflicts, s.cache.lookups)
	}
	return s
}

// execute runs a command on one stream: take the aggregate's state, decide, append with the state's
// version. Commands on one stream from this process queue on a lock instead of racing.
//
// The state comes from the cache when it holds the stream, without reading the store: the append's
// version check proves it current, and when another process appended meanwhile the append fails,
// the state is brought up to date and the command decided again. A decision that appends nothing
// (a refusal, or a command already in effect) proves nothing, so it is only believed once the state
// was read from the store. A lost race is retried up to MaxAttempts, unless the request pinned the
// version with If-Match. creates says whether the command may start the stream, which decides
// between 404 and 412 when If-Match names a version of a stream that does not exist.
//
// A retry of a command that committed (its reply was lost, or this process crashed before storing
// it, or the stored response was purged) is answered as the first time. Deciding it again either
// yields events with the ids the first attempt derived from its Idempotency-Key, which the store
// recognises as a repeat, or is refused by the state its own events made, or appends nothing: in
// each case the stream's history is then searched for the last event carrying the key.
func execute[A aggregate[A]](ctx context.Context, s *Service, aggregate, id string, newState func(id string) A, req Request, creates bool, decide func(A) ([]events.Event, error)) (Result, error) {
	stream := events.StreamName(aggregate, id)
	unlock, err := s.locks.lock(ctx, stream)
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	res, appended, err := decideAndAppend(ctx, s, aggregate, stream, id, newState, req, creates, decide)
	if key := req.Metadata.IdempotencyKey; key != "" && !appended && ctx.Err() == nil {
		_, records, serr := catchUp(ctx, s, stream, snapshot[A]{state: newState(id)})
		if v, ok := lastVersionWithKey(records, key); serr == nil && ok {
			return Result{ID: id, Stream: stream, Version: v}, nil
		}
	}
	return res, err
}

// decideAndAppend is [execute] without the lock and without looking for an earlier attempt;
// appended says whether this call appended the command's events.
func decideAndAppend[A aggregate[A]](ctx context.Context, s *Service, aggregate, stream, id string, newState func(id string) A, req Request, creates bool, decide func(A) ([]events.Event, error)) (_ Result, appended bool, err error) {
	snap, ok := cached[A](s.cache, stream)
	if !ok {
		if snap, _, err = catchUp(ctx, s, stream, snapshot[A]{state: newState(id)}); err != nil {
			return Result{}, false, err
		}
	}
	refresh := func() error {
		snap, _, err = catchUp(ctx, s, stream, snap)
		return err
	}

	retry := backoff.New(2*time.Millisecond, 100*time.Millisecond)
	for attempt := 1; ; attempt++ {
		res := Result{ID: id, Stream: stream, Version: snap.version}
		if req.IfMatch != nil && *req.IfMatch != snap.version {
			if !snap.read {
				if err := refresh(); err != nil {
					return Result{}, false, err
				}
				attempt--
				continue
			}
			if snap.version == 0 && !creates {
				// RFC 9110 13.2.1: a precondition is not evaluated when the request would fail without
				// it for another reason than the precondition; an unknown id is 404.
				return Result{}, false, fmt.Errorf("%s: %w", stream, domain.ErrNotFound)
			}
			return Result{}, false, fmt.Errorf("%s is at version %d, not %d: %w", stream, snap.version, *req.IfMatch,
				errors.Join(problem.ErrPreconditionFailed, &eventstore.ConflictError{Stream: stream, Expected: eventstore.Exact(*req.IfMatch), Actual: snap.version}))
		}
		evs, err := decide(snap.state)
		if (err != nil || len(evs) == 0) && !snap.read {
			if err := refresh(); err != nil {
				return Result{}, false, err
			}
			attempt--
			continue
		}
		if err != nil {
			return Result{}, false, err
		}
		if len(evs) == 0 {
			return res, false, nil // nothing to change: the command is already in effect
		}
		data, err := s.encode(stream, evs, req.Metadata)
		if err != nil {
			return Result{}, false, err
		}
		stored, err := s.store.Append(ctx, stream, eventstore.Exact(snap.version), data)
		if err == nil {
			res.Version = stored.LastVersion
			if stored.Duplicate {
				// An earlier attempt, or a concurrent twin, appended events with these ids. Its reply
				// is the last version carrying the key, which the caller's search finds: the events
				// decided now may be fewer than the earlier attempt's.
				s.cache.forget(stream)
				return res, false, nil
			}
			s.appends.WithLabelValues(aggregate).Inc()
			next := advanced(snap, evs, stored.LastVersion)
			s.cache.put(stream, next.state, next.version)
			return res, true, nil
		}
		if !errors.Is(err, eventstore.ErrConflict) {
			return Result{}, false, fmt.Errorf("append to %s: %w", stream, err)
		}
		s.cache.forget(stream)
		s.conflicts.Inc()
		if req.IfMatch != nil {
			return Result{}, false, fmt.Errorf("%s changed concurrently: %w", stream, errors.Join(problem.ErrPreconditionFailed, err))
		}
		if attempt >= s.opts.MaxAttempts {
			return Result{}, false, fmt.Errorf("%s: gave up after %d concurrent modifications: %w", stream, attempt, err)
		}
		if snap.read { // a state just read lost a race: give the other writer a moment
			if err := retry.Wait(ctx); err != nil {
				return Result{}, false, err
			}
		}
		if err := refresh(); err != nil {
			return Result{}, false, err
		}
	}
}

func lastVersionWithKey(records []eventstore.RecordedEvent, key string) (uint64, bool) {
	for i := len(records) - 1; i >= 0; i-- {
		if records[i].Metadata.IdempotencyKey == key {
			return records[i].Version, true
		}
	}
	return 0, false
}

// idNamespace scopes the deterministic ids derived from idempotency keys.
var idNamespace = uuid.MustParse("6f1c3a52-8d8e-4f0e-9a51-3a4f6c1d2b7e")

// derivedID returns a stable UUID for the parts, so that retries of one command name the same
// aggregates and events.
func derivedID(parts ...string) string {
	name := ""
	for _, p := range parts {
		name += p + "\x00"
	}
	return uuid.NewSHA1(idNamespace, []byte(name)).String()
}

func (s *Service) encode(stream string, evs []events.Event, md events.Metadata) ([]eventstore.EventData, error) {
	now := s.opts.Now().UTC()
	out := make([]eventstore.EventData, len(evs))
	for i, e := range evs {
		name, schemaVersion, data, err := s.codec.Encode(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", e.EventType(), err)
		}
		id := uuid.Must(uuid.NewV7()).String()
		if md.IdempotencyKey != "" {
			id = derivedID("event", md.IdempotencyKey, stream, fmt.Sprint(i))
		}
		out[i] = eventstore.EventData{ID: id, Type: name, SchemaVersion: schemaVersion, Data: data, Metadata: md, OccurredAt: now}
	}
	return out, nil
}

// newAggregateID returns the id of an aggregate a command creates: derived from the idempotency key
// when there is one, so that a retry creates nothing new, otherwise a fresh time-ordered UUID.
func newAggregateID(aggregate string, md events.Metadata) string {
	if md.IdempotencyKey != "" {
		return derivedID(aggregate, md.IdempotencyKey)
	}
	return uuid.Must(uuid.NewV7()).String()
}

// streamLocks serialises commands on one stream within this process, so that concurrent requests
// for a hot aggregate queue instead of failing each other's version checks.
type streamLocks struct {
	mu    sync.Mutex
	locks map[string]*streamLock
}

type streamLock struct {
	ch   chan struct{} // holds one token while the lock is taken
	refs int
}

func (l *streamLocks) lock(ctx context.Context, stream string) (unlock func(), err error) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*streamLock{}
	}
	sl, ok := l.locks[stream]
	if !ok {
		sl = &streamLock{ch: make(chan struct{}, 1)}
		l.locks[stream] = sl
	}
	sl.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		sl.refs--
		if sl.refs == 0 {
			delete(l.locks, stream)
		}
		l.mu.Unlock()
	}
	select {
	case sl.ch <- struct{}{}:
		return func() { <-sl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
