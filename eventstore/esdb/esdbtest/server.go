// Package esdbtest is an in-process stand-in for EventStoreDB's gRPC API, for tests only. No
// EventStoreDB server can run on CI machines, so the EventStoreDB adapter (eventstore/esdb), and
// anything built on it, runs its tests against this stand-in instead; a real server (ESDB_URL) remains
// the reference. Production code must never import this package.
//
// It is not EventStoreDB. It keeps everything in memory, serves a single node over plain-text gRPC
// without authentication, and implements what the Go client (EventStore-Client-Go v4) calls for the
// event store port, following the server's own code (KurrentDB, formerly EventStoreDB, 23.x–24.x):
//
//   - Appends follow the server's commit check. An expected revision or no_stream must match the
//     stream's current revision, with the server's idempotency: when it is below the current revision
//     and the appended event ids are those stored right after it, the append is acknowledged again
//     with the original revision and position; when only the first ones match, it is a wrong expected
//     version. With any (or stream_exists) the append is idempotent when every event id was appended to
//     the same stream before, and a wrong expected version when the first was and a later one was not;
//     when the first was not, everything is appended, even ids stored before. The maximum append size
//     (1 MiB by default) counts data, metadata and twice the length of the event type, as the server
//     does. Events may have any type, including ones starting with '$'.
//   - Every event has its own $all position, commit == prepare, growing with the size of the record,
//     as for events appended outside explicit transactions; an append returns the position of its last
//     event. Appends are serialised, so $all order is append order, and every stream's revisions grow
//     in $all order. Stream reads report each event's $all position, as servers since 22.x do.
//   - Stream reads go forwards or backwards from a revision, the start or the end, up to a count. A
//     stream that was never written reads as stream_not_found; a tombstoned stream fails with the
//     stream-deleted exception, as does appending to it.
//   - $all reads go forwards from a position (inclusive: the event at that position comes first) or
//     backwards (exclusive), with the server-side filters on stream name or event type (prefixes or
//     a regular expression; RE2 syntax here, .NET syntax on the server).
//   - Subscriptions to $all send a confirmation, then the events after the start position (the event
//     at that position is skipped: a position names the last event seen), checkpoints when filtered
//     (every checkpointIntervalMultiplier × search window events considered), caught_up once the
//     backlog is sent, then live events. [Server.DropSubscriptions] ends them as a server restart
//     would.
//   - Tombstone deletes a stream for good and writes a $streamDeleted record to $all.
//   - Server features report version 24.10.0 and the methods above: the client asks on connect.
//
// It does not do: TLS, authentication or ACLs, clusters and gossip, soft delete (Delete), stream
// metadata ($$ streams, $maxAge, truncate-before), stream subscriptions, persistent subscriptions,
// projections, batch appends, link events, explicit transactions, scavenging, the bounded size of the
// server's event-id cache (its idempotency for any never forgets), rejection of $all positions
// between events (reads start at the next event), and dropping slow subscribers (a subscription waits
// for its reader). It reports the maximum append size exceeded after reading the whole request.
package esdbtest

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
)

// DefaultMaxAppendSize is EventStoreDB's default maximum append size (--max-append-size), 1 MiB.
const DefaultMaxAppendSize = 1 << 20

// Options configure a [Server]. The zero value is usable.
type Options struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:0", a free loopback port.
	Addr string
	// MaxAppendSize is the largest append accepted, counted as the server does. Default
	// [DefaultMaxAppendSize].
	MaxAppendSize int
}

// Server is a running stand-in. Its data lives as long as the Server: [Server.Stop] and
// [Server.Restart] keep it, like a server restart that keeps its database.
type Server struct {
	opts Options
	addr string
	db   *db

	mu   sync.Mutex
	grpc *grpc.Server
	done chan struct{} // closed when the current Serve returns
}

// New starts a stand-in listening on opts.Addr. It fails if the address cannot be listened on.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.MaxAppendSize <= 0 {
		opts.MaxAppendSize = DefaultMaxAppendSize
	}
	s := &Server{opts: opts, db: newDB(opts.MaxAppendSize)}
	lis, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("esdbtest: listen on %s: %w", opts.Addr, err)
	}
	s.addr = lis.Addr().String()
	s.serve(lis)
	return s, nil
}

// Start starts a stand-in on a free loopback port for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Addr returns the address the server listens on, as host:port.
func (s *Server) Addr() string { return s.addr }

// URL returns the connection string for the server: esdb://host:port?tls=false.
func (s *Server) URL() string { return "esdb://" + s.addr + "?tls=false" }

func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer()
	streams.RegisterStreamsServer(g, &streamsService{db: s.db})
	serverfeatures.RegisterServerFeaturesServer(g, featuresService{})
	done := make(chan struct{})
	s.mu.Lock()
	s.grpc, s.done = g, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = g.Serve(lis) // returns when Stop closes the listener
	}()
}

// Stop stops serving: it closes the listener and every connection, which ends every call in flight,
// as a crashed server would. The data is kept for [Server.Restart]. Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	g, done := s.grpc, s.done
	s.grpc = nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	s.db.dropSubscriptions()
	g.Stop()
	<-done
}

// Restart serves again on the same address, with the data the server had when it stopped. It stops
// the server first if it is running. It fails if the address was taken in the meantime.
func (s *Server) Restart() error {
	s.Stop()
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("esdbtest: listen again on %s: %w", s.addr, err)
	}
	s.serve(lis)
	return nil
}

// DropSubscriptions ends every active $all subscription with an UNAVAILABLE status, as a server
// restart or a dropped connection would, and returns how many it ended. The client does not
// resubscribe by itself.
func (s *Server) DropSubscriptions() int { return s.db.dropSubscriptions() }

// Subscriptions returns how many $all subscriptions the server has confirmed since it was created.
func (s *Server) Subscriptions() int {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	return s.db.subscriptions
}

// ExpectedRevisions returns the expected revision of every append to stream, in arrival order, as
// it came over the wire: "any", "no_stream", "stream_exists" or the revision in decimal.
func (s *Server) ExpectedRevisions(stream string) []string {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	return append([]string(nil), s.db.expected[stream]...)
}
