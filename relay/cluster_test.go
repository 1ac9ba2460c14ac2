package relay_test

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/syncbuf"
	"github.com/strata-dev/strata/relay"
	"github.com/strata-dev/strata/relay/relaytest"
)

// TestRelaySurvivesClusterNodeLoss relays into a stream with three replicas on a three-node JetStream
// cluster, and shuts down the node that leads the stream during the load.
func TestRelaySurvivesClusterNodeLoss(t *testing.T) {
	t.Parallel()
	store, pool, _ := newStore(t)
	nodes, urls := startCluster(t, 3)
	js := jetStream(t, natstest.ConnectURL(t, strings.Join(urls, ",")))
	ensureClusterStream(t, js, streamName, "strata")

	log := testLogger(t)
	nc, err := broker.Connect(t.Context(), broker.ConnectConfig{URLs: urls, Name: "relay"}, log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	reg := prometheus.NewRegistry()
	// Publishes that the lost leader took are never acknowledged: a short ack timeout keeps the test
	// short. Where the connection itself breaks, the relay notices at once.
	r, err := relay.New(store, pool, nc, relay.Config{Stream: streamName, SubjectPrefix: "strata", AckTimeout: 2 * time.Second}, log, reg)
	require.NoError(t, err)
	run(t, r)
	ld := startLoad(t, store, names(20), 2000)

	relaytest.WaitForAll(t, js, streamName, 1+rand.Uint64N(3000), 60*time.Second)
	s, err := js.Stream(t.Context(), streamName)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.NotNil(t, info.Cluster)
	leader := info.Cluster.Leader
	var lost *server.Server
	for _, n := range nodes {
		if n.Name() == leader {
			lost = n
		}
	}
	require.NotNil(t, lost, "stream leader %q is one of the nodes", leader)
	lost.Shutdown()
	lost.WaitForShutdown()
	t.Logf("shut down %s, the stream leader, at %d messages", leader, info.State.Msgs)

	// The relay carries on through a new stream leader.
	relaytest.WaitForAll(t, js, streamName, messages(t, js, streamName)+1+rand.Uint64N(2000), 60*time.Second)
	ld.finish()

	requireCopyOfAll(t, js, streamName, store, 60*time.Second)
	info, err = s.Info(t.Context())
	require.NoError(t, err)
	t.Logf("stream leader now %s; relay restarts: %v", info.Cluster.Leader, counter(t, reg, "strata_relay_restarts_total"))
}

// TestClusterStreamRefusesOutOfOrderPublish checks what the relay relies on to keep order on a
// cluster: a publish whose Nats-Expected-Last-Sequence does not match is refused, and the stream goes
// on. (A mismatched Nats-Expected-Last-Msg-Id is not: nats-server 2.15.2 checks it only when the
// replicas apply the message, and the mismatch stops the stream on every replica.)
func TestClusterStreamRefusesOutOfOrderPublish(t *testing.T) {
	t.Parallel()
	_, urls := startCluster(t, 3)
	js := jetStream(t, natstest.ConnectURL(t, strings.Join(urls, ",")))
	ensureClusterStream(t, js, "ORDER", "order")
	publish := func(id string, expectLast uint64) error {
		m := nats.NewMsg("order.x")
		m.Header.Set(nats.MsgIdHdr, id)
		_, err := js.PublishMsg(t.Context(), m, jetstream.WithExpectLastSequence(expectLast))
		return err
	}
	require.NoError(t, publish("a", 0))
	require.NoError(t, publish("b", 1))
	var apiErr *jetstream.APIError
	require.ErrorAs(t, publish("c", 1), &apiErr, "b is stored at 2")
	require.Contains(t, []jetstream.ErrorCode{jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant}, apiErr.ErrorCode)
	require.NoError(t, publish("c", 2), "the stream goes on after refusing a message")
	require.Equal(t, uint64(3), messages(t, js, "ORDER"))
}

// startCluster starts n embedded JetStream servers on loopback that form one cluster, each with its
// own client port, route port and files, and waits until the cluster has a JetStream meta leader. It
// returns the servers and their client URLs. The servers' warnings and errors are logged if the test
// fails.
func startCluster(t *testing.T, n int) ([]*server.Server, []string) {
	t.Helper()
	clientPorts, routePorts, routes := make([]int, n), make([]int, n), make([]string, n)
	for i := range n {
		clientPorts[i], routePorts[i] = natstest.FreePort(t), natstest.FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i])
	}
	var out syncbuf.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", out.String())
		}
	})
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := t.TempDir()
	nodes, urls := make([]*server.Server, n), make([]string, n)
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		ns, err := broker.StartEmbedded(broker.EmbeddedConfig{
			StoreDir:   filepath.Join(dir, name),
			Port:       clientPorts[i],
			ServerName: name,
			Cluster:    &broker.ClusterConfig{Name: "strata-test", Port: routePorts[i], Routes: routes},
		}, log.With("node", name))
		require.NoError(t, err)
		t.Cleanup(ns.Shutdown)
		nodes[i], urls[i] = ns.Server, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i])
	}
	require.Eventually(t, func() bool {
		for _, ns := range nodes {
			if ns.JetStreamIsLeader() {
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "the cluster elects a JetStream meta leader")
	return nodes, urls
}

// ensureClusterStream creates a stream with three replicas. The first attempts can come before every
// peer has joined, so it retries.
func ensureClusterStream(t *testing.T, js jetstream.JetStream, name, prefix string) {
	t.Helper()
	var err error
	require.Eventually(t, func() bool {
		_, err = broker.EnsureStream(t.Context(), js, broker.StreamConfig{Name: name, SubjectPrefix: prefix, Replicas: 3, Duplicates: 2 * time.Minute})
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "create stream %s with three replicas: %v", name, err)
}

// testLogger logs to the test's output, which is shown when the test fails or runs with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// counter returns the value of the counter called name in reg.
func counter(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
