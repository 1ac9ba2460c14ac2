// Package projector runs projections: it consumes events from NATS JetStream and applies them to read
// models, exactly once in effect and in stream order.
//
// Each projection has one durable JetStream consumer per partition (the events stream stores
// <prefix>.<partition>.<type>.<id>, see broker.StreamConfig.Partitions). A partition is owned by one
// process at a time through a PostgreSQL advisory lock, so several projector processes share the work;
// within a partition messages are applied in order, so every stream's order is kept.
//
// Messages are applied in batches: one transaction applies every statement of the batch, records
// each stream's version in projection_streams (the query service's consistency check; one statement
// for the whole batch) and moves the partition's checkpoint, all in one round trip (a pgx.Batch runs
// in an implicit transaction) unless the partition has parked events. After the commit the
// projector acknowledges the messages and notifies the query service (outside the transaction and
// coalesced across partitions, see [Runner.notifier]). Projections whose read model lives elsewhere
// ([External]) write it before the commit, idempotently. Read-model statements carry their own version guard
// (WHERE version < $version, ON CONFLICT DO NOTHING), so a redelivered batch changes nothing.
//
// A batch that fails is applied again one event at a time to find the culprit, which is retried with
// capped exponential backoff and then parked in dead_letters. Later events of a parked stream are
// parked behind it ("waiting"), other streams carry on. Retry and Skip release a stream.
package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/backoff"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/pglock"
	"github.com/strata-dev/strata/relay"
)

// Projection turns events into read-model statements.
type Projection interface {
	// Name identifies the projection in projection_streams, checkpoints, dead letters and durable
	// consumer names.
	Name() string
	// AggregateTypes are the aggregate types whose streams the projection consumes.
	AggregateTypes() []string
	// Apply queues on b the statements that apply e. It performs no I/O. Every statement must be
	// idempotent for the event's version (a version guard, or ON CONFLICT DO NOTHING). An error
	// means the event cannot be applied (poison).
	Apply(b *pgx.Batch, e events.Envelope) error
}

// BatchProjection is a projection that can apply many events at once, typically with set-based
// statements (one UPDATE … FROM unnest(…) for many streams) where Apply queues a statement per
// event: on a backlog, statements rather than commits are what a projection's database spends its
// time on. ApplyBatch must have the effect of Apply on each event in order; the runner calls it
// for every batch, and Apply alone when it applies a single event.
type BatchProjection interface {
	Projection
	ApplyBatch(b *pgx.Batch, evs []events.Envelope) error
}

// External is a projection whose read model lives outside PostgreSQL (Elasticsearch). Besides the
// statements of Apply (often none), the runner calls Write with the events a batch applies, in
// order, inside the batch's transaction and before its commit: the stream versions and the
// checkpoint are committed only after the external store accepted the events. A crash between Write
// and the commit delivers the events again, so Write must be idempotent per event version
// (Elasticsearch's external versioning). An error fails the batch like a failed statement: the
// events are retried one at a time and a poison event is parked.
type External interface {
	Projection
	// Backend names the external store, for operators ("elasticsearch").
	Backend() string
	Write(ctx context.Context, evs []events.Envelope) error
}

// ErrUnavailable marks a failure of the read model's store rather than of an event: a cluster that
// is down or overloaded. Projections wrap it around such errors (search/elasticsearch does); the
// runner then retries the event, with capped backoff, for as long as it takes, instead of parking
// it as poison: an outage must not fill the dead-letter store.
var ErrUnavailable = errors.New("read-model store unavailable")

// Config tunes a [Runner]. Stream and SubjectPrefix are required.
type Config struct {
	Stream        string
	SubjectPrefix string
	// Partitions must equal the events stream's (broker.StreamConfig.Partitions); 0 means the stream
	// is not partitioned and one consumer takes everything.
	Partitions int
	// MaxPartitions caps how many partitions this process owns; default all. With two processes and
	// half each, they share the work.
	MaxPartitions int
	// BatchSize is the most events applied per transaction. Default 512.
	BatchSize int
	// BatchWait bounds how long a batch waits for more events before it is applied. Default 2ms.
	BatchWait time.Duration
	// BatchGap is how long a batch waits for its next event: when none comes within it, the batch is
	// applied at once. Default 200µs: under load events arrive closer than that and batches fill up,
	// while a lone event is applied without waiting out BatchWait.
	BatchGap time.Duration
	// MaxAttempts is how often an event is tried before it is parked. Default 5.
	MaxAttempts int
	// RetryMin and RetryMax bound the backoff between attempts. Defaults 50ms and 5s.
	RetryMin, RetryMax time.Duration
	// ClaimPoll is how often an unowned partition is tried. Default 2s.
	ClaimPoll time.Duration
}

