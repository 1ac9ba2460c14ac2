package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/admin"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	rmpg "github.com/strata-dev/strata/projector/postgres"
	"github.com/strata-dev/strata/relay"
)

const (
	streamName = "EVENTS"
	prefix     = "strata"
	partitions = 2
)

// fixture is the admin API over a real PostgreSQL read model and an in-process NATS server, with the
// products projection.
type fixture struct {
	pool     *pgxpool.Pool
	nc       *nats.Conn
	js       jetstream.JetStream
	codec    *events.Codec
	url      string
	position uint64 // of the last event published
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool := pgtest.Pool(t, 8)
	require.NoError(t, migrations.Apply(t.Context(), pool, migrations.ReadModel))
	nc := natstest.Start(t).Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = broker.EnsureStream(t.Context(), js, broker.StreamConfig{Name: streamName, SubjectPrefix: prefix, Replicas: 1,
		Duplicates: time.Minute, Partitions: partitions})
	require.NoError(t, err)
	codec, err := events.NewCommerceCodec()
	require.NoError(t, err)
	products := rmpg.Products{}
	srv := httptest.NewServer(admin.NewHandler(pool, js, projector.NewDeadLetters(pool, codec, products), admin.Options{
		Projections: []projector.Projection{products},
		Events:      projector.Config{Stream: streamName, SubjectPrefix: prefix, Partitions: partitions}}))
	t.Cleanup(srv.Close)
	return &fixture{pool: pool, nc: nc, js: js, codec: codec, url: srv.URL}
}

