// Package postgres is the PostgreSQL adapter of the [eventstore.Store] port, strata's default event
// store.
//
// # Global order
//
// PostgreSQL sequences hand out numbers before commit, so rows become visible out of sequence order: a
// reader that tails by sequence alone and advances past a gap loses the event that commits late. This
// adapter orders the global log by (transaction id, sequence) and returns only rows whose transaction
// id is below the xmin of the reader's snapshot, so every transaction it returns rows of has ended, and
// any transaction still to commit has a larger id than all of them. A [events.Position] here is
// {Commit: transaction id, Prepare: sequence}.
//
// The price is latency, never loss: a long-running transaction anywhere in the cluster holds xmin back
// and delays tailing until it ends. Keep idle_in_transaction_session_timeout set in production.
//
// # Notifications
//
// Appends wake subscribers of the same process directly, and other processes through a NOTIFY that a
// background goroutine sends after the append has committed, coalescing bursts. The NOTIFY is kept out
// of the append's own transaction on purpose: PostgreSQL serialises the commits of notifying
// transactions on a global lock, which would undo group commit for concurrent writers. A fallback poll
// covers lost notifications and transactions that end without notifying (aborts, other clients).
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/migrations"
)

// Options tune a [Store]. The zero value is usable.
type Options struct {
	// Channel is the NOTIFY channel appends announce themselves on. Default "strata_events".
	Channel string
	// PollInterval is how often a subscription polls when no notification arrives. Default 500ms.
	PollInterval time.Duration
	// NotifyInterval is the least time between two NOTIFYs to other processes. Default 5ms.
	NotifyInterval time.Duration
	// BatchSize is how many events a subscription reads per query. Default 512.
	BatchSize int
	// Logger receives one line per state change of the notifier and listeners. Default: discard.
	Logger *slog.Logger
}

// Store is the PostgreSQL event store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger

	// wake is closed and replaced after every local append, waking local subscribers at once.
	mu   sync.Mutex
	wake chan struct{}

	notify chan struct{} // capacity 1: a pending cross-process NOTIFY
	stop   context.CancelFunc
	done   chan struct{}
}

var _ eventstore.Store = (*Store)(nil)

// Migrate creates or updates the event store schema in the database behind pool.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrations.Apply(ctx, pool, migrations.EventStore)
}

