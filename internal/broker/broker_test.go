package broker_test

import (
	"log/slog"
	"path/filepath"
	"testing"

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