// Runner runs one projection.
type Runner struct {
	pool  *pgxpool.Pool
	nc    *nats.Conn
	codec *events.Codec
	proj  Projection
	cfg   Config
	log   *slog.Logger
	m     *metrics
	// notifyReq holds at most one pending notification for [Runner.notifier].
	notifyReq chan struct{}
	// announced collects the stream versions committed since the last notification; reset makes the
	// next notification the projection's name alone (see [Runner.announceTakeover] and [maxAnnounced]).
	announceMu sync.Mutex
	announced  map[string]uint64
	reset      bool
}

// NewRunner returns a runner of proj. reg, if not nil, receives its metrics.
func NewRunner(pool *pgxpool.Pool, nc *nats.Conn, codec *events.Codec, proj Projection, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Runner, error) {
	if cfg.Stream == "" || cfg.SubjectPrefix == "" {
		return nil, errors.New("projector: stream and subject prefix are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 2 * time.Millisecond
	}
	if cfg.BatchGap <= 0 {
		cfg.BatchGap = 200 * time.Microsecond
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 50 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	if cfg.ClaimPoll <= 0 {
		cfg.ClaimPoll = 2 * time.Second
	}
	partitions := max(cfg.Partitions, 1)
	if cfg.MaxPartitions <= 0 || cfg.MaxPartitions > partitions {
		cfg.MaxPartitions = partitions
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{pool: pool, nc: nc, codec: codec, proj: proj, cfg: cfg, notifyReq: make(chan struct{}, 1),
		log: log.With("component", "projector", "projection", proj.Name()), m: newMetrics(reg, proj.Name())}, nil
}

// Run runs the projection until ctx ends: it claims up to MaxPartitions partitions and consumes each.
// All of its partition locks live on one dedicated connection; if that connection fails, every
// partition stops and is claimed again on a new one. It returns nil when ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	js, err := jetstream.New(r.nc)
	if err != nil {
		return fmt.Errorf("projector %s: %w", r.proj.Name(), err)
	}
	var notifying sync.WaitGroup
	nctx, stopNotifying := context.WithCancel(ctx)
	notifying.Go(func() { r.notifier(nctx) })
	defer func() {
		stopNotifying()
		notifying.Wait()
		// The partitions have stopped: announce their last commits, which the query service would
		// otherwise only learn of from its recheck.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := r.sendNotification(fctx); err != nil {
			r.log.Debug("last notification failed", "err", err)
		}
	}()
	retry := backoff.New(r.cfg.RetryMin, r.cfg.RetryMax)
	for ctx.Err() == nil {
		started := time.Now()
		err := r.session(ctx, js)
		if ctx.Err() != nil {
			break
		}
		if time.Since(started) > time.Minute { // a session that ran a while starts the backoff over, as the relay's
			retry.Reset()
		}
		r.log.Warn("lock session lost; claiming partitions again", "err", err)
		if retry.Wait(ctx) != nil {
			break
		}
	}
	return nil
}

// locks is the connection that holds a runner's partition locks. pgx connections are not safe for
// concurrent use, so turn is held by whoever uses it. It is a channel rather than a mutex so that
// waiting for a turn ends with the context: when a statement hangs on the connection (a network
// path that drops packets), the watchdog's ping gives up after its timeout and ends the session,
// instead of waiting behind that statement for ever while the partitions keep being applied.
type locks struct {
	conn *pgx.Conn
	turn chan struct{}
}

func newLocks(conn *pgx.Conn) *locks {
	return &locks{conn: conn, turn: make(chan struct{}, 1)}
}

// use runs f while holding the connection, or fails when ctx ends first.
func (l *locks) use(ctx context.Context, f func() error) error {
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("lock connection busy: %w", ctx.Err())
	}
	defer func() { <-l.turn }()
	return f()
}

func (l *locks) tryLock(ctx context.Context, key string) (id int64, got bool, err error) {
	err = l.use(ctx, func() (err error) {
		id, got, err = pglock.TryLock(ctx, l.conn, key)
		return err
	})
	return id, got, err
}

func (l *locks) unlock(ctx context.Context, id int64) error {
	return l.use(ctx, func() error { return pglock.Unlock(ctx, l.conn, id) })
}

func (l *locks) ping(ctx context.Context) error {
	return l.use(ctx, func() error { return l.conn.Ping(ctx) })
}

// session claims and consumes partitions on one lock connection until it fails or ctx ends.
func (r *Runner) session(ctx context.Context, js jetstream.JetStream) error {
	pooled, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	l := newLocks(pooled.Hijack()) // its session owns the locks: it must never be shared
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = l.conn.Close(cctx) // closing the session releases every lock it holds
	}()
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	owned := make(chan struct{}, r.cfg.MaxPartitions)
	var wg sync.WaitGroup
	for p := range max(r.cfg.Partitions, 1) {
		wg.Go(func() { r.runPartition(sctx, js, l, p, owned) })
	}
	if err := pglock.Watch(sctx, l.ping); err != nil {
		cancel(fmt.Errorf("lock connection: %w", err))
	}
	wg.Wait()
	return context.Cause(sctx)
}

