package broker_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/natstest"
)

// TestEmbeddedServerHoldsItsStore: a second server on the same JetStream files is refused while the
// first runs (both would rewrite the stream's index files), and starts once the first has stopped.
func TestEmbeddedServerHoldsItsStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "jetstream")
	log := slog.New(slog.DiscardHandler)
	first, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: dir, Port: natstest.FreePort(t)}, log)
	require.NoError(t, err)
	_, err = broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: dir, Port: natstest.FreePort(t)}, log)
	require.ErrorContains(t, err, "in use by another strata process")

	first.Shutdown()
	again, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: dir, Port: natstest.FreePort(t)}, log)
	require.NoError(t, err)
	again.Shutdown()
}

// TestPartitionsAreStoredInTheSubject: a partitioned stream stores <prefix>.<type>.<id> as
// <prefix>.<n>.<type>.<id>; once it holds messages its partitioning can no longer change, because
// consumers of the new partitions would never read them.
func TestPartitionsAreStoredInTheSubject(t *testing.T) {
	js, err := jetstream.New(natstest.Start(t).Connect(t))
	require.NoError(t, err)
	cfg := broker.StreamConfig{Name: "EVENTS", SubjectPrefix: "strata", Duplicates: time.Minute, Partitions: 4}
	_, err = broker.EnsureStream(t.Context(), js, broker.StreamConfig{Name: "EVENTS", SubjectPrefix: "strata", Duplicates: time.Minute, Partitions: 8})
	require.NoError(t, err)
	s, err := broker.EnsureStream(t.Context(), js, cfg) // an empty stream may change
	require.NoError(t, err)

	_, err = js.Publish(t.Context(), "strata.product.4bf5a5b0-0b0c-4b8e-9d2a-3f2f1c0e7a11", []byte("{}"))
	require.NoError(t, err)
	msg, err := s.GetMsg(t.Context(), 1)
	require.NoError(t, err)
	parts := strings.Split(msg.Subject, ".")
	require.Len(t, parts, 4, msg.Subject)
	require.Equal(t, "strata", parts[0])
	require.Contains(t, []string{"0", "1", "2", "3"}, parts[1])
	require.Equal(t, []string{"product", "4bf5a5b0-0b0c-4b8e-9d2a-3f2f1c0e7a11"}, parts[2:])

	_, err = broker.EnsureStream(t.Context(), js, cfg)
	require.NoError(t, err, "the same partitioning")
	cfg.Partitions = 8
	_, err = broker.EnsureStream(t.Context(), js, cfg)
	require.ErrorContains(t, err, "NATS_PARTITIONS=8")
	cfg.Partitions = 0
	_, err = broker.EnsureStream(t.Context(), js, cfg)
	require.ErrorContains(t, err, "NATS_PARTITIONS=0")
}
