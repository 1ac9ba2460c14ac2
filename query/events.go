package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/problem"
)

// writeTimeout bounds each write to an event stream, so that a client that stopped reading cannot
// hold the stream open.
const writeTimeout = 10 * time.Second

// orderEvents answers GET /v1/orders/{id}/events with Server-Sent Events: first the order's status
// changes after Last-Event-ID (each event's id is the order version that made the change), then each
// new one as the orders projection announces progress. Events are named "status" and carry a status
// history entry as JSON. Comment lines keep an idle stream alive. The stream ends when the client
// goes away or the [Waiter] stops (the server is shutting down). A consistency token is waited for
// before the stream starts, as for GET /v1/orders/{id}.
func (a *api) orderEvents(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "order")
	if err != nil {
		return err
	}
	var last uint64
	if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
		if last, err = strconv.ParseUint(v, 10, 64); err != nil {
			return fmt.Errorf("Last-Event-ID %.40q: want an event id this stream sent: %w", v, problem.ErrMalformed)
		}
	}
	tok, err := a.consistent(w, r, ordersProjection, events.OrderAggregate)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var version int64
	err = a.pool.QueryRow(ctx, `SELECT version FROM orders WHERE id = $1`, id).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("order %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read order %s: %w", id, err)
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer the stream
	h.Set(HeaderConsistencyToken, tok.Merge(consistency.For(events.StreamName(events.OrderAggregate, id), uint64(version))).String())
	w.WriteHeader(http.StatusOK)
	s := &eventStream{w: w, rc: http.NewResponseController(w)}
	if err := s.flush(); err != nil {
		return nil // the client went away
	}

	heartbeat := time.NewTicker(a.opts.Heartbeat)
	defer heartbeat.Stop()
	stream := events.StreamName(events.OrderAggregate, id)
	seen := max(last, uint64(version)) // the order's version known to be applied
	for {
		// Watch before reading: progress committed after the read then releases the watch.
		progressed, leave := a.waiter.watch(ordersProjection, map[string]uint64{stream: seen + 1})
		more, err := a.sendChanges(ctx, s, id, &last)
		if err != nil || !more {
			leave()
			if err != nil && ctx.Err() == nil {
				a.log.Warn("event stream ended by a failed read; the client will reconnect", "route", r.URL.Path, "err", err)
			}
			return nil // the response has begun: no problem document can follow
		}
		seen = max(seen, last)
		// Wait for the order to change. The heartbeat also looks again, as a safety net for a
		// notification lost while the LISTEN connection was down.
		select {
		case <-ctx.Done():
			leave()
			return nil
		case <-a.waiter.done():
			leave()
			return nil
		case <-progressed:
			seen++ // the projection has applied seen+1 (and what it read above)
		case <-heartbeat.C:
			if s.write(": heartbeat\n\n") != nil || s.flush() != nil {
				leave()
				return nil
			}
		}
		leave()
	}
}

// sendChanges writes the order's status changes after *last and moves *last past them. more is false
// when the client went away.
func (a *api) sendChanges(ctx context.Context, s *eventStream, id string, last *uint64) (more bool, err error) {
	entries, err := a.statusChanges(ctx, id, *last)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		data, _ := json.Marshal(e) // a struct of strings, integers and a time always marshals
		if err := s.write(fmt.Sprintf("id: %d\nevent: status\ndata: %s\n\n", e.Version, data)); err != nil {
			return false, nil
		}
		*last = e.Version
	}
	if len(entries) > 0 {
		if err := s.flush(); err != nil {
			return false, nil
		}
	}
	return true, nil
}

// statusChanges reads the order's status history after version.
func (a *api) statusChanges(ctx context.Context, id string, after uint64) ([]statusEntry, error) {
	rows, _ := a.pool.Query(ctx, `SELECT version, status, reason, at FROM order_status_history
		WHERE order_id = $1 AND version > $2 ORDER BY version`, id, int64(min(after, 1<<63-1)))
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (statusEntry, error) {
		var (
			e       statusEntry
			version int64
		)
		err := row.Scan(&version, &e.Status, &e.Reason, &e.At)
		e.Version, e.At = uint64(max(version, 0)), e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read status history of order %s: %w", id, err)
	}
	return entries, nil
}

// eventStream writes to a Server-Sent Events response, each write bounded by [writeTimeout].
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *eventStream) write(text string) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	_, err := s.w.Write([]byte(text))
	return err
}

func (s *eventStream) flush() error { return s.rc.Flush() }
