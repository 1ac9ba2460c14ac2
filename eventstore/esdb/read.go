package esdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/backoff"
)

// ReadStream implements [eventstore.Store.ReadStream]. A stream that was deleted fails with
// [eventstore.ErrStreamDeleted].
func (s *Store) ReadStream(ctx context.Context, stream string, fromVersion uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if stream == "" || limit <= 0 {
		return nil, nil
	}
	fromVersion = max(fromVersion, 1)
	raw, err := s.readStream(ctx, s.name(stream), esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(fromVersion - 1)}, uint64(limit))
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	out := make([]eventstore.RecordedEvent, 0, len(raw))
	for _, re := range raw {
		e, err := s.decode(re)
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", stream, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// readStream reads up to count events of the stream called name. A stream that does not exist reads
// as empty; a deleted one fails with [eventstore.ErrStreamDeleted].
func (s *Store) readStream(ctx context.Context, name string, opts esdb.ReadStreamOptions, count uint64) ([]*esdb.RecordedEvent, error) {
	evs, err := call(ctx, s, func(ctx context.Context, c *esdb.Client) ([]*esdb.RecordedEvent, error) {
		rs, err := c.ReadStream(ctx, name, opts, count)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		return collect(rs)
	})
	switch {
	case hasCode(err, esdb.ErrorCodeResourceNotFound):
		return nil, nil
	case hasCode(err, esdb.ErrorCodeStreamDeleted):
		return nil, eventstore.ErrStreamDeleted
	}
	return evs, err
}

// collect reads rs to its end.
func collect(rs *esdb.ReadStream) ([]*esdb.RecordedEvent, error) {
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if re := ev.OriginalEvent(); re != nil {
			out = append(out, re)
		}
	}
}

// ReadAll implements [eventstore.Store.ReadAll]: up to limit events of $all after from, without system events or, with
// a StreamPrefix, other streams. The filtering is done here, a page at a time: the client has no
// filtered read.
func (s *Store) ReadAll(ctx context.Context, from events.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if limit <= 0 {
		return nil, nil
	}
	page := uint64(min(max(2*limit, 64), 4096))
	var out []eventstore.RecordedEvent
	cursor := from
	for {
		raw, err := call(ctx, s, func(ctx context.Context, c *esdb.Client) ([]*esdb.RecordedEvent, error) {
			rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Forwards, From: allPosition(cursor)}, page)
			if err != nil {
				return nil, err
			}
			defer rs.Close()
			return collect(rs)
		})
		if err != nil {
			return nil, fmt.Errorf("read all from %s: %w", from, err)
		}
		for _, re := range raw {
			p := position(re)
			if !cursor.Less(p) {
				continue // a read from a position starts with the event at that position
			}
			cursor = p
			if !s.visible(re) {
				continue
			}
			e, err := s.decode(re)
			if err != nil {
				return nil, fmt.Errorf("read all from %s: %w", from, err)
			}
			if out = append(out, e); len(out) == limit {
				return out, nil
			}
		}
		if uint64(len(raw)) < page {
			return out, nil // the end of $all
		}
	}
}

// stopError carries an error that ends a subscription for good: the handler's, an event that cannot
// be decoded, or a refusal that retrying cannot cure.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// Subscribe implements [eventstore.Store.Subscribe] with a catch-up subscription to $all, filtered by
// the server. When the subscription drops, it subscribes again from the last event it delivered,
// after a backoff capped at 5s, until ctx ends or handle fails. It returns handle's error, ctx's, or
// an error if the store is closed, an event cannot be decoded, or the server refuses the subscription
// for good (credentials, access, an invalid position).
func (s *Store) Subscribe(ctx context.Context, from events.Position, handle func(context.Context, eventstore.RecordedEvent) error) error {
	retry := backoff.New(50*time.Millisecond, 5*time.Second)
	last := from
	dropped := false
	for {
		err := s.subscribeOnce(ctx, &last, handle, func() {
			if dropped {
				dropped = false
				s.log.Info("subscription to $all resumed", "position", last.String())
			}
			retry.Reset()
		})
		if stop := (*stopError)(nil); errors.As(err, &stop) {
			return stop.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errClosed) {
			return fmt.Errorf("subscribe to $all: %w", err)
		}
		if !dropped {
			dropped = true
			s.log.Warn("subscription to $all dropped; resubscribing", "position", last.String(), "err", err)
		}
		if err := retry.Wait(ctx); err != nil {
			return err
		}
	}
}

