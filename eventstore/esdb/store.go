// Package esdb is the EventStoreDB adapter of the [eventstore.Store] port, strata's production event
// store, on the official Go client (github.com/EventStore/EventStore-Client-Go/v4).
//
// # Mapping
//
// A port stream is an EventStoreDB stream, named with [Options.StreamPrefix] in front. A version is
// a stream revision + 1, and an [events.Position] is the event's $all commit/prepare position.
// Expected versions map exactly: [eventstore.Any] to any, [eventstore.NoStream] to no_stream and
// Exact(n) to revision n-1; the client's default, any, is never left in place. An event's type is
// the EventStoreDB event type, its data is JSON, and its metadata, time of occurrence and schema
// version are the event's JSON metadata:
//
//	{"correlation_id":"…","causation_id":"…","idempotency_key":"…","occurred_at":"…","schema_version":1}
//
// Event ids are the port's UUIDs, always sent explicitly: the client would replace a nil id with a
// random one, which defeats the server's idempotency, so the nil UUID is refused like any non-UUID.
// Event types and stream names starting with '$' are refused too: EventStoreDB reserves them for its
// system events, which the global log skips.
//
// # Event ids are unique across the store
//
// EventStoreDB checks event ids only within a stream, at the revisions an append expects. The port
// wants more: an id may never be stored twice, and only an exact repeat of an earlier append is a
// no-op. So before an append, every event id is claimed by appending a claim event (type
// $strata.event-id, data {"stream": …}) to a stream of its own, <StreamPrefix>strata-event-id-<uuid>,
// expecting no stream. A claim that already exists names the stream the id was first appended to:
// another stream is [eventstore.ErrDuplicateEvent]; the same stream means the append may repeat an
// earlier one (or retry one that failed), which is settled by reading the stream, as the PostgreSQL
// adapter does. The claims of one append run in parallel; they cost one small append per event.
// Claims are system events ('$' type), which ReadAll and Subscribe skip.
//
// # The global log
//
// ReadAll reads $all forwards from the position, skips the event at that position (EventStoreDB reads
// from a position inclusively), and skips system events, claims and, with a StreamPrefix, other
// streams. The client has no server-side filter for reads, so the filtering is done here, reading
// pages until enough events are found or $all ends. EventStoreDB writes one append at a time, in one
// log, and returns only committed events: an event can never appear before one already read.
//
// Subscribe runs a catch-up subscription to $all from the position, with a server-side filter
// (the stream prefix when there is one, otherwise the exclusion of system events). The client never
// resubscribes: when the subscription drops, Subscribe subscribes again from the last event it
// delivered, after a capped backoff, until ctx ends or handle fails. Refusals that a retry cannot
// cure (credentials, access, an invalid position) end it, as does an event in a visible stream whose
// metadata is not JSON.
//
// # Connections
//
// The client connects lazily, and a client whose discovery fails (the server is down) closes itself
// for good. The Store replaces such a client with a new one and retries the call once. [Open] waits
// for the server: it retries, with capped backoff, until a read succeeds or ctx ends, so give it a
// deadline. Every call runs under [Options.Timeout] on a goroutine of its own, because the client can
// block a caller without regard to its context when discovery fails while calls queue.
//
// # Requirements and limits
//
// A server that reports $all positions on stream reads (EventStoreDB 22.6 or later), and credentials
// that may read $all (by default only admins may). The Store does not implement
// [eventstore.Counter]: counting the events after a position would mean reading $all.
package esdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/backoff"
)

// DefaultMaxAppendSize is EventStoreDB's default limit on one append (--max-append-size), 1 MiB.
const DefaultMaxAppendSize = 1 << 20

// Options tune a [Store]. The zero value is usable.
type Options struct {
	// StreamPrefix is put in front of every stream name the store writes or reads, and limits ReadAll
	// and Subscribe to streams starting with it. Stores with different prefixes share a database
	// without seeing each other's events (tests against one server do). Default "": the whole
	// database.
	StreamPrefix string
	// MaxAppendSize is the server's limit on one append, which Append checks before sending: data,
	// metadata and twice the event type's length, over all events. Default [DefaultMaxAppendSize].
	MaxAppendSize int
	// Timeout bounds every call to the server: one append, one read, the start of a subscription.
	// Default 10s.
	Timeout time.Duration
	// Logger receives one line per state change (server unreachable, client replaced, subscription
	// dropped and resumed), and the client's own messages at debug level. Default: discard.
	Logger *slog.Logger
}

// Store is the EventStoreDB event store. It is safe for concurrent use.
type Store struct {
	cfg    *esdb.Configuration
	opts   Options
	log    *slog.Logger
	target string // the server's address, for messages; never the credentials

	mu     sync.Mutex
	conn   *conn
	closed bool
}

// conn is a client and the calls in flight on it.
type conn struct {
	client *esdb.Client
	calls  sync.WaitGroup
}

var _ eventstore.Store = (*Store)(nil)

// errClosed is returned by calls on a closed store.
var errClosed = errors.New("eventstoredb store is closed")