// runPartition owns partition p whenever it can, and consumes it while it does.
func (r *Runner) runPartition(ctx context.Context, js jetstream.JetStream, l *locks, p int, owned chan struct{}) {
	retry := backoff.New(r.cfg.RetryMin, r.cfg.RetryMax)
	for ctx.Err() == nil {
		select {
		case owned <- struct{}{}:
		case <-ctx.Done():
			return
		}
		err := r.own(ctx, js, l, p)
		<-owned
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.log.Warn("partition interrupted; resuming", "partition", p, "err", err)
			if retry.Wait(ctx) != nil {
				return
			}
			continue
		}
		retry.Reset()
	}
}

// own takes partition p's lock and consumes the partition while holding it. When another process
// holds the lock it waits ClaimPoll and returns nil.
func (r *Runner) own(ctx context.Context, js jetstream.JetStream, l *locks, p int) error {
	key := fmt.Sprintf("strata.projector:%s/%d", r.proj.Name(), p)
	id, got, err := l.tryLock(ctx, key)
	if err != nil {
		return err
	}
	if !got {
		select {
		case <-ctx.Done():
		case <-time.After(r.cfg.ClaimPoll):
		}
		return nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		_ = l.unlock(uctx, id)
	}()
	r.log.Info("consuming partition", "partition", p)
	r.announceTakeover()
	r.m.partitions.Inc()
	defer r.m.partitions.Dec()
	return r.consume(ctx, js, p)
}

// ConsumerName is the durable JetStream consumer of projection's partition.
func ConsumerName(projection string, partition int) string {
	return fmt.Sprintf("%s-p%d", projection, partition)
}

// FilterSubjects are the subjects of the events stream that proj's partition p consumes, given the
// stream's SubjectPrefix and Partitions in cfg.
func FilterSubjects(cfg Config, proj Projection, p int) []string {
	var filters []string
	for _, t := range proj.AggregateTypes() {
		if cfg.Partitions > 0 {
			filters = append(filters, fmt.Sprintf("%s.%d.%s.*", cfg.SubjectPrefix, p, t))
		} else {
			filters = append(filters, fmt.Sprintf("%s.%s.>", cfg.SubjectPrefix, t))
		}
	}
	return filters
}

func (r *Runner) consumerConfig(p int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ConsumerName(r.proj.Name(), p),
		Description:    fmt.Sprintf("strata projection %s, partition %d", r.proj.Name(), p),
		FilterSubjects: FilterSubjects(r.cfg, r.proj, p),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        time.Minute,
		MaxDeliver:     -1,
		MaxAckPending:  max(4*r.cfg.BatchSize, 4096),
		// The checkpoint in PostgreSQL, not the consumer's state, says where a partition resumes (see
		// resumeConsumer), so the consumer need not persist its acks: a file-backed consumer rewrites its
		// state file up to ten times a second, which cost the embedded server a tenth of strata dev's CPU
		// at 1,000 commands/s. A consumer lost with a server restart is recreated at the checkpoint.
		MemoryStorage: true,
	}
}

// partition is the state of a partition this runner owns.
type partition struct {
	n int
	// mayBlock is false while no stream of the partition can have a parked event, which spares each
	// batch the dead-letter lookup and its own transaction (see [Runner.commitTx]). Only the
	// partition's owner parks events of its streams, and Retry and Skip only remove them, so once
	// dead_letters holds nothing of the projection, nothing of this partition appears there until
	// this runner parks something itself.
	mayBlock  bool
	checkedAt time.Time
}

// recheckBlocked is how often a partition that has parked events looks whether they are all gone.
const recheckBlocked = 10 * time.Second

