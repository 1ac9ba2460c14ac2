package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/relay"
)

// ErrNoDeadLetter is returned by [DeadLetters.Retry] and [DeadLetters.Skip] for an id that is not
// a parked event (unknown, or waiting behind another).
var ErrNoDeadLetter = errors.New("no such parked event")

// DeadLetter is an event a projection could not apply, or one waiting behind it.
type DeadLetter struct {
	ID         int64     `json:"id"`
	Projection string    `json:"projection"`
	Stream     string    `json:"stream"`
	Version    int64     `json:"version"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Status     string    `json:"status"`
	Error      string    `json:"error"`
	ParkedAt   time.Time `json:"parked_at"`
}

// DeadLetters lists, retries and skips parked events. It needs the projections by name to re-apply
// events.
type DeadLetters struct {
	pool        *pgxpool.Pool
	codec       *events.Codec
	projections map[string]Projection
}

// NewDeadLetters returns the dead-letter store behind pool.
func NewDeadLetters(pool *pgxpool.Pool, codec *events.Codec, projections ...Projection) *DeadLetters {
	d := &DeadLetters{pool: pool, codec: codec, projections: map[string]Projection{}}
	for _, p := range projections {
		d.projections[p.Name()] = p
	}
	return d
}

// List returns the dead letters in parking order, at most limit.
func (d *DeadLetters) List(ctx context.Context, limit int) ([]DeadLetter, error) {
	rows, err := d.pool.Query(ctx, `SELECT id, projection, stream, version, event_id, event_type, status, error, parked_at
		FROM dead_letters ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[DeadLetter])
}

// Release is what [DeadLetters.Retry] or [DeadLetters.Skip] did to a parked event's stream.
type Release struct {
	// Applied counts the events applied: the parked event unless it was skipped, and those that
	// waited behind it (not redeliveries of events applied before it, which change nothing).
	Applied int
	// Parked is the dead letter that blocks the stream now, or 0 when the stream is released: a
	// waiting event that could not be decoded stops the release and takes the parked event's place.
	Parked int64
}

// Retry applies the parked event id and every event waiting behind it, in stream order, in one
// transaction, and releases the stream. If one of them still fails to apply, nothing changes and the
// error says why. A waiting event that cannot even be decoded stops the release there: the events
// before it are applied, and it becomes the stream's parked event (Release.Parked), to be skipped or
// retried in turn.
func (d *DeadLetters) Retry(ctx context.Context, id int64) (Release, error) {
	return d.release(ctx, id, false)
}

// Skip drops the parked event id without applying it (the stream's version moves past it), then
// applies the events waiting behind it like [DeadLetters.Retry]. Skipping the event that creates an
// aggregate leaves its later events nothing to apply to: they fail in turn, and the stream stays
// parked. Fix the projection and retry instead.
func (d *DeadLetters) Skip(ctx context.Context, id int64) (Release, error) {
	return d.release(ctx, id, true)
}

// parkedEvent is a dead letter as release reads it.
type parkedEvent struct {
	ID      int64
	Version int64
	Status  string
	Headers map[string][]string
	Data    []byte
}

func (d *DeadLetters) release(ctx context.Context, id int64, skip bool) (Release, error) {
	var out Release
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		out = Release{}
		var projection, stream string
		err := tx.QueryRow(ctx, `SELECT projection, stream FROM dead_letters WHERE id = $1 AND status = 'parked' FOR UPDATE`, id).
			Scan(&projection, &stream)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("dead letter %d: %w", id, ErrNoDeadLetter)
		}
		if err != nil {
			return fmt.Errorf("dead letter %d: %w", id, err)
		}
		proj, ok := d.projections[projection]
		if !ok {
			return fmt.Errorf("dead letter %d: unknown projection %q", id, projection)
		}
		if stream == undecodableStream && !skip {
			// Its headers were made storable when it was parked, so it might decode now, as some
			// other event than the one received.
			return fmt.Errorf("dead letter %d: a message that names no usable stream cannot be retried, only skipped", id)
		}
		// A new statement, so a new snapshot: after the lock above, it sees whatever a projector
		// parked behind this event up to now. Undecodable messages share a stream name but not a
		// stream: each is released alone.
		rows, err := tx.Query(ctx, `SELECT id, version, status, headers, data FROM dead_letters
			WHERE projection = $1 AND stream = $2 AND (stream <> $3 OR id = $4) ORDER BY version FOR UPDATE`,
			projection, stream, undecodableStream, id)
		if err != nil {
			return err
		}
		all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[parkedEvent])
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		var apply []events.Envelope
		var released []int64
		past := false // past the event asked for
		for _, p := range all {
			switch {
			case p.ID == id:
				past = true
				if skip {
					if stream != undecodableStream {
						b.Queue(upsertStreamVersions, projection, []string{stream}, []int64{p.Version})
					}
					released = append(released, p.ID)
					continue
				}
			case !past && p.Status == "parked":
				return fmt.Errorf("dead letter %d: dead letter %d comes first in stream %s; retry or skip it first",
					id, p.ID, stream)
			}
			e, err := d.decode(p)
			if err == nil {
				apply = append(apply, e)
				released = append(released, p.ID)
				if past { // those below are redeliveries, applied again to no effect
					out.Applied++
				}
				continue
			}
			if p.ID == id {
				return fmt.Errorf("dead letter %d: %w", p.ID, err)
			}
			if !past {
				// Waiting below the parked event: a redelivery of an event applied before that one
				// was parked (version guards would make applying it again change nothing).
				released = append(released, p.ID)
				continue
			}
			b.Queue(`UPDATE dead_letters SET status = 'parked', error = $2, updated_at = now() WHERE id = $1`,
				p.ID, truncate(pgText(err.Error()), 2000))
			out.Parked = p.ID
			break
		}
		if err := queueApply(ctx, b, proj, apply); err != nil {
			return fmt.Errorf("dead letter %d still fails: %w", id, err)
		}
		b.Queue(`DELETE FROM dead_letters WHERE id = ANY($1)`, released)
		b.Queue(`SELECT pg_notify(`+consistency.ProgressChannelSQL+`, $1)`, projection)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return Release{}, err
	}
	return out, nil
}

// decode turns a dead letter back into the event it holds.
func (d *DeadLetters) decode(p parkedEvent) (events.Envelope, error) {
	rec, err := relay.Decode(nats.Header(p.Headers), p.Data)
	if err != nil {
		return events.Envelope{}, err
	}
	e, err := d.codec.Decode(rec.Type, rec.SchemaVersion, rec.Data)
	if err != nil {
		return events.Envelope{}, err
	}
	return envelope(rec, e), nil
}
