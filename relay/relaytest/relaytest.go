// Package relaytest checks what a relay left in JetStream against the event store it relayed.
package relaytest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/relay"
)

// ReadStream returns every message of the JetStream stream, in stream order, decoded.
func ReadStream(ctx context.Context, js jetstream.JetStream, name string) ([]eventstore.RecordedEvent, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]eventstore.RecordedEvent, 0, info.State.Msgs)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", seq, err)
		}
		e, err := relay.Decode(m.Header, m.Data)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", seq, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// ReadLog returns the store's whole global log.
func ReadLog(ctx context.Context, store eventstore.Store) ([]eventstore.RecordedEvent, error) {
	var all []eventstore.RecordedEvent
	from := events.Start
	for {
		batch, err := store.ReadAll(ctx, from, 4096)
		if err != nil {
			return nil, err
		}
		if len(batch) == 0 {
			return all, nil
		}
		all = append(all, batch...)
		from = batch[len(batch)-1].Position
	}
}

// WaitForAll polls until the JetStream stream holds at least n messages, or fails the test after
// timeout. It polls often, so that the moment it returns follows the relay's progress closely.
func WaitForAll(t testing.TB, js jetstream.JetStream, name string, n uint64, timeout time.Duration) {
	t.Helper()
	var got uint64
	require.Eventually(t, func() bool {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			return false
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return false
		}
		got = info.State.Msgs
		return got >= n
	}, timeout, 2*time.Millisecond, "JetStream stream %s should hold %d messages", name, n)
}

// RequireExactCopy fails the test unless the JetStream stream holds every event of the store's
// global log exactly once (counted by message id), in the store's order, with each event's stream,
// version and data intact.
func RequireExactCopy(t testing.TB, js jetstream.JetStream, name string, store eventstore.Store) {
	t.Helper()
	ctx := t.Context()
	log, err := ReadLog(ctx, store)
	if err != nil {
		t.Fatalf("read store: %v", err)
	}
	msgs, err := ReadStream(ctx, js, name)
	if err != nil {
		t.Fatalf("read JetStream: %v", err)
	}
	seen := make(map[string]int, len(msgs))
	for _, m := range msgs {
		seen[m.ID]++
	}
	var missing, duplicated int
	for _, e := range log {
		switch seen[e.ID] {
		case 0:
			missing++
		case 1:
		default:
			duplicated++
		}
	}
	if missing > 0 || duplicated > 0 || len(msgs) != len(log) {
		t.Fatalf("JetStream holds %d messages for %d events: %d missing, %d duplicated", len(msgs), len(log), missing, duplicated)
	}
	for i := range log {
		want, got := log[i], msgs[i]
		if got.ID != want.ID || got.Stream != want.Stream || got.Version != want.Version || got.Position != want.Position || string(got.Data) != string(want.Data) {
			t.Fatalf("message %d is %s %s@%d (%s), want %s %s@%d (%s): JetStream order differs from the store's",
				i+1, got.ID, got.Stream, got.Version, got.Position, want.ID, want.Stream, want.Version, want.Position)
		}
	}
}