// checkBlocked refreshes part.mayBlock from dead_letters, at most every recheckBlocked.
func (r *Runner) checkBlocked(ctx context.Context, part *partition) error {
	if !part.mayBlock || time.Since(part.checkedAt) < recheckBlocked {
		return nil
	}
	err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM dead_letters WHERE projection = $1)`, r.proj.Name()).Scan(&part.mayBlock)
	if err != nil {
		return fmt.Errorf("check dead letters: %w", err)
	}
	part.checkedAt = time.Now()
	return nil
}

// consume applies partition p's messages in batches until ctx ends or something fails.
func (r *Runner) consume(ctx context.Context, js jetstream.JetStream, p int) error {
	part := &partition{n: p, mayBlock: true}
	if err := r.checkBlocked(ctx, part); err != nil {
		return err
	}
	cons, err := r.resumeConsumer(ctx, js, p)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * r.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer it.Stop()
	for {
		first, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		batch := []jetstream.Msg{first}
		// BatchWait bounds the wait for the whole batch, not for each message: waiting up to
		// BatchWait after every message would hold a batch for up to BatchSize × BatchWait while
		// messages trickle in just under BatchWait apart.
		deadline := time.Now().Add(r.cfg.BatchWait)
		for len(batch) < r.cfg.BatchSize {
			wait := time.Until(deadline)
			if wait <= 0 {
				break
			}
			m, err := it.Next(jetstream.NextMaxWait(min(wait, r.cfg.BatchGap)))
			if err != nil {
				break // nothing more right now: apply what we have
			}
			batch = append(batch, m)
		}
		if err := r.applyBatch(ctx, part, batch); err != nil {
			return err
		}
		// AckAll: acknowledging the last message acknowledges the batch. Not waiting for the
		// server's confirmation saves a round trip per batch: a lost ack is covered by the next
		// batch's, or redelivers events the version guards make harmless, and a new owner of the
		// partition starts from the checkpoint anyway (see resumeConsumer).
		if err := batch[len(batch)-1].Ack(); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
}

// resumeConsumer returns partition p's durable consumer, positioned right after the partition's
// checkpoint. The checkpoint is written in the same transaction as the read model, so it, not the
// consumer's ack floor, says what was applied: messages a previous owner pulled but never applied
// stay pending in JetStream, and with ack-all the next owner's first ack would acknowledge them
// unapplied. So unless the consumer agrees exactly with the checkpoint and has nothing pending, it is
// recreated to start after the checkpoint. So is a consumer created with file storage by an earlier
// version.
func (r *Runner) resumeConsumer(ctx context.Context, js jetstream.JetStream, p int) (jetstream.Consumer, error) {
	cfg := r.consumerConfig(p)
	var checkpoint int64
	var position string
	err := r.pool.QueryRow(ctx, `SELECT stream_sequence, position FROM projection_checkpoints WHERE projection = $1 AND partition = $2`,
		r.proj.Name(), p).Scan(&checkpoint, &position)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if checkpoint > 0 {
		start, err := r.startAfter(ctx, js, p, uint64(checkpoint), position)
		if err != nil {
			return nil, err
		}
		if start != uint64(checkpoint)+1 {
			// The stream numbers its messages afresh (recreated) or dropped the checkpoint's
			// (expired): the checkpoint moves into its numbering, or the batches' commits, which
			// only ever raise it, would leave it behind until the stream outgrew the old sequence,
			// and every resume meanwhile would replay everything since.
			if _, err := r.pool.Exec(ctx, `UPDATE projection_checkpoints SET stream_sequence = $3, updated_at = now()
				WHERE projection = $1 AND partition = $2 AND stream_sequence = $4`, r.proj.Name(), p, int64(start)-1, checkpoint); err != nil {
				return nil, fmt.Errorf("move checkpoint into the stream's numbering: %w", err)
			}
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
	}
	if cons, err := js.Consumer(ctx, r.cfg.Stream, cfg.Durable); err == nil {
		info := cons.CachedInfo() // fetched just now by js.Consumer
		if info.NumAckPending == 0 && info.AckFloor.Stream+1 == max(cfg.OptStartSeq, 1) && info.Config.MemoryStorage == cfg.MemoryStorage {
			return cons, nil
		}
		if err := js.DeleteConsumer(ctx, r.cfg.Stream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("reset consumer to the checkpoint: %w", err)
		}
	}
	return js.CreateConsumer(ctx, r.cfg.Stream, cfg)
}

// startAfter returns the stream sequence partition p resumes at, given its checkpoint: the stream
// sequence and the event store position of the last message it applied. Normally that is the next
// sequence. But sequences are only meaningful in the stream that numbered them: when the events
// stream was deleted and created again (the relay then goes on publishing from its own checkpoint),
// the message at that sequence is another event or none at all, and resuming there would skip or
// repeat events. So the message at the checkpoint must carry the checkpoint's position; otherwise
// the partition resumes at the stream's first message after that position, found by bisection, as
// the relay publishes in position order.
func (r *Runner) startAfter(ctx context.Context, js jetstream.JetStream, p int, checkpoint uint64, position string) (uint64, error) {
	want, err := events.ParsePosition(position)
	if err != nil || want == (events.Position{}) {
		// No position to check against (the batch ended with an undecodable message, whose
		// position is unknown): trust the sequence.
		return checkpoint + 1, nil
	}
	stream, err := js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("stream: %w", err)
	}
	positionAt := func(seq uint64) (events.Position, error) {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			return events.Position{}, fmt.Errorf("read message %d: %w", seq, err)
		}
		return events.ParsePosition(m.Header.Get(relay.HeaderPosition))
	}
	if got, err := positionAt(checkpoint); err == nil && got == want {
		return checkpoint + 1, nil
	}
	st := stream.CachedInfo().State
	if st.Msgs == 0 {
		return st.LastSeq + 1, nil // nothing stored: what comes next is new
	}
	// The first sequence in [FirstSeq, LastSeq+1) whose message lies after the checkpoint.
	lo, hi := st.FirstSeq, st.LastSeq+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		at, err := positionAt(mid)
		if err != nil {
			return 0, err
		}
		if want.Less(at) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	r.log.Warn("the events stream does not hold the partition's checkpoint (recreated, or expired past it); resuming at the first event after the checkpoint's position",
		"partition", p, "checkpoint_sequence", checkpoint, "checkpoint_position", position, "resume_sequence", lo)
	return lo, nil
}

// item is a message decoded for applying; err is set when it cannot be decoded (poison).
type item struct {
	msg jetstream.Msg
	rec eventstore.RecordedEvent
	env events.Envelope
	err error
}

func (r *Runner) decode(m jetstream.Msg) item {
	it := item{msg: m}
	it.rec, it.err = relay.Decode(m.Headers(), m.Data())
	if it.err != nil {
		return it
	}
	e, err := r.codec.Decode(it.rec.Type, it.rec.SchemaVersion, it.rec.Data)
	if err != nil {
		it.err = fmt.Errorf("decode %s %s: %w", it.rec.Type, it.rec.ID, err)
		return it
	}
	it.env = envelope(it.rec, e)
	return it
}

// envelope is rec with its decoded payload e.
func envelope(rec eventstore.RecordedEvent, e events.Event) events.Envelope {
	return events.Envelope{ID: rec.ID, Stream: rec.Stream, Version: rec.Version, Position: rec.Position, Type: rec.Type,
		SchemaVersion: rec.SchemaVersion, OccurredAt: rec.OccurredAt, Metadata: rec.Metadata, Event: e}
}

// applyBatch applies msgs in one transaction, or, if that fails, one at a time with retries and
// parking. It returns an error only when the database is unusable and ctx ended.
func (r *Runner) applyBatch(ctx context.Context, p *partition, msgs []jetstream.Msg) error {
	items := make([]item, len(msgs))
	for i, m := range msgs {
		items[i] = r.decode(m)
	}
	start := time.Now()
	err := r.commit(ctx, p, items, false)
	if err == nil {
		r.m.observeBatch(len(items), time.Since(start))
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.log.Warn("batch failed; applying one event at a time", "partition", p.n, "events", len(items), "err", err)
	for i := range items {
		if err := r.applyOne(ctx, p, items[i:i+1]); err != nil {
			return err
		}
	}
	return nil
}

// applyOne applies a single event with retries, and parks it when they run out. Failures of an
// unavailable store ([ErrUnavailable], a lost PostgreSQL connection) do not count as attempts.
func (r *Runner) applyOne(ctx context.Context, p *partition, one []item) error {
	retry := backoff.New(r.cfg.RetryMin, r.cfg.RetryMax)
	var err error
	waiting := false
	for attempt := 1; attempt <= r.cfg.MaxAttempts; attempt++ {
		if one[0].err != nil {
			err = one[0].err // undecodable: retrying cannot help
			break
		}
		if err = r.commit(ctx, p, one, false); err == nil {
			if waiting {
				r.log.Info("read-model store available again", "partition", p.n)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.m.retries.Inc()
		if r.outage(ctx, err) {
			if !waiting {
				r.log.Warn("read-model store unavailable; retrying until it is back", "partition", p.n, "err", err)
				waiting = true
			}
			attempt-- // not the event's fault
		}
		if attempt < r.cfg.MaxAttempts {
			if werr := retry.Wait(ctx); werr != nil {
				return werr
			}
		}
	}
	one[0].err = err
	r.log.Error("parking event in the dead-letter store", "stream", one[0].rec.Stream, "event_id", one[0].rec.ID,
		"event_type", one[0].rec.Type, "err", err)
	if perr := r.commit(ctx, p, one, true); perr != nil {
		return fmt.Errorf("park %s: %w", one[0].rec.ID, perr)
	}
	return nil
}

// outage reports whether err is a failure of a store rather than of the event, which then does not
// count as an attempt: the projection says so ([ErrUnavailable]), or PostgreSQL was lost (see
// [lostDatabase]) and cannot be reached now. A statement can break its own connection every time (a
// backend crash, an out-of-memory kill), so a database that answers again at once does not excuse
// the attempt: such an event is parked like any other poison.
func (r *Runner) outage(ctx context.Context, err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	if !lostDatabase(err) {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.pool.Ping(pctx) != nil
}

// lostDatabase reports whether err says that PostgreSQL cannot be reached, went away mid-batch (a
// restart, a terminated backend, a broken connection), refuses connections, or is a standby after a
// failover.
func lostDatabase(err error) bool {
	var connect *pgconn.ConnectError
	var network net.Error
	if errors.As(err, &connect) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.As(err, &network) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "57P01", "57P02", "57P03", // admin shutdown (or pg_terminate_backend), crash shutdown, cannot connect now
		"25006", // read-only transaction: connected to a standby
		"53300": // too many connections
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") // connection exception
}

// upsertStreamVersions records the versions a projection has applied of many streams in one
// statement: $2 and $3 are the streams and their versions, each stream at most once (ON CONFLICT DO UPDATE may not touch a row
// twice in one statement).
const upsertStreamVersions = `
	INSERT INTO projection_streams (projection, stream, version)
	SELECT $1, s.stream, s.version FROM unnest($2::text[], $3::bigint[]) AS s(stream, version)
	ON CONFLICT (projection, stream) DO UPDATE SET version = excluded.version
	WHERE projection_streams.version < excluded.version`

// commit runs one transaction over items: events of blocked streams (a parked event earlier in their
// stream) are parked as waiting, the rest applied (or, with park set, parked as failed), and the
// checkpoint moves. After the commit the query service is notified.
func (r *Runner) commit(ctx context.Context, p *partition, items []item, park bool) error {
	applied, err := r.commitTx(ctx, p, items, park)
	if err != nil {
		return err
	}
	r.notify(applied)
	return nil
}

// notify asks the notifier to tell the query service that the projection applied evs. It never
// blocks: requests made while a notification is pending are one, sent after it (see
// [Runner.notifier]).
func (r *Runner) notify(evs []events.Envelope) {
	r.announce(func(yield func(string, uint64) bool) {
		for _, e := range evs {
			if !yield(e.Stream, e.Version) {
				return
			}
		}
	})
	r.requestNotification()
}

// requestNotification asks the notifier for a notification, unless one is pending already.
func (r *Runner) requestNotification() {
	select {
	case r.notifyReq <- struct{}{}:
	default:
	}
}

// announceTakeover makes the next notification the projection's name alone, which tells the query
// service to look its versions up rather than wait for their announcement: the partition just taken
// may have had its last commits made by a process that died before announcing them.
func (r *Runner) announceTakeover() {
	r.announceMu.Lock()
	r.reset = true
	r.announceMu.Unlock()
	r.requestNotification()
}

// notifier sends the notifications [Runner.notify] asks for until ctx ends, one at a time, so
// that however many partitions commit, the query service gets at most one notification in flight
// and one pending per projection, each sent after the commits it announces. It runs outside the
// batches' transactions: PostgreSQL serialises the commits of notifying transactions on a
// database-wide lock held through the commit's WAL flush, so a NOTIFY inside a batch's transaction
// would serialise the commits of every partition and projection, fsync included, and defeat group
// commit. Its own transaction writes nothing worth waiting for, so it commits asynchronously.
//
// The notification carries the stream versions committed since the previous one (see
// consistency.Progress), so that the query service can tell the requests waiting for them without
// looking them up; when they do not fit in one, they are split among several, and beyond
// [maxAnnounced] of them it carries the name alone. A notification that
// fails is sent again, with capped backoff, together with whatever was committed meanwhile; [Runner.Run]
// sends a last one when the partitions have stopped: the query service trusts that every commit is
// announced. A notification lost to a crash just after a commit is made up for by the name alone,
// sent by whichever process takes the partition next, and costs waiting requests at most their
// recheck interval (query.WithRecheckInterval), never a stale read.
func (r *Runner) notifier(ctx context.Context) {
	retry := backoff.New(r.cfg.RetryMin, r.cfg.RetryMax)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.notifyReq:
		}
		err := r.sendNotification(ctx)
		if err == nil {
			retry.Reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("notify after commit failed; sending it again", "err", err)
		if retry.Wait(ctx) != nil {
			return
		}
		r.requestNotification()
	}
}

// sendNotification announces what was committed since the last notification, if anything. When it
// fails, what it was to announce goes with the next one.
func (r *Runner) sendNotification(ctx context.Context) error {
	r.announceMu.Lock()
	streams, reset := r.announced, r.reset
	r.announced, r.reset = nil, false
	r.announceMu.Unlock()
	if !reset && len(streams) == 0 {
		// Sent with an earlier notification, or nothing was applied. The name alone would make the
		// query service forget what it knows.
		return nil
	}
	p := consistency.Progress{Projection: r.proj.Name()}
	if !reset {
		p.Streams = streams
	}
	// One statement for however many notifications the versions need: their order does not matter.
	_, err := r.pool.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true),
		(SELECT count(pg_notify(`+consistency.ProgressChannelSQL+`, payload)) FROM unnest($1::text[]) AS payload)`, p.Payloads())
	if err != nil {
		r.announceMu.Lock()
		r.reset = r.reset || reset
		r.announceMu.Unlock()
		r.announce(maps.All(streams))
	}
	return err
}

