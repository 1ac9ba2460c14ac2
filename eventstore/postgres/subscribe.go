package postgres

import (
	"context"
	"time"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/backoff"
)

// announce wakes local subscribers and asks the notifier to tell other processes.
func (s *Store) announce() {
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default: // a NOTIFY is already pending; it will cover this append too
	}
}

func (s *Store) localWake() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}

// notifyLoop sends one NOTIFY per burst of appends, outside the appends' transactions, and at most
// one per NotifyInterval: under load the cost stays bounded however fast appends come, and a remote
// subscriber waits at most that much longer than a local one.
func (s *Store) notifyLoop(ctx context.Context) {
	defer close(s.done)
	failing := false
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-pause.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-s.notify:
		}
		// NOTIFY gives its transaction an id and so a commit record; committing it asynchronously
		// keeps it from costing a WAL flush of its own. A lost notification only delays a reader
		// until its next poll.
		_, err := s.pool.Exec(ctx, "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')", s.opts.Channel)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			s.log.Warn("notify failed; other processes fall back to polling", "err", err)
		case err == nil && failing:
			failing = false
			s.log.Info("notify recovered")
		}
		pause.Reset(s.opts.NotifyInterval)
	}
}

// Subscribe implements [eventstore.Store.Subscribe]. It survives database outages: reads are retried
// with capped backoff, and it only returns when ctx ends or handle fails.
func (s *Store) Subscribe(ctx context.Context, from events.Position, handle func(context.Context, eventstore.RecordedEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	remote := make(chan struct{}, 1)
	go s.listen(ctx, remote)

	poll := time.NewTimer(s.opts.PollInterval)
	defer poll.Stop()
	retry := backoff.New(50*time.Millisecond, 5*time.Second)
	for {
		// Take the wake channel before reading: an append that commits after the read closes it.
		local := s.localWake()
		batch, err := s.ReadAll(ctx, from, s.opts.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if retry.Attempt() == 0 {
				s.log.Warn("subscription read failed; retrying", "position", from.String(), "err", err)
			}
			if err := retry.Wait(ctx); err != nil {
				return err
			}
			continue
		}
		if retry.Attempt() > 0 {
			s.log.Info("subscription read recovered", "position", from.String())
			retry.Reset()
		}
		for _, e := range batch {
			if err := handle(ctx, e); err != nil {
				return err
			}
			from = e.Position
		}
		if len(batch) == s.opts.BatchSize {
			continue // more backlog: read on without waiting
		}
		poll.Reset(s.opts.PollInterval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-local:
		case <-remote:
		case <-poll.C:
		}
	}
}

// listen holds a dedicated connection in LISTEN and signals remote for every notification, until ctx
// ends. It reconnects with backoff; while it is down, subscriptions still poll.
func (s *Store) listen(ctx context.Context, remote chan<- struct{}) {
	retry := backoff.New(100*time.Millisecond, 10*time.Second)
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, remote, retry)
		if ctx.Err() != nil {
			return
		}
		if retry.Attempt() == 0 {
			s.log.Warn("listen connection lost; polling until it is back", "err", err)
		}
		if retry.Wait(ctx) != nil {
			return
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, remote chan<- struct{}, retry *backoff.Backoff) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pooled.Hijack() // LISTEN state must not return to the pool
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config('application_name', 'strata-listen', false)"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `LISTEN "`+s.opts.Channel+`"`); err != nil {
		return err
	}
	if retry.Attempt() > 0 {
		s.log.Info("listen connection restored")
	}
	retry.Reset()
	// Whatever was announced while we were not listening is picked up by the next read.
	signal(remote)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		signal(remote)
	}
}

func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
