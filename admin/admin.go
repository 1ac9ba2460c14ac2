// Package admin is strata's operator API (DESIGN section 6): projection status and the dead-letter
// store. It reads the projections' bookkeeping tables and JetStream consumer state.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/projector"
)

// ProjectionStatus is one projection as GET /v1/projections reports it.
type ProjectionStatus struct {
	Name    string `json:"name"`
	Backend string `json:"backend"`
	// Status is live (consuming), stopped (no partition consumed), or rebuilding.
	Status string `json:"status"`
	// Checkpoint is the position of the last applied event, over all partitions.
	Checkpoint string `json:"checkpoint"`
	// LagEvents is what JetStream holds for the projection and has not delivered and acknowledged;
	// for a partition never consumed (or whose consumer was lost), what the stream holds after its
	// checkpoint. Partitions JetStream cannot tell about right now count nothing.
	LagEvents uint64 `json:"lag_events"`
	// LagSeconds is the age of the oldest partition checkpoint while there is lag; 0 when caught up,
	// and while no partition has a checkpoint yet.
	LagSeconds    float64 `json:"lag_seconds"`
	DeadLetters   int     `json:"dead_letters"`
	ActiveVersion int     `json:"active_version"`
}

// Options configure [NewHandler].
type Options struct {
	// Projections are the projections this deployment runs.
	Projections []projector.Projection
	// Events is the events stream they consume: its Stream, SubjectPrefix and Partitions.
	Events   projector.Config
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Ready    []platform.Check
}

type api struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	dl   *projector.DeadLetters
	opts Options
}

// NewHandler returns the admin API.
func NewHandler(pool *pgxpool.Pool, js jetstream.JetStream, dl *projector.DeadLetters, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	a := &api{pool: pool, js: js, dl: dl, opts: opts}
	r := mux.NewRouter()
	mw := platform.Middleware(opts.Logger, platform.NewHTTPMetrics(opts.Registry, "admin"), 64)
	r.Use(mw)
	platform.HandleHealth(r, opts.Registry, opts.Ready...)
	handle := func(path, method string, h func(http.ResponseWriter, *http.Request) error) {
		r.Handle(path, platform.Handle(a.opts.Logger, h)).Methods(method)
	}
	handle("/v1/projections", http.MethodGet, a.projections)
	handle("/v1/dead-letters", http.MethodGet, a.deadLetters)
	handle("/v1/dead-letters/{id}/retry", http.MethodPost, a.retry)
	handle("/v1/dead-letters/{id}/skip", http.MethodPost, a.skip)
	platform.HandleUnmatched(r, mw)
	return r
}

