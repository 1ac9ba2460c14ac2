package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/internal/backoff"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/problem"
)

// keepalive is the longest the LISTEN connection may stay silent before the [Waiter] pings it, so that
// a connection that died without a word is noticed and replaced. It is shorter when the recheck
// interval is: remembered versions are only trusted while the connection has shown itself alive
// within that interval.
const keepalive = 15 * time.Second

// knownFor is how long a remembered version is trusted. Versions only rise while every change is
// announced; the bound limits the harm of a change that breaks that rule (projection_streams
// lowered by hand while the service runs).
const knownFor = time.Minute

// checkTimeout bounds one look at a projection's progress on behalf of its waiting requests, so that
// a stuck connection cannot hold back every later look at that projection.
const checkTimeout = 5 * time.Second

// knownStreams bounds how many streams' applied versions the [Waiter] remembers per projection (about
// 200 bytes each): enough for the streams being written and read now, which are what tokens name.
const knownStreams = 50_000

// Waiter lets requests wait until a projection has applied given stream versions. One Waiter per
// process holds a single dedicated connection in LISTEN on the projectors' notification channel. The
// requests waiting on a projection are registered together, and one checker per projection looks at
// their streams with one query per notification, however many requests wait: a notification that
// woke every request to look for itself cost as many queries as there were requests. A notification
// that carries the versions the projection committed (consistency.Progress) costs no query at all:
// the requests waiting for them are told at once.
//
// The Waiter also remembers the versions announced, and those its looks found, per projection. A
// request whose streams are all remembered needs no look of its own: either they are applied, or
// their announcement is still to come, since every commit is announced (see consistency.Progress).
// What is remembered is forgotten whenever an announcement may have been missed: while the LISTEN
// connection is down, and for a projection that announces its name alone.
// Create it with [NewWaiter] and start it with [Waiter.Run]; it is safe for concurrent use.
type Waiter struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	recheck time.Duration

	mu       sync.Mutex
	registry map[string]*projectionWaits // per projection with waiting requests
	// known holds, per projection, stream versions it is known to have applied at least. It is kept
	// only while trusting: while LISTEN holds, every announcement since known was last cleared arrives.
	known    map[string]*simplelru.LRU[string, knownVersion]
	trusting bool
	heard    time.Time // when the LISTEN connection last proved alive: a notification or a ping
	// epoch counts the clearings of known: what a look begun in an earlier epoch found is not
	// recorded, as announcements missed before the clearing may have come after its snapshot.
	epoch uint64

	listening atomic.Bool
	waiting   atomic.Int64
	checks    atomic.Int64 // progress queries run, first looks included; tests count them
	stopped   chan struct{}
	stop      sync.Once
}

// waitRequest is one call of [Waiter.Wait] registered for its projection's checker.
type waitRequest struct {
	want  map[string]uint64
	names []string      // want's streams, sorted, so that the stream named missing is stable
	done  chan struct{} // closed by the checker, which also deregisters the request, once all are applied

	// Guarded by Waiter.mu:
	applied map[string]bool // the streams seen applied so far, by looks or notifications
	missing string          // a stream not yet seen applied, for the error when the wait runs out
}

// note records the streams that versions show applied, and reports whether all are.
func (req *waitRequest) note(versions map[string]uint64) bool {
	if req.applied == nil {
		req.applied = make(map[string]bool, len(req.names))
	}
	req.missing = ""
	for _, s := range req.names {
		if !req.applied[s] && versions[s] >= req.want[s] {
			req.applied[s] = true
		}
		if !req.applied[s] && req.missing == "" {
			req.missing = s
		}
	}
	return req.missing == ""
}

// projectionWaits is the registry entry of one projection. Its checker goroutine lives while requests
// wait and is the only one to look on their behalf, so at most one check per projection is in flight.
type projectionWaits struct {
	requests map[*waitRequest]struct{}
	// due holds a pending reason to look (capacity 1): kicks during a check coalesce into exactly one
	// more check after it, which sees whatever committed while the first was running.
	due chan struct{}
	// left (capacity 1) tells the checker that the last request left, so that it ends now rather than
	// at its next recheck. It is apart from due so that it never costs a query.
	left chan struct{}
}

// WaiterOption tunes a [Waiter] made by [NewWaiter].
type WaiterOption func(*Waiter)