// runProjector runs the products projection until the test ends.
func (f *fixture) runProjector(t *testing.T) {
	r, err := projector.NewRunner(f.pool, f.nc, f.codec, rmpg.Products{}, projector.Config{Stream: streamName, SubjectPrefix: prefix,
		Partitions: partitions}, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// event records e as version of product id's stream, at the next position.
func (f *fixture) event(t *testing.T, id string, version uint64, e events.Event) eventstore.RecordedEvent {
	t.Helper()
	name, schema, data, err := f.codec.Encode(e)
	require.NoError(t, err)
	f.position++
	now := time.Now().UTC()
	return eventstore.RecordedEvent{ID: uuid.NewString(), Stream: events.StreamName(events.ProductAggregate, id), Version: version,
		Position: events.Position{Commit: f.position, Prepare: f.position}, Type: name, SchemaVersion: schema, Data: data,
		OccurredAt: now, RecordedAt: now}
}

func (f *fixture) publish(t *testing.T, rec eventstore.RecordedEvent) {
	t.Helper()
	_, err := f.js.PublishMsg(t.Context(), relay.Message(prefix, rec))
	require.NoError(t, err)
}

// park writes rec, with data instead of its own, as the products projection's dead letter.
func (f *fixture) park(t *testing.T, rec eventstore.RecordedEvent, data []byte, status string) int64 {
	t.Helper()
	h, err := json.Marshal(relay.Message(prefix, rec).Header)
	require.NoError(t, err)
	var id int64
	require.NoError(t, f.pool.QueryRow(t.Context(), `INSERT INTO dead_letters (projection, stream, version, event_id, event_type, headers, data, status, error, attempts)
		VALUES ('products', $1, $2, $3, $4, $5, $6, $7, 'written by the test', 5) RETURNING id`,
		rec.Stream, int64(rec.Version), rec.ID, rec.Type, h, data, status).Scan(&id))
	return id
}

// call sends method to path and decodes a JSON answer into out; it returns the status and the
// content type.
func (f *fixture) call(t *testing.T, method, path string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.url+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(body, out), "%s %s answered %d: %s", method, path, resp.StatusCode, body)
	return resp.StatusCode, resp.Header.Get("Content-Type")
}

func (f *fixture) projections(t *testing.T) []admin.ProjectionStatus {
	t.Helper()
	var out struct{ Items []admin.ProjectionStatus }
	status, _ := f.call(t, http.MethodGet, "/v1/projections", &out)
	require.Equal(t, http.StatusOK, status)
	return out.Items
}

func TestProjectionStatusFollowsTheProjector(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	require.Equal(t, []admin.ProjectionStatus{{Name: "products", Backend: "postgres", Status: "stopped", ActiveVersion: 1}},
		f.projections(t), "nothing published yet")

	var last eventstore.RecordedEvent
	for i := range 6 {
		id := uuid.NewString()
		last = f.event(t, id, 1, events.ProductCreatedV1{ProductID: id, SKU: fmt.Sprintf("SKU-%d", i), Name: "Lamp",
			Category: "home", PriceCents: 1000, Currency: "EUR"})
		f.publish(t, last)
	}
	// No consumer exists yet: the lag is what the stream holds for the projection.
	require.Equal(t, []admin.ProjectionStatus{{Name: "products", Backend: "postgres", Status: "stopped", LagEvents: 6, ActiveVersion: 1}},
		f.projections(t), "published, nothing consumed yet")
	other := f.event(t, uuid.NewString(), 1, events.OrderCancelledV1{Reason: "not the projection's"})
	other.Stream = events.StreamName(events.OrderAggregate, uuid.NewString())
	f.publish(t, other)
	require.Equal(t, uint64(6), f.projections(t)[0].LagEvents, "another aggregate's events are not the projection's lag")
	// Checkpoints without consumers (lost with a NATS restart): the lag is what follows them.
	_, err := f.pool.Exec(t.Context(), `INSERT INTO projection_checkpoints (projection, partition, stream_sequence, position)
		SELECT 'products', p, 3, '' FROM generate_series(0, $1 - 1) AS p`, partitions)
	require.NoError(t, err)
	st := f.projections(t)[0]
	require.Equal(t, uint64(3), st.LagEvents, "the messages after stream sequence 3")
	require.Positive(t, st.LagSeconds)
	_, err = f.pool.Exec(t.Context(), `DELETE FROM projection_checkpoints`)
	require.NoError(t, err)

	f.runProjector(t)
	require.Eventually(t, func() bool {
		all := f.projections(t)
		if len(all) != 1 {
			return false
		}
		st = all[0]
		return st.Status == "live" && st.LagEvents == 0 && st.LagSeconds == 0 && st.Checkpoint == last.Position.String()
	}, 30*time.Second, 10*time.Millisecond, "live, caught up (acknowledged), checkpoint at the last event")
	require.Zero(t, st.DeadLetters)

	f.park(t, last, []byte("not json"), "parked")
	require.Equal(t, 1, f.projections(t)[0].DeadLetters)
}

// deadLetters is GET /v1/dead-letters, item by item: id, stream version and status.
func (f *fixture) deadLetters(t *testing.T) [][3]any {
	t.Helper()
	var out struct{ Items []projector.DeadLetter }
	status, _ := f.call(t, http.MethodGet, "/v1/dead-letters", &out)
	require.Equal(t, http.StatusOK, status)
	list := [][3]any{}
	for _, d := range out.Items {
		list = append(list, [3]any{d.ID, d.Version, d.Status})
	}
	return list
}

// TestDeadLetterEndpoints: retry and skip answer what they did, including a stream that a waiting
// event which cannot be decoded still blocks after the release, and answer problem details for a
// dead letter that still fails (422) or does not exist (404).
func TestDeadLetterEndpoints(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := uuid.NewString()
	require.NoError(t, projector.Apply(t.Context(), f.pool, rmpg.Products{}, []events.Envelope{{
		Stream: events.StreamName(events.ProductAggregate, id), Version: 1, OccurredAt: time.Now(),
		Event: events.ProductCreatedV1{ProductID: id, SKU: "SKU-1", Name: "Lamp", Category: "home", PriceCents: 1000, Currency: "EUR"}}}))
	renamed := f.event(t, id, 2, events.ProductRenamedV1{ProductID: id, Name: "Desk lamp"})
	parked := f.park(t, renamed, renamed.Data, "parked")
	repriced := f.event(t, id, 3, events.ProductRepricedV1{ProductID: id, PriceCents: 1200})
	broken := f.park(t, repriced, []byte("not json"), "waiting")
	var problem struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}

	require.Equal(t, [][3]any{{parked, int64(2), "parked"}, {broken, int64(3), "waiting"}}, f.deadLetters(t))
	status, ctype := f.call(t, http.MethodPost, fmt.Sprintf("/v1/dead-letters/%d/retry", broken), &problem)
	require.Equal(t, http.StatusNotFound, status, "a waiting event is released with the parked one, not alone")
	require.Equal(t, "application/problem+json", ctype)
	status, _ = f.call(t, http.MethodPost, "/v1/dead-letters/first/skip", &problem)
	require.Equal(t, http.StatusNotFound, status)

	var rel map[string]any
	status, _ = f.call(t, http.MethodPost, fmt.Sprintf("/v1/dead-letters/%d/retry", parked), &rel)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, map[string]any{"id": float64(parked), "released": true, "applied": float64(1), "parked": float64(broken)}, rel,
		"version 2 applied; version 3 cannot be decoded and blocks the stream in its place")
	var name string
	var version int64
	require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT name, version FROM products WHERE id = $1`, id).Scan(&name, &version))
	require.Equal(t, "Desk lamp", name)
	require.EqualValues(t, 2, version)
	require.Equal(t, [][3]any{{broken, int64(3), "parked"}}, f.deadLetters(t))

	status, ctype = f.call(t, http.MethodPost, fmt.Sprintf("/v1/dead-letters/%d/retry", broken), &problem)
	require.Equal(t, http.StatusUnprocessableEntity, status, "it still cannot be decoded")
	require.Equal(t, "application/problem+json", ctype)
	require.Contains(t, problem.Detail, fmt.Sprintf("dead letter %d", broken))
	rel = nil // Unmarshal would keep the keys of the last answer
	status, _ = f.call(t, http.MethodPost, fmt.Sprintf("/v1/dead-letters/%d/skip", broken), &rel)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, map[string]any{"id": float64(broken), "released": true, "applied": float64(0)}, rel)
	require.Equal(t, [][3]any{}, f.deadLetters(t))
	status, _ = f.call(t, http.MethodPost, fmt.Sprintf("/v1/dead-letters/%d/skip", broken), &problem)
	require.Equal(t, http.StatusNotFound, status, "released already")
}