// maxAnnounced is the most stream versions a notification carries (about two payloads, see
// consistency.Progress.Payloads); beyond it the notification is the projection's name alone. Live,
// a notification carries a few batches' streams, well under it. On a backlog every batch is
// hundreds of streams nobody waits for: encoding them cost the projector a tenth of its CPU, and
// the query service, were it waiting, would rather make one lookup than parse thousands of them.
const maxAnnounced = 256

// announce adds the stream versions to what the next notification carries. While the next
// notification is the name alone, which makes readers look versions up, there is nothing to add.
func (r *Runner) announce(versions iter.Seq2[string, uint64]) {
	r.announceMu.Lock()
	defer r.announceMu.Unlock()
	if r.reset {
		return
	}
	if r.announced == nil {
		r.announced = map[string]uint64{}
	}
	for s, v := range versions {
		r.announced[s] = max(r.announced[s], v)
	}
	if len(r.announced) > maxAnnounced {
		r.announced, r.reset = nil, true
	}
}

// commitTx applies items and moves p's checkpoint atomically, and returns the events it applied (not
// those it parked). While no stream of p can be blocked and every item decoded, that is one batch
// sent in one round trip: pgx runs a batch in an implicit transaction. Otherwise an explicit
// transaction first locks the items' dead letters.
func (r *Runner) commitTx(ctx context.Context, p *partition, items []item, park bool) ([]events.Envelope, error) {
	if err := r.checkBlocked(ctx, p); err != nil {
		return nil, err
	}
	if !park && !p.mayBlock && !slices.ContainsFunc(items, func(it item) bool { return it.err != nil }) {
		b := &pgx.Batch{}
		apply := make([]events.Envelope, len(items))
		for i, it := range items {
			apply[i] = it.env
		}
		if err := queueApply(ctx, b, r.proj, apply); err != nil {
			return nil, err
		}
		r.queueCheckpoint(b, p, items)
		if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
			return nil, err
		}
		r.m.observeApplied(items, nil)
		return apply, nil
	}
	var apply []events.Envelope
	var skipped map[int]bool // items parked, not applied
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		blocked, err := r.blockedStreams(ctx, tx, items)
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		apply, skipped = nil, map[int]bool{}
		for i, it := range items {
			stream := it.rec.Stream
			switch {
			case park:
				// Behind an event of its stream parked earlier (an undecodable message is parked
				// without a batch first), it waits like the others: a stream has one parked event,
				// the first.
				status := "parked"
				if blocked[stream] {
					status = "waiting"
				}
				queuePark(b, r.proj.Name(), it, status, it.err)
				blocked[stream] = true
				skipped[i] = true
			case it.err != nil && it.rec.Stream == "":
				return it.err // cannot even tell its stream: let the caller park it
			case blocked[stream]:
				queuePark(b, r.proj.Name(), it, "waiting", errors.New("waiting behind a parked event of its stream"))
				skipped[i] = true
			case it.err != nil:
				return it.err
			default:
				apply = append(apply, it.env)
			}
		}
		if err := queueApply(ctx, b, r.proj, apply); err != nil {
			return err
		}
		r.queueCheckpoint(b, p, items)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(skipped) > 0 {
		p.mayBlock = true
	}
	r.m.parked.Add(float64(len(skipped)))
	r.m.observeApplied(items, skipped)
	return apply, nil
}