// Status reports every projection. events says which stream they consume: its Stream,
// SubjectPrefix and Partitions.
func Status(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, events projector.Config, projections []projector.Projection) ([]ProjectionStatus, error) {
	out := make([]ProjectionStatus, 0, len(projections))
	for _, p := range projections {
		s := ProjectionStatus{Name: p.Name(), Backend: "postgres", Status: "stopped", ActiveVersion: 1}
		if ext, ok := p.(projector.External); ok {
			s.Backend = ext.Backend()
		}
		var oldest *time.Time
		checkpoints := map[int]uint64{} // stream sequence by partition
		rows, err := pool.Query(ctx, `SELECT partition, stream_sequence, position, updated_at FROM projection_checkpoints
			WHERE projection = $1 ORDER BY stream_sequence DESC`, p.Name())
		if err != nil {
			return nil, fmt.Errorf("projection %s: %w", p.Name(), err)
		}
		for i := 0; rows.Next(); i++ {
			var part int
			var seq int64
			var pos string
			var at time.Time
			if err := rows.Scan(&part, &seq, &pos, &at); err != nil {
				rows.Close()
				return nil, err
			}
			checkpoints[part] = uint64(max(seq, 0))
			if i == 0 {
				s.Checkpoint = pos
			}
			if oldest == nil || at.Before(*oldest) {
				oldest = &at
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("projection %s: %w", p.Name(), err)
		}
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE projection = $1`, p.Name()).Scan(&s.DeadLetters); err != nil {
			return nil, err
		}
		for part := range max(events.Partitions, 1) {
			// JetStream's failures leave a partition's lag out rather than fail the whole status, which
			// operators need most when something is wrong: what PostgreSQL says is still worth seeing.
			c, err := js.Consumer(ctx, events.Stream, projector.ConsumerName(p.Name(), part))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				if n, err := pendingAfter(ctx, js, events.Stream, projector.FilterSubjects(events, p, part), checkpoints[part]); err == nil {
					s.LagEvents += n
				}
				continue
			}
			if err != nil {
				continue
			}
			info := c.CachedInfo() // fetched just now by js.Consumer
			s.LagEvents += info.NumPending + uint64(info.NumAckPending)
			if info.NumWaiting > 0 {
				s.Status = "live"
			}
		}
		if s.LagEvents > 0 && oldest != nil {
			s.LagSeconds = time.Since(*oldest).Seconds()
		}
		out = append(out, s)
	}
	return out, nil
}

// pendingAfter counts the messages of stream on filters after stream sequence checkpoint (all of
// them for 0), for a partition that has no consumer: one never consumed, or whose in-memory consumer
// went with a server restart. The server counts them for a short-lived consumer of its own. (A
// checkpoint from before the stream was recreated can lie past its last message: then this counts
// nothing, while the partition would resume after the checkpoint's position.)
func pendingAfter(ctx context.Context, js jetstream.JetStream, stream string, filters []string, checkpoint uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cfg := jetstream.ConsumerConfig{FilterSubjects: filters, AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true,
		InactiveThreshold: 30 * time.Second} // gone by itself should the delete below not happen
	if checkpoint > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, checkpoint+1
	}
	c, err := js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return 0, fmt.Errorf("count pending messages: %w", err)
	}
	info := c.CachedInfo()
	_ = js.DeleteConsumer(ctx, stream, info.Name)
	return info.NumPending, nil
}

func (a *api) projections(w http.ResponseWriter, r *http.Request) error {
	st, err := Status(r.Context(), a.pool, a.js, a.opts.Events, a.opts.Projections)
	if err != nil {
		return err
	}
	platform.WriteJSON(w, http.StatusOK, map[string]any{"items": st})
	return nil
}

func (a *api) deadLetters(w http.ResponseWriter, r *http.Request) error {
	list, err := a.dl.List(r.Context(), 500)
	if err != nil {
		return err
	}
	if list == nil {
		list = []projector.DeadLetter{}
	}
	platform.WriteJSON(w, http.StatusOK, map[string]any{"items": list})
	return nil
}

func deadLetterID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("dead letter %q: %w", mux.Vars(r)["id"], domain.ErrNotFound)
	}
	return id, nil
}

func (a *api) retry(w http.ResponseWriter, r *http.Request) error {
	return a.release(w, r, a.dl.Retry)
}

func (a *api) skip(w http.ResponseWriter, r *http.Request) error {
	return a.release(w, r, a.dl.Skip)
}

func (a *api) release(w http.ResponseWriter, r *http.Request, do func(context.Context, int64) (projector.Release, error)) error {
	id, err := deadLetterID(r)
	if err != nil {
		return err
	}
	rel, err := do(r.Context(), id)
	if err != nil {
		if errors.Is(err, projector.ErrNoDeadLetter) {
			return fmt.Errorf("%v: %w", err, domain.ErrNotFound)
		}
		// The event still fails: that is the state of the read model, not a fault of this request.
		return fmt.Errorf("%v: %w", err, domain.ErrRule)
	}
	body := map[string]any{"id": id, "released": true, "applied": rel.Applied}
	if rel.Parked != 0 {
		// The event asked for is released, but its stream is not: a waiting event took its place.
		body["parked"] = rel.Parked
	}
	platform.WriteJSON(w, http.StatusOK, body)
	return nil
}