// subscribeOnce subscribes from *last and delivers events to handle until the subscription drops,
// advancing *last past every event it receives. It calls live once the subscription has caught up or
// delivered an event.
func (s *Store) subscribeOnce(ctx context.Context, last *events.Position, handle func(context.Context, eventstore.RecordedEvent) error, live func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the subscription, even one whose start came too late
	opts := esdb.SubscribeToAllOptions{From: allPosition(*last), Filter: s.filter()}
	start, cancelStart := context.WithTimeout(ctx, s.opts.Timeout)
	sub, err := withClient(start, s, func(c *esdb.Client) (*esdb.Subscription, error) {
		return c.SubscribeToAll(ctx, opts) // the subscription lives on ctx; only the wait is bounded
	})
	cancelStart()
	if err != nil {
		err = fmt.Errorf("subscribe to $all from %s: %w", *last, err)
		if permanent(err) {
			return &stopError{err}
		}
		return err
	}
	defer sub.Close()
	for {
		ev := sub.Recv()
		switch {
		case ev.SubscriptionDropped != nil:
			return fmt.Errorf("subscription to $all dropped: %w", ev.SubscriptionDropped.Error)
		case ev.CaughtUp != nil:
			live()
		case ev.EventAppeared != nil:
			re := ev.EventAppeared.OriginalEvent()
			if re == nil {
				continue
			}
			p := position(re)
			if !last.Less(p) {
				continue // delivered before the subscription dropped
			}
			if s.visible(re) {
				e, err := s.decode(re)
				if err != nil {
					return &stopError{fmt.Errorf("subscribe to $all: %w", err)}
				}
				if err := handle(ctx, e); err != nil {
					return &stopError{err}
				}
				live()
			}
			*last = p
		}
		// Checkpoints are skipped: resubscribing from one could skip the event right after it.
	}
}

// filter is the subscription's server-side filter: the stream prefix, or no system events.
func (s *Store) filter() *esdb.SubscriptionFilter {
	if s.opts.StreamPrefix != "" {
		return &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{s.opts.StreamPrefix}}
	}
	return esdb.ExcludeSystemEventsFilter()
}

// visible reports whether re belongs to the store's global log: not a system event (type or stream
// starting with '$', which includes the event-id claims), and in a stream with the store's prefix.
func (s *Store) visible(re *esdb.RecordedEvent) bool {
	return !strings.HasPrefix(re.EventType, "$") && !strings.HasPrefix(re.StreamID, "$") &&
		strings.HasPrefix(re.StreamID, s.opts.StreamPrefix)
}

func (s *Store) decode(re *esdb.RecordedEvent) (eventstore.RecordedEvent, error) {
	var md metadata
	if len(re.UserMetadata) > 0 {
		if err := json.Unmarshal(re.UserMetadata, &md); err != nil {
			return eventstore.RecordedEvent{}, fmt.Errorf("event %s of %s: decode metadata: %w", re.EventID, re.StreamID, err)
		}
	}
	return eventstore.RecordedEvent{
		ID:            re.EventID.String(),
		Stream:        strings.TrimPrefix(re.StreamID, s.opts.StreamPrefix),
		Version:       re.EventNumber + 1,
		Position:      position(re),
		Type:          re.EventType,
		SchemaVersion: md.SchemaVersion,
		Data:          re.Data,
		Metadata:      md.Metadata,
		OccurredAt:    md.OccurredAt,
		RecordedAt:    re.CreatedDate,
	}, nil
}

// position returns re's $all position; zero if the server did not report one, which older servers
// do on stream reads (they send the maximum value).
func position(re *esdb.RecordedEvent) events.Position {
	if re.Position.Commit == math.MaxUint64 {
		return events.Position{}
	}
	return events.Position{Commit: re.Position.Commit, Prepare: re.Position.Prepare}
}

func allPosition(p events.Position) esdb.AllPosition {
	if p == events.Start {
		return esdb.Start{}
	}
	return esdb.Position{Commit: p.Commit, Prepare: p.Prepare}
}