// New returns a store on pool, whose schema must be migrated (see [Migrate]). The store does not own
// pool: Close stops the store's goroutines but leaves pool open.
func New(pool *pgxpool.Pool, opts Options) *Store {
	if opts.Channel == "" {
		opts.Channel = "strata_events"
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.NotifyInterval <= 0 {
		opts.NotifyInterval = 5 * time.Millisecond
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 512
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		pool:   pool,
		opts:   opts,
		log:    opts.Logger.With("component", "eventstore"),
		wake:   make(chan struct{}),
		notify: make(chan struct{}, 1),
		stop:   cancel,
		done:   make(chan struct{}),
	}
	go s.notifyLoop(ctx)
	return s
}

// Close stops the background notifier. It does not close the pool.
func (s *Store) Close() {
	s.stop()
	<-s.done
}

const (
	codeUniqueViolation = "23505"
	constraintVersion   = "events_pkey"
	constraintEventID   = "events_event_id"
)

// appendSQL appends to one stream in a single statement, and that is what keeps the global order
// consistent with every stream's order without a lock. The statement's snapshot is taken before the
// transaction gets its id, which happens at the first inserted row. If an append sees another's
// events in max(version), the other committed before this snapshot, so it got its id earlier: the
// later version always has the larger transaction id. Two appends that compute the same version
// collide on the primary key, and the later one fails. The append must be its transaction's first
// write, which it is: it runs alone, in autocommit.
//
// Zero rows back means the version check failed; Append then finds out why. Event ids go as text:
// pgx cannot encode strings into uuid[] in binary and finds that out, at some cost, every time.
const appendSQL = `
	INSERT INTO events (event_id, stream_id, version, type, schema_version, data, metadata, occurred_at)
	SELECT x.id::uuid, $1, m.v + x.ord, x.type, x.sv, x.data, x.md, x.oc
	FROM (SELECT coalesce(max(e.version), 0) AS v FROM events e WHERE e.stream_id = $1) m,
	     unnest($3::text[], $4::text[], $5::int[], $6::json[], $7::json[], $8::timestamptz[])
	       WITH ORDINALITY AS x(id, type, sv, data, md, oc, ord)
	WHERE $2 < 0 OR m.v = $2
	ORDER BY x.ord
	RETURNING version, transaction_id::text, position`

// appendOneSQL is appendSQL for the most common append, a single event: the same statement with
// scalar parameters, without arrays, unnest and sort. One writer is latency-bound, and this path
// is what brings BenchmarkAppend/writers=1 above 0.8 of a raw INSERT's rate.
const appendOneSQL = `
	INSERT INTO events (event_id, stream_id, version, type, schema_version, data, metadata, occurred_at)
	SELECT $3::uuid, $1, m.v + 1, $4::text, $5::int, $6::json, $7::json, $8::timestamptz
	FROM (SELECT coalesce(max(e.version), 0) AS v FROM events e WHERE e.stream_id = $1) m
	WHERE $2 < 0 OR m.v = $2
	RETURNING version, transaction_id::text, position`

// appendArgs encodes an append's parameters for appendSQL, or appendOneSQL for one event.
func appendArgs(stream string, expected eventstore.ExpectedVersion, evs []eventstore.EventData) ([]any, error) {
	n := len(evs)
	ids := make([]string, n)
	types := make([]string, n)
	versions := make([]int32, n)
	data := make([]string, n)
	meta := make([]string, n)
	occurred := make([]time.Time, n)
	for i, e := range evs {
		md, err := json.Marshal(e.Metadata)
		if err != nil {
			return nil, fmt.Errorf("encode metadata: %w", err)
		}
		ids[i], types[i], versions[i], data[i], meta[i], occurred[i] = e.ID, e.Type, int32(e.SchemaVersion), string(e.Data), string(md), e.OccurredAt
	}
	exp := int64(-1)
	if v, ok := expected.Version(); ok {
		exp = int64(v)
	}
	if n == 1 {
		return []any{stream, exp, ids[0], types[0], versions[0], data[0], meta[0], occurred[0]}, nil
	}
	return []any{stream, exp, ids, types, versions, data, meta, occurred}, nil
}

func appendStatement(evs []eventstore.EventData) string {
	if len(evs) == 1 {
		return appendOneSQL
	}
	return appendSQL
}

// Append implements [eventstore.Store.Append] with one statement on the fast path. The slow paths,
// a failed version check or a stored event id, cost a second query to tell a retry of an earlier
// append from a conflict.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, evs []eventstore.EventData) (eventstore.AppendResult, error) {
	if err := validateAppend(stream, evs); err != nil {
		return eventstore.AppendResult{}, err
	}
	args, err := appendArgs(stream, expected, evs)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	// An append with any expected version retries when another append took its version first;
	// each retry sees that append, so this ends as soon as the stream is quiet for one statement.
	for attempt := 1; ; attempt++ {
		res, err := s.insert(ctx, stream, appendStatement(evs), args)
		if err == nil && res.LastVersion > 0 {
			s.announce()
			return res, nil
		}
		var pgErr *pgconn.PgError
		versionTaken := errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation && pgErr.ConstraintName == constraintVersion
		idTaken := errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation && pgErr.ConstraintName == constraintEventID
		if err != nil && !versionTaken && !idTaken {
			return eventstore.AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		// The version check failed, the version was taken, or an id is stored: first see whether
		// this is a repeat of an append that already happened.
		if dup, found, err := s.findRepeat(ctx, stream, evs); err != nil || found {
			return dup, err
		}
		if idTaken {
			return eventstore.AppendResult{}, fmt.Errorf("append to %s: %s: %w", stream, pgErr.Detail, eventstore.ErrDuplicateEvent)
		}
		if expected.IsAny() && attempt < 100 {
			continue
		}
		actual, err := s.version(ctx, stream)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		return eventstore.AppendResult{}, &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: actual}
	}
}