// WithRecheckInterval sets how often the requests waiting on a projection are looked at again without a
// notification (one query per projection per interval), the safety net for a notification lost while
// the LISTEN connection was being replaced. The default is one second; d <= 0 keeps it.
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
		pool:     pool,
		log:      log.With("component", "projection-waiter"),
		recheck:  time.Second,
		registry: map[string]*projectionWaits{},
		known:    map[string]*simplelru.LRU[string, knownVersion]{},
		stopped:  make(chan struct{}),
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
		w.distrust()
		if ctx.Err() != nil {
			break
		}
		if retry.Attempt() == 0 {
			w.log.Warn("listen connection lost; reconnecting, waiting requests re-check every interval meanwhile",
				"interval", w.recheck, "err", err)
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
	// Projectors announce on their schema's channel (consistency.ProgressChannelSQL): the pool's
	// search_path makes it this service's.
	var channel string
	if err := conn.QueryRow(ctx, "SELECT "+consistency.ProgressChannelSQL).Scan(&channel); err != nil {
		return fmt.Errorf("name the progress channel: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", channel, err)
	}
	w.listening.Store(true)
	if retry.Attempt() > 0 {
		w.log.Info("listen connection restored", "channel", channel)
	}
	retry.Reset()
	// Whatever was announced while nobody listened is found by looking again; from now on every
	// announcement arrives, so versions may be remembered.
	w.mu.Lock()
	w.forget("")
	w.trusting = true
	w.heard = time.Now()
	w.mu.Unlock()
	w.wakeAll()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, min(keepalive, w.recheck))
		n, err := conn.WaitForNotification(waitCtx)
		idle := waitCtx.Err() != nil
		cancel()
		switch {
		case err == nil:
			w.alive()
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
			w.alive()
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// Ready fails while the LISTEN connection is down (also before [Waiter.Run] starts and after it
// returns). It has the signature of a readiness check.
func (w *Waiter) Ready(context.Context) error {
	if !w.listening.Load() {
		return errors.New("not listening for projection progress")
	}
	return nil
}

// Waiting returns how many calls of [Waiter.Wait] are blocked on a projection at this moment.
func (w *Waiter) Waiting() int { return int(w.waiting.Load()) }

// Wait returns nil once projection has applied every stream in streams at least up to the version
// given: projection_streams has a row for it with a version that high. It registers with the
// projection's checker, which looks again for all the requests waiting on the projection each time it
// announces progress, and at the recheck interval. Unless the Waiter remembers every stream's
// version, it first looks once itself. When ctx ends first, the error wraps
// [problem.ErrNotYetConsistent] (and ctx's error) and names a stream found behind. A failed first look
// returns its error; a failed later look is retried, at the latest at the recheck interval.
// An empty streams is satisfied at once, without a query.
func (w *Waiter) Wait(ctx context.Context, projection string, streams map[string]uint64) error {
	if len(streams) == 0 {
		return nil
	}
	req := &waitRequest{want: streams, names: slices.Sorted(maps.Keys(streams)), done: make(chan struct{})}
	// Register before looking: progress committed after the look is announced to a registered request.
	w.mu.Lock()
	w.registerLocked(projection, req)
	all, known := w.recall(projection, req)
	epoch := w.epoch
	w.mu.Unlock()
	defer w.deregister(projection, req)
	if !all && !known {
		applied, err := w.progress(ctx, projection, req.names)
		if err != nil {
			return w.outcome(ctx, projection, streams, "", err)
		}
		w.mu.Lock()
		all = req.note(applied) // with what notifications told meanwhile
		w.learn(projection, applied, epoch)
		w.mu.Unlock()
	}
	if all {
		return nil
	}

	w.waiting.Add(1)
	defer w.waiting.Add(-1)
	select {
	case <-req.done:
		return nil
	case <-ctx.Done():
	}
	w.mu.Lock()
	missing := req.missing // as of the latest look or notification
	w.mu.Unlock()
	return w.outcome(ctx, projection, streams, missing, nil)
}

// register adds req to projection's waiting requests, starting the projection's checker if there is
// none.
func (w *Waiter) register(projection string, req *waitRequest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.registerLocked(projection, req)
}

// registerLocked is register with w.mu held.
func (w *Waiter) registerLocked(projection string, req *waitRequest) {
	pw, ok := w.registry[projection]
	if !ok {
		pw = &projectionWaits{requests: map[*waitRequest]struct{}{}, due: make(chan struct{}, 1), left: make(chan struct{}, 1)}
		w.registry[projection] = pw
		go w.checker(projection, pw)
	}
	pw.requests[req] = struct{}{}
}

// deregister removes req, if the checker has not already, and tells the checker when no request is
// left.
func (w *Waiter) deregister(projection string, req *waitRequest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pw, ok := w.registry[projection]
	if !ok {
		return
	}
	delete(pw.requests, req)
	if len(pw.requests) == 0 {
		signal(pw.left)
	}
}

// signal sends on c, a channel of capacity 1, unless a signal is already pending.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// checker looks at projection's progress for all its waiting requests whenever a check is due, and at
// the recheck interval. It ends, leaving the registry, when no request waits.
func (w *Waiter) checker(projection string, pw *projectionWaits) {
	recheck := time.NewTimer(w.recheck)
	defer recheck.Stop()
	failing := false
	for {
		select {
		case <-pw.due:
		case <-recheck.C:
		case <-pw.left:
			if w.retire(projection, pw) {
				return
			}
			continue // others arrived since the last left
		}
		err := w.check(projection, pw)
		switch {
		case err != nil && !failing:
			w.log.Warn("looking at projection progress failed; waiting requests retry at the next notification or recheck",
				"projection", projection, "interval", w.recheck, "err", err)
		case err == nil && failing:
			w.log.Info("looking at projection progress works again", "projection", projection)
		}
		failing = err != nil
		recheck.Reset(w.recheck)
	}
}

// retire removes pw from the registry and reports true if no request waits on it. It does so under
// the lock that register takes, so that a request registered later starts a new checker.
func (w *Waiter) retire(projection string, pw *projectionWaits) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(pw.requests) > 0 {
		return false
	}
	delete(w.registry, projection)
	return true
}

