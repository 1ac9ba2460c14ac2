// Package relay forwards every event committed to the event store to NATS JetStream. It is strata's
// only publisher: the command service appends and nothing else.
//
// The relay tails the store's global log and publishes each event on
// <prefix>.<aggregate type>.<aggregate id> with Nats-Msg-Id set to the event id, many at a time
// (asynchronously, within a bounded window), and advances its checkpoint only past events whose
// publish JetStream acknowledged, in order.
//
// Order is kept by construction: every message carries Nats-Expected-Last-Sequence, the stream
// sequence its predecessor was stored at, so JetStream refuses a message whose predecessor was lost
// (say, in a connection that broke with both in flight) instead of storing it out of order. The relay
// then starts over from the stream's last message, whose position header says exactly how far
// JetStream got: a restart never depends on the checkpoint being current, and republishes nothing that
// is stored. A message sent twice (the in-flight window replayed after a crash) is either answered as
// a duplicate of its Nats-Msg-Id or refused for its expected sequence, which only makes the relay start
// over again.
//
// The expected last sequence, not Nats-Expected-Last-Msg-Id, is what makes this safe on a cluster: a
// clustered stream leader checks the expected sequence before it proposes a message, but the expected
// last message id only when the replicas apply it, where a mismatch is a write error that stops the
// stream on every replica (nats-server 2.15.2).
//
// Several relays may run; a PostgreSQL advisory lock makes one of them the leader, and the others
// wait. Should two publish at once (a leader that lost its lock and has not noticed yet), the expected
// last sequence lets only one chain of messages advance.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/backoff"
	"github.com/strata-dev/strata/migrations"
)

// Config tunes a [Relay]. Stream and SubjectPrefix are required.
type Config struct {
	// Name identifies the relay's checkpoint and leader lock. Default "relay".
	Name string
	// Stream is the JetStream stream events are published to (it must exist; see broker.EnsureStream).
	Stream string
	// SubjectPrefix: events go to <prefix>.<aggregate type>.<aggregate id>.
	SubjectPrefix string
	// MaxInFlight bounds the publishes awaiting an ack. Default 4096.
	MaxInFlight int
	// AckTimeout is how long a publish may wait for its ack before the relay starts over. Default 10s.
	AckTimeout time.Duration
	// CheckpointInterval is how often the acknowledged position is saved. Default 250ms.
	CheckpointInterval time.Duration
	// StandbyPoll is how often a relay that is not the leader tries to become it. Default 2s.
	StandbyPoll time.Duration
	// LagInterval is how often lag is measured. Default 2s.
	LagInterval time.Duration
}

// Relay forwards events from an event store to JetStream.
type Relay struct {
	store eventstore.Store
	pool  *pgxpool.Pool
	nc    *nats.Conn
	cfg   Config
	log   *slog.Logger
	m     *metrics

	mu    sync.Mutex
	acked eventstore.RecordedEvent // the last event acknowledged in order
}

// Migrate creates the relay's checkpoint table in the database behind pool.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrations.Apply(ctx, pool, migrations.Relay)
}

// New returns a relay from store to the JetStream behind nc, keeping its checkpoint and leader lock
// in the database behind pool. reg, if not nil, receives its metrics.
func New(store eventstore.Store, pool *pgxpool.Pool, nc *nats.Conn, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	if cfg.Stream == "" || cfg.SubjectPrefix == "" {
		return nil, errors.New("relay: stream and subject prefix are required")
	}
	if cfg.Name == "" {
		cfg.Name = "relay"
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 250 * time.Millisecond
	}
	if cfg.StandbyPoll <= 0 {
		cfg.StandbyPoll = 2 * time.Second
	}
	if cfg.LagInterval <= 0 {
		cfg.LagInterval = 2 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{store: store, pool: pool, nc: nc, cfg: cfg, log: log.With("component", "relay", "relay", cfg.Name), m: newMetrics(reg)}, nil
}

// Run relays until ctx ends. It waits to become the leader, then publishes; after any failure it
// starts over from what JetStream holds, with capped backoff. It returns nil when ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		started := time.Now()
		err := r.lead(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(started) > time.Minute {
			retry.Reset()
		}
		r.m.restarts.Inc()
		r.log.Warn("relay interrupted; starting over from JetStream's last message", "err", err)
		if retry.Wait(ctx) != nil {
			break
		}
	}
	r.log.Info("relay stopped")
	return nil
}

// lead holds the leader lock while publishing, and returns why publishing stopped.
func (r *Relay) lead(ctx context.Context) error {
	lock, err := r.acquire(ctx)
	if err != nil {
		return err
	}
	defer lock.release()
	r.m.leader.Set(1)
	defer r.m.leader.Set(0)
	return r.publish(lock.ctx)
}

type pending struct {
	ack jetstream.PubAckFuture
	e   eventstore.RecordedEvent
}

