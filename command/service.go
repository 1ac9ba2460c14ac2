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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store: store, codec: codec, skus: skus, opts: opts, log: opts.Logger,
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_command_appends_total", Help: "Commands that appended events, by aggregate type.",
		}, []string{"aggregate"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_command_version_conflicts_total", Help: "Appends refused because the stream moved on; retried unless If-Match was given.",
		}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.appends, s.conflicts)
	}
	return s
}

// decision turns a stream's history into the events a command appends.
type decision func(history []events.Event) ([]events.Event, error)

// execute runs a command on one stream: load, decide, append with the loaded version. A lost race
// is retried from a fresh load, up to MaxAttempts, unless the request pinned the version with
// If-Match. Commands on one stream from this process queue on a lock instead of racing. creates says
// whether the command may start the stream, which decides between 404 and 412 when If-Match names a
// version of a stream that does not exist.
func (s *Service) execute(ctx context.Context, aggregate, id string, req Request, creates bool, decide decision) (Result, error) {
	stream := events.StreamName(aggregate, id)
	unlock, err := s.locks.lock(ctx, stream)
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	retry := backoff.New(2*time.Millisecond, 100*time.Millisecond)
	for attempt := 1; ; attempt++ {
		history, records, err := s.load(ctx, stream)
		if err != nil {
			return Result{}, err
		}
		version := uint64(len(history))
		res := Result{ID: id, Stream: stream, Version: version}

		// A retry of a command that already committed (its reply was lost, or this process crashed
		// before recording it) finds its own events in the history: answer as the first time.
		if key := req.Metadata.IdempotencyKey; key != "" {
			if v, ok := lastVersionWithKey(records, key); ok {
				res.Version = v
				return res, nil
			}
		}
		if req.IfMatch != nil && *req.IfMatch != version {
			if version == 0 && !creates {
				// RFC 9110 13.2.1: a precondition is not evaluated when the request would fail without
				// it for another reason than the precondition; an unknown id is 404.
				return Result{}, fmt.Errorf("%s: %w", stream, domain.ErrNotFound)
			}
			return Result{}, fmt.Errorf("%s is at version %d, not %d: %w", stream, version, *req.IfMatch,
				errors.Join(problem.ErrPreconditionFailed, &eventstore.ConflictError{Stream: stream, Expected: eventstore.Exact(*req.IfMatch), Actual: version}))
		}
		evs, err := decide(history)
		if err != nil {
			return Result{}, err
		}
		if len(evs) == 0 {
			return res, nil // nothing to change: the command is already in effect
		}
		data, err := s.encode(stream, evs, req.Metadata)
		if err != nil {
			return Result{}, err
		}
		appended, err := s.store.Append(ctx, stream, eventstore.Exact(version), data)
		if err == nil {
			if !appended.Duplicate { // a concurrent twin of this command appended these very events
				s.appends.WithLabelValues(aggregate).Inc()
			}
			res.Version = appended.LastVersion
			return res, nil
		}
		if !errors.Is(err, eventstore.ErrConflict) {
			return Result{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		s.conflicts.Inc()
		if req.IfMatch != nil {
			return Result{}, fmt.Errorf("%s changed concurrently: %w", stream, errors.Join(problem.ErrPreconditionFailed, err))
		}
		if attempt >= s.opts.MaxAttempts {
			return Result{}, fmt.Errorf("%s: gave up after %d concurrent modifications: %w", stream, attempt, err)
		}
		if err := retry.Wait(ctx); err != nil {
			return Result{}, err
		}
	}
}

// load reads a whole stream and decodes it.
func (s *Service) load(ctx context.Context, stream string) ([]events.Event, []eventstore.RecordedEvent, error) {
	const page = 1024
	var records []eventstore.RecordedEvent
	for {
		batch, err := s.store.ReadStream(ctx, stream, uint64(len(records))+1, page)
		if err != nil {
			return nil, nil, fmt.Errorf("load %s: %w", stream, err)
		}
		records = append(records, batch...)
		if len(batch) < page {
			break
		}
	}
	history := make([]events.Event, len(records))
	for i, r := range records {
		e, err := s.codec.Decode(r.Type, r.SchemaVersion, r.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("load %s: event %d: %w", stream, r.Version, err)
		}
		history[i] = e
	}
	return history, records, nil
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
