package query

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/internal/backoff"
	"github.com/strata-dev/strata/internal/problem"
)

// notifyChannel is where projectors announce progress: after each commit they run
// pg_notify('strata_projection', <projection name>).
const notifyChannel = "strata_projection"

// keepalive is how long the LISTEN connection may stay silent before the [Waiter] pings it, so that a
// connection that died without a word is noticed and replaced.
const keepalive = 15 * time.Second

// Waiter lets requests wait until a projection has applied given stream versions. One Waiter per
// process holds a single dedicated connection in LISTEN on the projectors' notification channel; each
// notification wakes the requests waiting on that projection, which then look again with one query.
// Create it with [NewWaiter] and start it with [Waiter.Run]; it is safe for concurrent use.
type Waiter struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	recheck time.Duration

	mu   sync.Mutex
	wake map[string]chan struct{} // per projection, closed (and removed) when it makes progress

	listening atomic.Bool
	waiting   atomic.Int64
	stopped   chan struct{}
	stop      sync.Once
}

// WaiterOption tunes a [Waiter] made by [NewWaiter].
type WaiterOption func(*Waiter)

// WithRecheckInterval sets how often a waiting request looks again without being woken, the safety net
// for a notification lost while the LISTEN connection was being replaced. The default is one second;
// d <= 0 keeps it.
func WithRecheckInterval(d time.Duration) WaiterOption {
	return func(w *Waiter) {
		if d > 0 {
			w.recheck = d
		}
	}
}

// NewWaiter returns a Waiter that reads projection progress through pool. log receives one line per
// change of the LISTEN connection's state; nil discards. It starts nothing: call [Waiter.Run].
func NewWaiter(pool *pgxpool.Pool, log *slog.Logger, opts ...WaiterOption) *Waiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Waiter{
		pool:    pool,
		log:     log.With("component", "projection-waiter"),
		recheck: time.Second,
		wake:    map[string]chan struct{}{},
		stopped: make(chan struct{}),
	}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Run holds the LISTEN connection until ctx ends, replacing it with capped backoff whenever it fails;
// while it is down, [Waiter.Ready] fails and waiting requests fall back to the recheck interval. Call
// Run once. It returns nil when ctx ends; from then on open event streams end too.
func (w *Waiter) Run(ctx context.Context) error {
	defer w.stop.Do(func() { close(w.stopped) })
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		err := w.listen(ctx, retry)
		w.listening.Store(false)
		if ctx.Err() != nil {
			break
		}
		if retry.Attempt() == 0 {
			w.log.Warn("listen connection lost; reconnecting, waiting requests re-check every interval meanwhile",
				"channel", notifyChannel, "interval", w.recheck, "err", err)
		}
		if retry.Wait(ctx) != nil {
			break
		}
	}
	return nil
}

// listen runs one LISTEN connection until it fails or ctx ends.
func (w *Waiter) listen(ctx context.Context, retry *backoff.Backoff) error {
	pooled, err := w.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listen connection: %w", err)
	}
	conn := pooled.Hijack() // a session in LISTEN must never go back to the pool
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen %s: %w", notifyChannel, err)
	}
	w.listening.Store(true)
	if retry.Attempt() > 0 {
		w.log.Info("listen connection restored", "channel", notifyChannel)
	}
	retry.Reset()
	// Whatever was announced while nobody listened is found by looking again.
	w.wakeAll()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, keepalive)
		n, err := conn.WaitForNotification(waitCtx)
		idle := waitCtx.Err() != nil
		cancel()
		switch {
		case err == nil:
			w.progressed(n.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case idle:
			pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping listen connection: %w", err)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// Ready fails while the LISTEN connection is down (also before [Waiter.Run] starts and after it
// returns). It has the signature of a readiness check.
func (w *Waiter) Ready(context.Context) error {
	if !w.listening.Load() {
		return fmt.Errorf("not listening on %s", notifyChannel)
	}
	return nil
}

// Waiting returns how many calls of [Waiter.Wait] are blocked on a projection at this moment.
func (w *Waiter) Waiting() int { return int(w.waiting.Load()) }

// Wait returns nil once projection has applied every stream in streams at least up to the version
// given: projection_streams has a row for it with a version that high. It looks once, then again
// each time the projection announces progress, and at the recheck interval. When ctx ends first, the
// error wraps [problem.ErrNotYetConsistent] (and ctx's error); a failed query returns its error.
// An empty streams is satisfied at once, without a query.
func (w *Waiter) Wait(ctx context.Context, projection string, streams map[string]uint64) error {
	if len(streams) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(streams))
	// Take the wake channel before looking: progress committed after the query closes it.
	wake := w.changed(projection)
	missing, err := w.missing(ctx, projection, names, streams)
	if err != nil || missing == "" {
		return w.outcome(ctx, projection, streams, missing, err)
	}
	w.waiting.Add(1)
	defer w.waiting.Add(-1)
	recheck := time.NewTimer(w.recheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return w.outcome(ctx, projection, streams, missing, nil)
		case <-wake:
		case <-recheck.C:
		}
		recheck.Reset(w.recheck)
		wake = w.changed(projection)
		missing, err = w.missing(ctx, projection, names, streams)
		if err != nil || missing == "" {
			return w.outcome(ctx, projection, streams, missing, err)
		}
	}
}

