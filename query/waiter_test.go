package query_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/query"
)

func TestWaiterWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Lamp", "lighting")
	p.Version = 2
	h.putProduct(p)
	stream := "product-" + p.ID.String()

	require.NoError(t, h.waiter.Wait(t.Context(), "products", nil), "nothing to wait for")
	require.NoError(t, h.waiter.Wait(t.Context(), "products", map[string]uint64{stream: 2}))

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := h.waiter.Wait(ctx, "orders", map[string]uint64{stream: 1})
	require.ErrorIs(t, err, problem.ErrNotYetConsistent, "the stream is applied by another projection")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), stream+"@1")

	done := make(chan error, 1)
	go func() { done <- h.waiter.Wait(t.Context(), "products", map[string]uint64{stream: 3}) }()
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	p.Version = 3
	h.putProduct(p)
	h.notify("") // a notification without a projection wakes every waiter
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("not woken")
	}
}

func TestWaiterRechecksWithoutNotification(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{recheck: 50 * time.Millisecond})
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	done := make(chan error, 1)
	go func() {
		done <- h.waiter.Wait(t.Context(), "products", map[string]uint64{"product-" + p.ID.String(): 2})
	}()
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	p.Version = 2
	h.putProduct(p) // no notification: the safety net finds it
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("not found by the re-check")
	}
}

// listenPID returns the backend pid of the harness's LISTEN connection, 0 if there is none.
func (h *harness) listenPID(t *testing.T) int32 {
	var pid int32
	err := h.pool.QueryRow(t.Context(), `SELECT COALESCE(max(pid), 0) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN %strata_projection%'`, h.appName).Scan(&pid)
	require.NoError(t, err)
	return pid
}

func TestWaiterReconnects(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	stream := "product-" + p.ID.String()

	var pid int32
	require.Eventually(t, func() bool { pid = h.listenPID(t); return pid != 0 }, 5*time.Second, 5*time.Millisecond)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		done <- h.waiter.Wait(ctx, "products", map[string]uint64{stream: 2})
	}()
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)

	// Kill the LISTEN connection, and make progress while it may be down: the notification can be
	// lost, and the waiter must still find the progress once it listens again.
	_, err := h.pool.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	p.Version = 2
	h.putProduct(p)
	h.notify("products")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not recover")
	}

	require.Eventually(t, func() bool { n := h.listenPID(t); return n != 0 && n != pid }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return h.get(t, "/readyz").Status == http.StatusOK }, 10*time.Second, 5*time.Millisecond)

	// The new connection delivers notifications again.
	pending := h.async(t, "/v1/products/"+p.ID.String(), query.HeaderConsistencyToken, tokenFor(stream, 3), "Prefer", "wait=5")
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	p.Version = 3
	h.putProduct(p)
	h.notify("products")
	res := receive(t, pending, 5*time.Second)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
}