// publish relays from JetStream's last message until ctx ends or a publish fails.
func (r *Relay) publish(ctx context.Context) error {
	js, err := jetstream.New(r.nc,
		jetstream.WithPublishAsyncMaxPending(r.cfg.MaxInFlight+16),
		jetstream.WithPublishAsyncTimeout(r.cfg.AckTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	defer js.CleanupPublisher()
	stream, err := js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", r.cfg.Stream, err)
	}
	from, prevID, lastSeq, err := r.resumePoint(ctx, stream)
	if err != nil {
		return err
	}
	r.log.Info("relaying", "stream", r.cfg.Stream, "position", from.String())
	r.mu.Lock()
	if r.acked.Position.Less(from) {
		r.acked = eventstore.RecordedEvent{ID: prevID, Position: from}
	}
	r.mu.Unlock()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	inflight := make(chan pending, r.cfg.MaxInFlight)
	var wg sync.WaitGroup
	wg.Go(func() { r.trackAcks(ctx, cancel, inflight) })
	wg.Go(func() { r.saveCheckpoints(ctx) })
	wg.Go(func() { r.measureLag(ctx) })

	err = r.store.Subscribe(ctx, from, func(ctx context.Context, e eventstore.RecordedEvent) error {
		ack, err := js.PublishMsgAsync(Message(r.cfg.SubjectPrefix, e), jetstream.WithExpectLastSequence(lastSeq))
		if err != nil {
			return fmt.Errorf("publish %s: %w", e.ID, err)
		}
		select {
		case inflight <- pending{ack: ack, e: e}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		lastSeq++
		return nil
	})
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // a failed publish stopped the subscription; report that, not the cancellation
	}
	cancel(err)
	wg.Wait()
	if serr := r.saveCheckpoint(context.WithoutCancel(ctx)); serr != nil {
		r.log.Warn("save checkpoint", "err", serr)
	}
	return err
}

// trackAcks takes acknowledgements in publish order and advances the acknowledged position. The
// first failure cancels publishing: what comes after it cannot be trusted to be in order.
func (r *Relay) trackAcks(ctx context.Context, cancel context.CancelCauseFunc, inflight <-chan pending) {
	for {
		var p pending
		select {
		case <-ctx.Done():
			return
		case p = <-inflight:
		}
		select {
		case <-ctx.Done():
			return
		case <-p.ack.Ok():
			r.mu.Lock()
			r.acked = p.e
			r.mu.Unlock()
			r.m.published.Inc()
			if !p.e.RecordedAt.IsZero() {
				r.m.delay.Observe(time.Since(p.e.RecordedAt).Seconds())
			}
		case err := <-p.ack.Err():
			r.m.errors.Inc()
			cancel(fmt.Errorf("publish %s (position %s): %w", p.e.ID, p.e.Position, err))
			return
		}
	}
}

// resumePoint returns the position to relay from, and the id and sequence of the last message in the
// stream. JetStream's own last message is authoritative: the relay publishes in order, so everything
// before it is stored. Only an empty stream (new, or emptied by retention) falls back to the
// checkpoint; its last sequence is still the one the next message must follow.
func (r *Relay) resumePoint(ctx context.Context, stream jetstream.Stream) (events.Position, string, uint64, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return events.Position{}, "", 0, fmt.Errorf("stream %s info: %w", r.cfg.Stream, err)
	}
	if info.State.Msgs > 0 {
		msg, err := stream.GetMsg(ctx, info.State.LastSeq)
		if err != nil {
			return events.Position{}, "", 0, fmt.Errorf("read last message of %s: %w", r.cfg.Stream, err)
		}
		pos, err := events.ParsePosition(msg.Header.Get(HeaderPosition))
		if err != nil {
			return events.Position{}, "", 0, fmt.Errorf("last message of %s (sequence %d) was not published by a relay: %w", r.cfg.Stream, msg.Sequence, err)
		}
		return pos, msg.Header.Get(nats.MsgIdHdr), msg.Sequence, nil
	}
	pos, err := r.loadCheckpoint(ctx)
	return pos, "", info.State.LastSeq, err
}

func (r *Relay) loadCheckpoint(ctx context.Context) (events.Position, error) {
	var commit, prepare int64
	err := r.pool.QueryRow(ctx, `SELECT commit_position, prepare_position FROM relay_checkpoints WHERE name = $1`, r.cfg.Name).
		Scan(&commit, &prepare)
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Start, nil
	}
	if err != nil {
		return events.Position{}, fmt.Errorf("load relay checkpoint: %w", err)
	}
	return events.Position{Commit: uint64(commit), Prepare: uint64(prepare)}, nil
}

// Checkpoint returns the saved checkpoint: the position of the last event whose publish was
// acknowledged in order, as of the last save.
func (r *Relay) Checkpoint(ctx context.Context) (events.Position, error) {
	return r.loadCheckpoint(ctx)
}

func (r *Relay) saveCheckpoints(ctx context.Context) {
	t := time.NewTicker(r.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.saveCheckpoint(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("save checkpoint", "err", err)
			}
		}
	}
}

func (r *Relay) saveCheckpoint(ctx context.Context) error {
	r.mu.Lock()
	e := r.acked
	r.mu.Unlock()
	if e.ID == "" {
		return nil
	}
	_, err := r.pool.Exec(ctx,
		`INSERT INTO relay_checkpoints (name, commit_position, prepare_position, event_id) VALUES ($1, $2, $3, $4)
		 ON CONFLICT (name) DO UPDATE SET commit_position = excluded.commit_position,
		   prepare_position = excluded.prepare_position, event_id = excluded.event_id, updated_at = now()
		 WHERE (relay_checkpoints.commit_position, relay_checkpoints.prepare_position) < (excluded.commit_position, excluded.prepare_position)`,
		r.cfg.Name, int64(e.Position.Commit), int64(e.Position.Prepare), e.ID)
	if err != nil {
		return fmt.Errorf("save relay checkpoint: %w", err)
	}
	return nil
}
