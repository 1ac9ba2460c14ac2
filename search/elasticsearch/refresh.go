package elasticsearch

import (
	"context"
	"sync"
)

// refresher coalesces refreshes. A caller needs a refresh that starts after it called: one already
// running may have started before the caller's writes were committed. So callers that arrive while
// a refresh runs all wait for the next one, which starts when the running one ends; callers that
// arrive while nothing runs start one at once.
type refresher struct {
	run func(context.Context) error

	mu      sync.Mutex
	running bool    // a goroutine is running refreshes
	next    *flight // the refresh that has not started yet; callers arriving now wait for it
}

// flight is one refresh; done is closed when it ends, and err is its result.
type flight struct {
	done chan struct{}
	err  error
}

func newRefresher(run func(context.Context) error) *refresher {
	return &refresher{run: run}
}

// do returns the result of a refresh that started after do was called, or ctx's error if ctx ends
// first (the refresh itself carries on for the other callers).
func (r *refresher) do(ctx context.Context) error {
	r.mu.Lock()
	f := r.next
	if f == nil {
		f = &flight{done: make(chan struct{})}
		r.next = f
	}
	if !r.running {
		r.running = true
		// The refresh serves every caller waiting for it, so no caller's cancellation may stop it;
		// each request is bounded by the request timeout.
		go r.loop(context.WithoutCancel(ctx))
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop runs refreshes while callers wait for one.
func (r *refresher) loop(ctx context.Context) {
	for {
		r.mu.Lock()
		f := r.next
		r.next = nil
		if f == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		f.err = r.run(ctx)
		close(f.done)
	}
}