// Open connects to the EventStoreDB server named by a connection string such as
// esdb://admin:changeit@localhost:2113?tls=false, and waits until it answers: it retries with capped
// backoff until a read succeeds or ctx ends, so give ctx a deadline. It fails at once on a malformed
// connection string or refused credentials.
func Open(ctx context.Context, connectionString string, opts Options) (*Store, error) {
	cfg, err := esdb.ParseConnectionString(connectionString)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // url.Error repeats the string, password included
		}
		return nil, fmt.Errorf("open eventstoredb: parse connection string: %w", err)
	}
	if opts.MaxAppendSize <= 0 {
		opts.MaxAppendSize = DefaultMaxAppendSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, opts: opts, log: opts.Logger.With("component", "eventstore"), target: target(cfg)}
	clientLog := opts.Logger.With("component", "eventstoredb-client")
	cfg.Logger = func(level esdb.LogLevel, format string, args ...any) {
		clientLog.Debug(fmt.Sprintf(format, args...), "client_level", level)
	}
	c, err := esdb.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("open eventstoredb at %s: %w", s.target, err)
	}
	s.conn = &conn{client: c}

	retry := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		err := s.ping(ctx)
		if err == nil {
			if retry.Attempt() > 0 {
				s.log.Info("eventstoredb reachable", "target", s.target)
			}
			return s, nil
		}
		if permanent(err) {
			s.Close()
			return nil, fmt.Errorf("open eventstoredb at %s: %w", s.target, err)
		}
		if retry.Attempt() == 0 {
			s.log.Warn("eventstoredb not reachable; retrying until the context ends", "target", s.target, "err", err)
		}
		if werr := retry.Wait(ctx); werr != nil || ctx.Err() != nil {
			s.Close()
			if !errors.Is(err, ctx.Err()) {
				err = errors.Join(ctx.Err(), err)
			}
			return nil, fmt.Errorf("open eventstoredb at %s: %w", s.target, err)
		}
	}
}

func target(cfg *esdb.Configuration) string {
	if cfg.Address != "" {
		return cfg.Address
	}
	seeds := make([]string, len(cfg.GossipSeeds))
	for i, e := range cfg.GossipSeeds {
		seeds[i] = e.String()
	}
	return strings.Join(seeds, ",")
}

// ping reads the last event of a stream that need not exist, which makes the client connect.
func (s *Store) ping(ctx context.Context) error {
	_, err := s.lastVersion(ctx, s.opts.StreamPrefix+"strata-connection-check")
	if errors.Is(err, eventstore.ErrStreamDeleted) {
		return nil // the server answered
	}
	return err
}

// Close stops the store: calls made after it fail. The client closes once the calls in flight have
// returned (they are bounded by [Options.Timeout]); then running subscriptions end with an error.
// Close does not wait for that: the client closes a channel that calls in flight may still send on.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	cn := s.conn
	s.mu.Unlock()
	go func() {
		cn.calls.Wait()
		_ = cn.client.Close()
	}()
}

// acquire returns the current client, counting a call on it; the caller must call calls.Done.
func (s *Store) acquire() (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	s.conn.calls.Add(1)
	return s.conn, nil
}

// replace swaps old, whose client closed itself, for a new client, unless that happened already.
func (s *Store) replace(old *conn) {
	s.mu.Lock()
	if s.closed || s.conn != old {
		s.mu.Unlock()
		return
	}
	c, err := esdb.NewClient(s.cfg) // fails only on a configuration that Open already accepted
	if err != nil {
		s.mu.Unlock()
		s.log.Error("replace eventstoredb client", "target", s.target, "err", err)
		return
	}
	s.conn = &conn{client: c}
	s.mu.Unlock()
	s.log.Warn("eventstoredb client gave up connecting and closed itself; replaced it", "target", s.target)
	// The old client is dropped, not closed: its connection goroutine has exited, and Close would only
	// close the channel that calls still queued on it are sending on (see wait).
}

// call runs op on the current client with a deadline of [Options.Timeout] (see withClient).
func call[T any](ctx context.Context, s *Store, op func(context.Context, *esdb.Client) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	return withClient(ctx, s, func(c *esdb.Client) (T, error) { return op(ctx, c) })
}

// withClient runs op on the current client and waits for it until ctx ends. If the client has
// closed itself, because its discovery failed, it is replaced and op runs once more on the new one:
// nothing was sent to the server, so even an append is safe to run again.
func withClient[T any](ctx context.Context, s *Store, op func(*esdb.Client) (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		cn, err := s.acquire()
		if err != nil {
			var zero T
			return zero, err
		}
		v, err := wait(ctx, func() (T, error) {
			defer cn.calls.Done()
			return op(cn.client)
		})
		if attempt == 1 && hasCode(err, esdb.ErrorCodeConnectionClosed) && ctx.Err() == nil {
			s.replace(cn)
			continue
		}
		return v, err
	}
}

// wait runs op on a goroutine of its own and returns its result, or ctx's error as soon as ctx ends.
// The client hands out connections through a channel that its connection goroutine stops reading
// when discovery fails: a call queued behind the failing discovery blocks for good, whatever its
// context says. Running op apart keeps the caller free; the blocked goroutine is leaked. A panic in
// the client becomes an error.
func wait[T any](ctx context.Context, op func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("eventstoredb client: %v", r)}
			}
		}()
		v, err := op()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// permanent reports whether err is a refusal that retrying cannot cure: credentials, access rights,
// or an invalid argument (such as a $all position that names no event).
func permanent(err error) bool {
	var st interface{ GRPCStatus() *status.Status }
	return hasCode(err, esdb.ErrorCodeUnauthenticated) || hasCode(err, esdb.ErrorCodeAccessDenied) ||
		errors.As(err, &st) && st.GRPCStatus().Code() == codes.InvalidArgument
}

// hasCode reports whether err carries a client error with code, wrapped or not. The client's own
// esdb.FromError misses wrapped errors.
func hasCode(err error, code esdb.ErrorCode) bool {
	var e *esdb.Error
	return errors.As(err, &e) && e.Code() == code
}
