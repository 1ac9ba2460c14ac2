// Package natstest runs in-process NATS servers with JetStream for tests, on loopback, with storage
// in the test's temporary directory.
package natstest

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-dev/strata/internal/broker"
)

// Server is a restartable embedded server: Restart keeps its port and its JetStream files.
type Server struct {
	t   testing.TB
	cfg broker.EmbeddedConfig
	*broker.Embedded
}

// Start starts a server with JetStream on a free loopback port, shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, cfg: broker.EmbeddedConfig{StoreDir: filepath.Join(t.TempDir(), "jetstream"), Port: FreePort(t)}}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	ns, err := broker.StartEmbedded(s.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	s.Embedded = ns
}

// Stop shuts the server down and waits for it. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.Embedded != nil {
		s.Shutdown()
		s.Embedded = nil
	}
}

// Restart starts a stopped server again on the same port with the same files.
func (s *Server) Restart() { s.start() }

// URL is the server's client URL; it stays the same across restarts.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.cfg.Port) }

// Connect returns a client connection that reconnects forever, closed when the test ends.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	return ConnectURL(t, s.URL())
}

// ConnectURL connects to urls (comma-separated) like broker.Connect, closed when the test ends.
func ConnectURL(t testing.TB, urls string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(64<<20))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