// satisfied looks once whether projection has applied streams, without waiting. Its error is that
// of [Waiter.Wait].
func (w *Waiter) satisfied(ctx context.Context, projection string, streams map[string]uint64) error {
	if len(streams) == 0 {
		return nil
	}
	missing, err := w.missing(ctx, projection, slices.Sorted(maps.Keys(streams)), streams)
	return w.outcome(ctx, projection, streams, missing, err)
}

// outcome turns the result of a look into Wait's error: nil when nothing is missing, the query's
// error when it failed while ctx was live, and otherwise not yet consistent.
func (w *Waiter) outcome(ctx context.Context, projection string, want map[string]uint64, missing string, err error) error {
	switch {
	case err == nil && missing == "":
		return nil
	case err != nil && ctx.Err() == nil:
		return err
	}
	what := "the streams of the consistency token"
	if missing != "" {
		what = fmt.Sprintf("%s@%d", missing, want[missing])
	}
	if ctx.Err() != nil {
		return fmt.Errorf("projection %s has not yet applied %s: %w (%w)", projection, what, problem.ErrNotYetConsistent, ctx.Err())
	}
	return fmt.Errorf("projection %s has not yet applied %s: %w", projection, what, problem.ErrNotYetConsistent)
}

// missing returns one stream that projection has not applied up to its version in want, or "" when
// it has applied them all. It makes one query.
func (w *Waiter) missing(ctx context.Context, projection string, names []string, want map[string]uint64) (string, error) {
	rows, err := w.pool.Query(ctx,
		`SELECT stream, version FROM projection_streams WHERE projection = $1 AND stream = ANY($2)`,
		projection, names)
	if err != nil {
		return "", fmt.Errorf("read progress of projection %s: %w", projection, err)
	}
	applied := make(map[string]uint64, len(names))
	for rows.Next() {
		var (
			stream  string
			version int64
		)
		if err := rows.Scan(&stream, &version); err != nil {
			rows.Close()
			return "", fmt.Errorf("read progress of projection %s: %w", projection, err)
		}
		applied[stream] = uint64(max(version, 0))
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("read progress of projection %s: %w", projection, err)
	}
	for _, s := range names {
		if applied[s] < want[s] {
			return s, nil
		}
	}
	return "", nil
}

// changed returns a channel that is closed the next time projection announces progress (or the
// LISTEN connection is re-established).
func (w *Waiter) changed(projection string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.wake[projection]
	if !ok {
		c = make(chan struct{})
		w.wake[projection] = c
	}
	return c
}

// done is closed when [Waiter.Run] has returned.
func (w *Waiter) done() <-chan struct{} { return w.stopped }

// progressed wakes everything waiting on projection. A notification without a payload wakes all.
func (w *Waiter) progressed(projection string) {
	if projection == "" {
		w.wakeAll()
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.wake[projection]; ok {
		close(c)
		delete(w.wake, projection)
	}
}

func (w *Waiter) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, c := range w.wake {
		close(c)
		delete(w.wake, p)
	}
}