// insert runs an append statement. A zero LastVersion means nothing was inserted: the version check
// failed.
func (s *Store) insert(ctx context.Context, stream, sql string, args []any) (eventstore.AppendResult, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	defer rows.Close()
	res := eventstore.AppendResult{Stream: stream}
	var (
		version, prepare int64
		commit           string
	)
	for rows.Next() {
		if err := rows.Scan(&version, &commit, &prepare); err != nil {
			return eventstore.AppendResult{}, err
		}
		if res.FirstVersion == 0 {
			res.FirstVersion = uint64(version)
		}
		res.LastVersion = uint64(version)
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	if res.LastVersion == 0 {
		return res, nil
	}
	res.Position, err = position(commit, prepare)
	return res, err
}

// findRepeat reports whether evs are already stored, all of them, in stream, in order at
// consecutive versions, and if so returns the earlier append's result. Any other use of a stored id
// is [eventstore.ErrDuplicateEvent].
func (s *Store) findRepeat(ctx context.Context, stream string, evs []eventstore.EventData) (eventstore.AppendResult, bool, error) {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE e.event_id = ANY($1::text[]::uuid[]) ORDER BY e.stream_id, e.version`, ids)
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: look for a repeat: %w", stream, err)
	}
	stored, err := collect(rows)
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: look for a repeat: %w", stream, err)
	}
	if len(stored) == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	for i, e := range stored {
		if len(stored) != len(evs) || e.Stream != stream || e.ID != evs[i].ID || e.Version != stored[0].Version+uint64(i) {
			return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: event %s is already stored in %s at version %d: %w",
				stream, e.ID, e.Stream, e.Version, eventstore.ErrDuplicateEvent)
		}
	}
	last := stored[len(stored)-1]
	return eventstore.AppendResult{
		Stream: stream, FirstVersion: stored[0].Version, LastVersion: last.Version, Position: last.Position, Duplicate: true,
	}, true, nil
}

// version returns the stream's current version, 0 if it does not exist.
func (s *Store) version(ctx context.Context, stream string) (uint64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1`, stream).Scan(&v); err != nil {
		return 0, fmt.Errorf("append to %s: read version: %w", stream, err)
	}
	return uint64(v), nil
}

func validateAppend(stream string, evs []eventstore.EventData) error {
	if stream == "" {
		return fmt.Errorf("append: empty stream name: %w", eventstore.ErrInvalidAppend)
	}
	if len(evs) == 0 {
		return fmt.Errorf("append to %s: no events: %w", stream, eventstore.ErrInvalidAppend)
	}
	seen := make(map[string]struct{}, len(evs))
	for i, e := range evs {
		if _, err := uuid.Parse(e.ID); err != nil {
			return fmt.Errorf("append to %s: event %d: id %q is not a UUID: %w", stream, i, e.ID, eventstore.ErrInvalidAppend)
		}
		if _, dup := seen[e.ID]; dup {
			return fmt.Errorf("append to %s: event id %s given twice: %w", stream, e.ID, eventstore.ErrInvalidAppend)
		}
		seen[e.ID] = struct{}{}
		if e.Type == "" || !json.Valid(e.Data) {
			return fmt.Errorf("append to %s: event %s: needs a type and JSON data: %w", stream, e.ID, eventstore.ErrInvalidAppend)
		}
	}
	return nil
}

// ReadStream implements [eventstore.Store.ReadStream].
func (s *Store) ReadStream(ctx context.Context, stream string, fromVersion uint64, max int) ([]eventstore.RecordedEvent, error) {
	if fromVersion == 0 {
		fromVersion = 1
	}
	rows, err := s.pool.Query(ctx, selectEvents+`
		WHERE e.stream_id = $1 AND e.version >= $2
		ORDER BY e.version
		LIMIT $3`, stream, int64(fromVersion), max)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	evs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	return evs, nil
}

