// Package backoff is a capped exponential backoff with full jitter, for retry loops that must stop
// when their context ends.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes growing waits between attempts. The zero value is not usable: use [New]. A Backoff is
// not safe for concurrent use; give each retry loop its own.
type Backoff struct {
	min, max time.Duration
	attempt  int
}

// New returns a backoff whose waits start around min and never exceed max.
func New(min, max time.Duration) *Backoff { return &Backoff{min: min, max: max} }

// Attempt returns how many waits have happened since the last [Backoff.Reset].
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts the sequence again, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Next returns the next wait, [Delay] of the attempts so far, and counts one more.
func (b *Backoff) Next() time.Duration {
	d := Delay(b.min, b.max, b.attempt)
	b.attempt++
	return d
}

// Delay is the wait before retry number attempt (from 0): a random duration between half and all of
// base·2^attempt, capped at limit. Jitter keeps competing retriers from waking in lockstep. It keeps
// no state, for retriers that count attempts themselves.
func Delay(base, limit time.Duration, attempt int) time.Duration {
	d := base << min(max(attempt, 0), 30)
	if d > limit || d <= 0 {
		d = limit
	}
	return d/2 + rand.N(d/2+1)
}

// Wait sleeps for [Backoff.Next], or until ctx ends, in which case it returns ctx's error.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