// queueCheckpoint queues moving p's checkpoint to the last of items.
func (r *Runner) queueCheckpoint(b *pgx.Batch, p *partition, items []item) {
	last := items[len(items)-1]
	if meta, err := last.msg.Metadata(); err == nil {
		b.Queue(`INSERT INTO projection_checkpoints (projection, partition, stream_sequence, position) VALUES ($1, $2, $3, $4)
			ON CONFLICT (projection, partition) DO UPDATE SET stream_sequence = excluded.stream_sequence,
			  position = excluded.position, updated_at = now()
			WHERE projection_checkpoints.stream_sequence < excluded.stream_sequence`,
			r.proj.Name(), p.n, int64(meta.Sequence.Stream), last.rec.Position.String())
	}
}

// Apply applies evs, in order, to proj's read model in one transaction, exactly as a runner applies
// a batch (external write, statements, stream versions), without a checkpoint or dead letters. It is
// for applying history that does not come from NATS, and for testing projections.
func Apply(ctx context.Context, pool *pgxpool.Pool, proj Projection, evs []events.Envelope) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		if err := queueApply(ctx, b, proj, evs); err != nil {
			return err
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// queueApply queues on b the statements applying evs and recording each stream's version, after
// writing them to proj's external store if it has one.
func queueApply(ctx context.Context, b *pgx.Batch, proj Projection, evs []events.Envelope) error {
	if len(evs) == 0 {
		return nil
	}
	// The highest version applied per stream: projection_streams gets one statement per batch, not
	// one per event, which halves the statements of a batch. Within the transaction the order does
	// not matter; readers see the commit.
	var streams []string
	var versions []int64
	latest := map[string]int{}
	if err := applyEvents(b, proj, evs); err != nil {
		return err
	}
	for _, e := range evs {
		if i, ok := latest[e.Stream]; ok {
			versions[i] = max(versions[i], int64(e.Version))
		} else {
			latest[e.Stream] = len(streams)
			streams, versions = append(streams, e.Stream), append(versions, int64(e.Version))
		}
	}
	// The external write comes last, after every event proved applicable.
	if ext, ok := proj.(External); ok {
		if err := ext.Write(ctx, evs); err != nil {
			return fmt.Errorf("write %d events to %s: %w", len(evs), proj.Name(), err)
		}
	}
	b.Queue(upsertStreamVersions, proj.Name(), streams, versions)
	return nil
}

// applyEvents queues the statements of evs with proj: all at once when it is a [BatchProjection],
// one event at a time otherwise.
func applyEvents(b *pgx.Batch, proj Projection, evs []events.Envelope) error {
	if bp, ok := proj.(BatchProjection); ok && len(evs) > 1 {
		if err := bp.ApplyBatch(b, evs); err != nil {
			return fmt.Errorf("apply %d events: %w", len(evs), err)
		}
		return nil
	}
	for _, e := range evs {
		if err := proj.Apply(b, e); err != nil {
			return fmt.Errorf("apply %s %s@%d: %w", e.Type, e.Stream, e.Version, err)
		}
	}
	return nil
}

// blockedStreams returns the streams among items that have parked events. It is a locking read:
// a concurrent Retry (which locks the parked row FOR UPDATE first) either finishes before it, and
// its rows are gone, or starts after this transaction commits, and sees the rows it parks.
func (r *Runner) blockedStreams(ctx context.Context, tx pgx.Tx, items []item) (map[string]bool, error) {
	streams := make([]string, 0, len(items))
	for _, it := range items {
		if it.rec.Stream != "" {
			streams = append(streams, it.rec.Stream)
		}
	}
	rows, err := tx.Query(ctx, `SELECT stream FROM dead_letters WHERE projection = $1 AND stream = ANY($2) FOR SHARE`, r.proj.Name(), streams)
	if err != nil {
		return nil, fmt.Errorf("check dead letters: %w", err)
	}
	blocked := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		blocked[s] = true
	}
	return blocked, rows.Err()
}