// ReadStreams implements [eventstore.StreamsReader]: one statement for all the streams.
func (s *Store) ReadStreams(ctx context.Context, after map[string]uint64, max int) (map[string][]eventstore.RecordedEvent, error) {
	if len(after) == 0 {
		return map[string][]eventstore.RecordedEvent{}, nil
	}
	streams := make([]string, 0, len(after))
	versions := make([]int64, 0, len(after))
	for stream, v := range after {
		streams = append(streams, stream)
		versions = append(versions, int64(v))
	}
	rows, err := s.pool.Query(ctx, selectEventColumns+`
		FROM unnest($1::text[], $2::bigint[]) AS s(stream, after)
		CROSS JOIN LATERAL (
			SELECT * FROM events
			WHERE stream_id = s.stream AND version > s.after
			ORDER BY version
			LIMIT $3) AS e
		ORDER BY e.stream_id, e.version`, streams, versions, max)
	if err != nil {
		return nil, fmt.Errorf("read %d streams: %w", len(after), err)
	}
	evs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("read %d streams: %w", len(after), err)
	}
	out := map[string][]eventstore.RecordedEvent{}
	for _, e := range evs {
		out[e.Stream] = append(out[e.Stream], e)
	}
	return out, nil
}

// ReadAll implements [eventstore.Store.ReadAll]. See the package comment for why it filters on xmin.
func (s *Store) ReadAll(ctx context.Context, from events.Position, max int) ([]eventstore.RecordedEvent, error) {
	rows, err := s.pool.Query(ctx, selectEvents+`
		WHERE (e.transaction_id, e.position) > ($1::text::xid8, $2)
		  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY e.transaction_id, e.position
		LIMIT $3`, strconv.FormatUint(from.Commit, 10), int64(from.Prepare), max)
	if err != nil {
		return nil, fmt.Errorf("read all from %s: %w", from, err)
	}
	evs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("read all from %s: %w", from, err)
	}
	return evs, nil
}

// selectEvents names every column through the table alias and renames the converted ones: a bare
// ORDER BY transaction_id would bind to an output column called transaction_id before the table's,
// and sort transaction ids as text ("100001" before "99997").
const selectEvents = selectEventColumns + `
	FROM events e`

// selectEventColumns is selectEvents without its FROM, for rows of events called e found otherwise.
const selectEventColumns = `
	SELECT e.event_id::text AS event_id_text, e.stream_id, e.version, e.transaction_id::text AS commit_text,
	       e.position, e.type, e.schema_version, e.data, e.metadata, e.occurred_at, e.recorded_at`

func collect(rows pgx.Rows) ([]eventstore.RecordedEvent, error) {
	var out []eventstore.RecordedEvent
	var (
		version, prepare int64
		commit           string
		schemaVersion    int32
		data, meta       []byte
	)
	for rows.Next() {
		var e eventstore.RecordedEvent
		if err := rows.Scan(&e.ID, &e.Stream, &version, &commit, &prepare, &e.Type, &schemaVersion,
			&data, &meta, &e.OccurredAt, &e.RecordedAt); err != nil {
			return nil, err
		}
		pos, err := position(commit, prepare)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(meta, &e.Metadata); err != nil {
			return nil, fmt.Errorf("event %s: decode metadata: %w", e.ID, err)
		}
		e.Version, e.Position, e.SchemaVersion = uint64(version), pos, int(schemaVersion)
		e.Data = append([]byte(nil), data...)
		out = append(out, e)
	}
	return out, rows.Err()
}

func position(commit string, prepare int64) (events.Position, error) {
	c, err := strconv.ParseUint(commit, 10, 64)
	if err != nil {
		return events.Position{}, fmt.Errorf("parse transaction id %q: %w", commit, err)
	}
	return events.Position{Commit: c, Prepare: uint64(prepare)}, nil
}

// CountAfter implements [eventstore.Counter]: it counts the readable events after from, at most limit.
func (s *Store) CountAfter(ctx context.Context, from events.Position, limit int64) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `
		SELECT count(*) FROM (
			SELECT 1 FROM events e
			WHERE (e.transaction_id, e.position) > ($1::text::xid8, $2)
			  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
			LIMIT $3) AS after`,
		strconv.FormatUint(from.Commit, 10), int64(from.Prepare), limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events after %s: %w", from, err)
	}
	return n, nil
}
