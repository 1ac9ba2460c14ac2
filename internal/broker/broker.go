// Package broker connects strata to NATS JetStream: it starts the embedded server strata runs when no
// NATS_URL is given, connects to an external server or cluster, and provisions the events stream.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	// StoreDir holds JetStream's files; it survives restarts.
	StoreDir string
	// Host and Port to listen on. Host defaults to 127.0.0.1: the embedded server is never reachable
	// from other machines. Port -1 picks a free port.
	Host string
	Port int
	// ServerName names the server; cluster members need distinct names.
	ServerName string
	// SyncInterval is how often JetStream fsyncs its files; zero keeps the server's default (two
	// minutes). SyncAlways fsyncs every write. See ARCHITECTURE.md on what either costs and protects.
	SyncInterval time.Duration
	SyncAlways   bool
	// Cluster, when set, makes the server a member of a JetStream cluster on loopback.
	Cluster *ClusterConfig
}

// ClusterConfig joins an embedded server to a cluster.
type ClusterConfig struct {
	Name string
	// Port is this member's route port; Routes are every member's route URLs (nats-route://host:port).
	Port   int
	Routes []string
}

// Embedded is an in-process NATS server that holds its store directory: no other process (or
// server in this process) can start on the same JetStream files while it runs. Two servers on one
// store each rewrite the other's index files, which corrupts the stream.
type Embedded struct {
	*server.Server
	lock *os.File
}

// Shutdown stops the server, waits until it has stopped, and releases its store directory.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
	if e.lock != nil {
		_ = e.lock.Close() // closing the file releases the lock
		e.lock = nil
	}
}

// StartEmbedded starts an in-process NATS server with JetStream and waits until it accepts
// connections. It fails at once when another server holds cfg.StoreDir. The caller stops it with
// Shutdown.
func StartEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: a store directory is required")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	lock, err := lockDir(cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	ns, err := startEmbedded(cfg, log)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	return &Embedded{Server: ns, lock: lock}, nil
}

// lockDir takes an exclusive lock on dir's lock file, without waiting.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "strata.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("embedded nats: %s is in use by another strata process (or another embedded server): stop it, or set STRATA_DATA_DIR", dir)
		}
		return nil, fmt.Errorf("embedded nats: lock %s: %w", path, err)
	}
	return f, nil
}

func startEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*server.Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName:   cfg.ServerName,
		Host:         cfg.Host,
		Port:         cfg.Port,
		JetStream:    true,
		StoreDir:     filepath.Clean(cfg.StoreDir),
		SyncInterval: cfg.SyncInterval,
		SyncAlways:   cfg.SyncAlways,
		NoSigs:       true,
		MaxPayload:   8 << 20,
	}
	if cfg.Cluster != nil {
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster.Name, Host: cfg.Host, Port: cfg.Cluster.Port}
		for _, r := range cfg.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embedded nats: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(slogAdapter{log.With("component", "nats-server")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready for connections after 30s")
	}
	return ns, nil
}

// ConnectConfig says how to reach NATS.
type ConnectConfig struct {
	// URLs of the servers, comma-separated or one per element.
	URLs []string
	// Name identifies the client in server monitoring.
	Name string
	// CredsFile is a NATS credentials file (JWT and nkey), if the servers need one.
	CredsFile string
	// TLS: a CA bundle to verify servers with, and a client certificate and key, all optional.
	TLSCA, TLSCert, TLSKey string
	// InProcess, when set, is a server in this process to connect to in memory, rather than over a
	// socket: every message, acknowledgement and delivery then costs no system call.
	InProcess nats.InProcessConnProvider
}

// Connect connects to NATS and keeps reconnecting forever, with backoff, for the life of the
// connection. The first connection attempt is retried too, until ctx ends. State changes
// (disconnected, reconnected, closed) are logged once each.
func Connect(ctx context.Context, cfg ConnectConfig, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return min(time.Duration(attempts)*250*time.Millisecond, 5*time.Second)
		}),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected; reconnecting", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Info("nats connection closed") }),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess))
	}
	if cfg.TLSCA != "" || cfg.TLSCert != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	servers := strings.Join(cfg.URLs, ",")
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(servers, opts...)
		if err == nil {
			return nc, nil
		}
		if attempt == 1 {
			log.Warn("nats not reachable; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt)*250*time.Millisecond, 5*time.Second)):
		}
	}
}

func tlsConfig(cfg ConnectConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("nats tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats tls ca %s: no certificates", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("nats tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// StreamConfig describes the events stream.
type StreamConfig struct {
	// Name of the stream, such as STRATA_EVENTS.
	Name string
	// SubjectPrefix: events go to <prefix>.<aggregate type>.<aggregate id>.
	SubjectPrefix string
	// Replicas: 1 on a single (embedded) server, 3 on a cluster.
	Replicas int
	// Duplicates is the window within which JetStream drops a repeated Nats-Msg-Id. It must be longer
	// than the longest relay restart. JetStream keeps one entry per message in the window, so memory
	// grows with rate × window.
	Duplicates time.Duration
	// MaxAge and MaxBytes bound retention; zero means unlimited. Rebuilds read history from the event
	// store, not from here, so the stream only needs to cover consumers' downtime.
	MaxAge   time.Duration
	MaxBytes int64
	// Partitions, when positive, makes JetStream insert a partition token in every stored subject:
	// <prefix>.<type>.<id> is stored as <prefix>.<n>.<type>.<id>, n = hash(id) mod Partitions, so
	// that consumers can share a projection by partition while each aggregate's events stay in one.
	// Publishers keep using <prefix>.<type>.<id>. The partition comes before the id so that a
	// consumer's filter (<prefix>.<n>.<type>.*) is matched against one partition's subjects, not
	// against every aggregate's. A stream that holds messages keeps its partitioning: changing it
	// would leave them in partitions no consumer reads.
	Partitions int
}

// EnsureStream creates the events stream, or updates it to cfg, at start-up.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	sc := jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "strata domain events, published by the relay in event store order",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.Replicas, 1),
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  cfg.Duplicates,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    orUnlimited(cfg.MaxBytes),
		MaxMsgs:     -1,
	}
	if cfg.Partitions > 0 {
		sc.SubjectTransform = &jetstream.SubjectTransformConfig{
			Source:      cfg.SubjectPrefix + ".*.*",
			Destination: fmt.Sprintf("%s.{{partition(%d,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", cfg.SubjectPrefix, cfg.Partitions),
		}
	}
	if s, err := js.Stream(ctx, cfg.Name); err == nil {
		info := s.CachedInfo()
		if info.State.Msgs > 0 && !sameTransform(info.Config.SubjectTransform, sc.SubjectTransform) {
			return nil, fmt.Errorf("stream %s holds %d messages partitioned otherwise than this strata with NATS_PARTITIONS=%d "+
				"would (stored as %s), which its projectors would never read. With the strata and NATS_PARTITIONS that wrote "+
				"them, stop the commands and let every projection catch up; then delete the stream (nats stream rm, or, "+
				"with the embedded server, its directory under STRATA_DATA_DIR): the relay goes on from its checkpoint and "+
				"the projectors from theirs", cfg.Name, info.State.Msgs, cfg.Partitions, describeTransform(info.Config.SubjectTransform))
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("provision stream %s: %w", cfg.Name, err)
	}
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

func sameTransform(a, b *jetstream.SubjectTransformConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func describeTransform(t *jetstream.SubjectTransformConfig) string {
	if t == nil {
		return "published, without partitions"
	}
	return t.Destination
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// slogAdapter sends the embedded server's log to slog.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