// check looks with one query at the union of the streams that pw's requests want, and completes every
// request whose streams are all applied. The others stay registered, also when the query fails: only
// the end of their own context ends their wait.
func (w *Waiter) check(projection string, pw *projectionWaits) error {
	w.mu.Lock()
	batch := slices.Collect(maps.Keys(pw.requests))
	epoch := w.epoch
	w.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	var names []string
	// Requests registered after batch was taken are left to their own first look, which follows their
	// registration: what it misses is announced after they registered, making another check due.
	for _, req := range batch {
		names = append(names, req.names...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	applied, err := w.progress(ctx, projection, names)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.learn(projection, applied, epoch)
	for _, req := range batch {
		if _, ok := pw.requests[req]; !ok {
			continue // its context ended, or a notification completed it, during the query
		}
		if req.note(applied) {
			delete(pw.requests, req)
			close(req.done)
		}
	}
	return nil
}

// satisfied looks once whether projection has applied streams, without waiting. Its error is that
// of [Waiter.Wait].
func (w *Waiter) satisfied(ctx context.Context, projection string, streams map[string]uint64) error {
	if len(streams) == 0 {
		return nil
	}
	req := &waitRequest{want: streams, names: slices.Sorted(maps.Keys(streams))}
	w.mu.Lock()
	all, _ := w.recall(projection, req)
	epoch := w.epoch
	w.mu.Unlock()
	if all {
		return nil
	}
	applied, err := w.progress(ctx, projection, req.names)
	if err != nil {
		return w.outcome(ctx, projection, streams, "", err)
	}
	w.mu.Lock()
	w.learn(projection, applied, epoch)
	w.mu.Unlock()
	req.note(applied)
	return w.outcome(ctx, projection, streams, req.missing, nil)
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

// progress returns the versions projection has applied of the streams in names; a stream it has not
// applied at all is absent. It makes one query.
func (w *Waiter) progress(ctx context.Context, projection string, names []string) (map[string]uint64, error) {
	w.checks.Add(1)
	rows, err := w.pool.Query(ctx,
		`SELECT stream, version FROM projection_streams WHERE projection = $1 AND stream = ANY($2)`,
		projection, names)
	if err != nil {
		return nil, fmt.Errorf("read progress of projection %s: %w", projection, err)
	}
	applied := make(map[string]uint64, len(names))
	for rows.Next() {
		var (
			stream  string
			version int64
		)
		if err := rows.Scan(&stream, &version); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read progress of projection %s: %w", projection, err)
		}
		applied[stream] = uint64(max(version, 0))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read progress of projection %s: %w", projection, err)
	}
	return applied, nil
}

// watch registers interest in projection applying want, without looking itself: the channel is
// closed when a look or a notification finds every stream of want applied, and leave deregisters.
// Open event streams use it, so that a notification costs at most one query however many streams
// are open.
func (w *Waiter) watch(projection string, want map[string]uint64) (applied <-chan struct{}, leave func()) {
	req := &waitRequest{want: want, names: slices.Sorted(maps.Keys(want)), done: make(chan struct{})}
	w.register(projection, req)
	return req.done, func() { w.deregister(projection, req) }
}

// done is closed when [Waiter.Run] has returned.
func (w *Waiter) done() <-chan struct{} { return w.stopped }

// progressed handles a notification. One with the versions its projection committed completes the
// requests waiting for them, without a query, and is remembered; one with the projection's name alone
// makes a check of it due and its versions forgotten; one without a projection does so for every
// projection.
func (w *Waiter) progressed(payload string) {
	p := consistency.ParseProgress(payload)
	if p.Projection == "" {
		w.mu.Lock()
		w.forget("")
		w.mu.Unlock()
		w.wakeAll()
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(p.Streams) == 0 {
		w.forget(p.Projection)
	} else {
		w.learn(p.Projection, p.Streams, w.epoch)
	}
	pw, ok := w.registry[p.Projection]
	if !ok {
		return
	}
	if len(p.Streams) == 0 {
		signal(pw.due)
		return
	}
	for req := range pw.requests {
		if req.note(p.Streams) {
			delete(pw.requests, req)
			close(req.done)
		}
	}
}

// wakeAll is progressed for every projection.
func (w *Waiter) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pw := range w.registry {
		signal(pw.due)
	}
}

// recall notes in req the versions remembered of projection's streams. It reports whether they show
// every stream of req applied, and whether every stream of req is remembered: then the
// announcements still to come tell the rest, and a look would find nothing more. Nothing is
// remembered while the LISTEN connection has not proved alive within the recheck interval (a
// connection that died silently delivers nothing), nor for longer than knownFor. Call it with w.mu
// held.
func (w *Waiter) recall(projection string, req *waitRequest) (all, known bool) {
	versions, ok := w.known[projection]
	now := time.Now()
	if !ok || now.Sub(w.heard) > w.recheck {
		return false, false
	}
	found := make(map[string]uint64, len(req.names))
	for _, s := range req.names {
		if v, ok := versions.Get(s); ok && now.Sub(v.learned) <= knownFor {
			found[s] = v.version
		}
	}
	return req.note(found), len(found) == len(req.names)
}

// knownVersion is a version a projection is known to have applied at least, and since when.
type knownVersion struct {
	version uint64
	learned time.Time
}

// alive records that the LISTEN connection works.
func (w *Waiter) alive() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.heard = time.Now()
}

// learn remembers that projection has applied at least the given versions, unless known was cleared
// since epoch or announcements may be missed. Call it with w.mu held.
func (w *Waiter) learn(projection string, applied map[string]uint64, epoch uint64) {
	if !w.trusting || epoch != w.epoch || len(applied) == 0 {
		return
	}
	versions, ok := w.known[projection]
	if !ok {
		versions, _ = simplelru.NewLRU[string, knownVersion](knownStreams, nil) // fails only for a size below 1
		w.known[projection] = versions
	}
	now := time.Now()
	for s, v := range applied {
		if old, ok := versions.Peek(s); ok && old.version >= v && now.Sub(old.learned) <= knownFor {
			continue
		}
		versions.Add(s, knownVersion{version: v, learned: now})
	}
}

// forget clears what is remembered of projection, or of every projection for "". Call it with w.mu
// held.
func (w *Waiter) forget(projection string) {
	if projection == "" {
		clear(w.known)
	} else {
		delete(w.known, projection)
	}
	w.epoch++
}

// distrust forgets every version and stops remembering, for as long as announcements may be missed.
func (w *Waiter) distrust() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forget("")
	w.trusting = false
}