func queuePark(b *pgx.Batch, projection string, it item, status string, cause error) {
	// A poison message may carry anything in its headers; the row must still be written, or the
	// partition would stop at it. Text columns and jsonb refuse invalid UTF-8 and NUL.
	headers := map[string][]string{}
	for k, vs := range it.msg.Headers() {
		clean := make([]string, len(vs))
		for i, v := range vs {
			clean[i] = pgText(v)
		}
		headers[pgText(k)] = clean
	}
	h, _ := json.Marshal(headers) // a map of string slices always marshals
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	stream, version, typ, id := it.rec.Stream, int64(it.rec.Version), pgText(it.rec.Type), pgText(it.rec.ID)
	if stream == "" {
		// Without a stream there is no version either: key it by its place in the JetStream stream.
		stream, id = undecodableStream, pgText(it.msg.Headers().Get(nats.MsgIdHdr))
		if meta, err := it.msg.Metadata(); err == nil {
			version = int64(meta.Sequence.Stream)
		}
	}
	b.Queue(`INSERT INTO dead_letters (projection, stream, version, event_id, event_type, headers, data, status, error, attempts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (projection, stream, version) DO NOTHING`,
		projection, stream, version, id, typ, h, it.msg.Data(), status, truncate(pgText(msg), 2000), 0)
}

// undecodableStream is the stream of the dead letters whose message names no usable stream. They
// are unrelated to each other, and each is keyed by its JetStream sequence.
const undecodableStream = "(undecodable)"

// pgText is s as PostgreSQL text can hold it: invalid UTF-8 and NUL replaced by U+FFFD.
func pgText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// truncate cuts s to at most n bytes, on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
