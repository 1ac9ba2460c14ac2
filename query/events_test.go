package query_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/query"
)

// placedAndConfirmed returns an order at version 2 with two status changes.
func placedAndConfirmed() orderRow {
	o := newOrder("c-1", t0)
	o.Status, o.Version = "confirmed", 2
	o.History = append(o.History, historyRow{Version: 2, Status: "confirmed", At: t0.Add(time.Second)})
	return o
}

// ship moves o to shipped, one version on.
func ship(o orderRow) orderRow {
	o.Version++
	o.Status, o.Carrier, o.TrackingNumber = "shipped", "DHL", "JJD42"
	o.History = append(o.History, historyRow{Version: o.Version, Status: "shipped", At: t0.Add(time.Hour)})
	return o
}

func TestOrderEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	o := placedAndConfirmed()
	h.putOrder(o)
	path := "/v1/orders/" + o.ID.String() + "/events"

	res, stream := h.openEvents(t, path, "Last-Event-ID", "1")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"))

	e := nextEvent(t, stream, 5*time.Second)
	require.Equal(t, sseEvent{ID: "2", Event: "status", Data: `{"version":2,"status":"confirmed","reason":"","at":"2025-03-01T12:30:46.123456Z"}`}, e)

	o = ship(o)
	h.putOrder(o)
	notified := time.Now()
	h.notify("orders")
	e = nextEvent(t, stream, 5*time.Second)
	require.Less(t, time.Since(notified), time.Second, "woken by the notification")
	require.Equal(t, "3", e.ID)
	var entry struct {
		Version uint64 `json:"version"`
		Status  string `json:"status"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.Data), &entry))
	require.Equal(t, uint64(3), entry.Version)
	require.Equal(t, "shipped", entry.Status)

	t.Run("from the beginning", func(t *testing.T) {
		_, stream := h.openEvents(t, path)
		for _, want := range []string{"1", "2", "3"} {
			require.Equal(t, want, nextEvent(t, stream, 5*time.Second).ID)
		}
	})

	t.Run("a reconnecting client gets what it missed", func(t *testing.T) {
		_, stream := h.openEvents(t, path, "Last-Event-ID", "3")
		cancelled := o
		cancelled.Version++
		cancelled.History = append(cancelled.History, historyRow{Version: cancelled.Version, Status: "cancelled", Reason: "late", At: t0.Add(2 * time.Hour)})
		h.putOrder(cancelled)
		h.notify("orders")
		e := nextEvent(t, stream, 5*time.Second)
		require.Equal(t, "4", e.ID)
		require.Contains(t, e.Data, `"reason":"late"`)
	})

	t.Run("unknown order", func(t *testing.T) {
		for _, id := range []string{uuid.NewString(), "x"} {
			res := h.get(t, "/v1/orders/"+id+"/events")
			require.Equal(t, http.StatusNotFound, res.Status)
			require.Equal(t, "https://strata.dev/problems/not-found", res.problem(t).Type)
		}
	})

	t.Run("malformed Last-Event-ID", func(t *testing.T) {
		res := h.get(t, path, "Last-Event-ID", "three")
		require.Equal(t, http.StatusBadRequest, res.Status)
	})

	t.Run("waits for a token first", func(t *testing.T) {
		n := placedAndConfirmed()
		started := make(chan *http.Response, 1)
		go func() {
			res, err := h.startEvents(t, "/v1/orders/"+n.ID.String()+"/events",
				query.HeaderConsistencyToken, tokenFor("order-"+n.ID.String(), 2), "Prefer", "wait=5")
			if err != nil {
				t.Errorf("open event stream: %v", err)
			}
			started <- res
		}()
		require.Eventually(t, func() bool { return h.waiter.Waiting() >= 1 }, 5*time.Second, time.Millisecond)
		h.putOrder(n)
		h.notify("orders")
		var res *http.Response
		select {
		case res = <-started:
			require.NotNil(t, res)
		case <-time.After(5 * time.Second):
			t.Fatal("the stream did not start")
		}
		require.Equal(t, http.StatusOK, res.StatusCode)
		stream := readEvents(t, res)
		require.Equal(t, "1", nextEvent(t, stream, 5*time.Second).ID)
		require.Equal(t, "2", nextEvent(t, stream, 5*time.Second).ID)
	})
}

func TestOrderEventsHeartbeat(t *testing.T) {
	t.Parallel()
	const readTimeout = 200 * time.Millisecond
	h := newHarness(t, harnessConfig{
		handler: query.HandlerOptions{Heartbeat: 50 * time.Millisecond},
		server:  func(s *http.Server) { s.ReadTimeout = readTimeout },
	})
	o := placedAndConfirmed()
	h.putOrder(o)
	start := time.Now()
	_, stream := h.openEvents(t, "/v1/orders/"+o.ID.String()+"/events", "Last-Event-ID", "2")

	// Heartbeats flow, also well past the server's ReadTimeout, which must not end the stream.
	heartbeats := 0
	for time.Since(start) < 5*readTimeout {
		select {
		case e, ok := <-stream:
			require.True(t, ok, "the stream ended after %s", time.Since(start))
			require.Equal(t, sseEvent{Comment: "heartbeat"}, e)
			heartbeats++
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
	require.Greater(t, heartbeats, 3)

	h.putOrder(ship(o))
	h.notify("orders")
	require.Equal(t, "3", nextEvent(t, stream, 5*time.Second).ID)
}

func TestOrderEventsEndOnShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	o := placedAndConfirmed()
	h.putOrder(o)
	_, stream := h.openEvents(t, "/v1/orders/"+o.ID.String()+"/events", "Last-Event-ID", "1")
	require.Equal(t, "2", nextEvent(t, stream, 5*time.Second).ID)

	h.stopWaiter()
	for {
		select {
		case _, ok := <-stream:
			if !ok {
				return // the server ended the stream
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the stream is still open")
		}
	}
}

func TestOrderEventsAreShedApart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{handler: query.HandlerOptions{MaxInFlight: 1, MaxEventStreams: 1}})
	o := placedAndConfirmed()
	h.putOrder(o)
	path := "/v1/orders/" + o.ID.String()
	_, stream := h.openEvents(t, path+"/events", "Last-Event-ID", "1")
	require.Equal(t, "2", nextEvent(t, stream, 5*time.Second).ID)

	// An open stream takes no slot of ordinary requests...
	require.Equal(t, http.StatusOK, h.get(t, path).Status)
	// ...but counts against the streams' own limit.
	res := h.get(t, path+"/events")
	require.Equal(t, http.StatusServiceUnavailable, res.Status)
	require.Equal(t, "https://strata.dev/problems/overloaded", res.problem(t).Type)
}
