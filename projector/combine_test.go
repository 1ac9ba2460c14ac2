package projector_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/projector"
)

// part is a projection that queues its name as the statement of every event it applies.
type part struct {
	name  string
	types []string
	fail  bool
}

func (p part) Name() string             { return p.name }
func (p part) AggregateTypes() []string { return p.types }
func (p part) Apply(b *pgx.Batch, e events.Envelope) error {
	if p.fail {
		return errors.New("cannot apply")
	}
	b.Queue(p.name, e.Stream)
	return nil
}

type external struct{ part }

func (external) Backend() string                                { return "elsewhere" }
func (external) Write(context.Context, []events.Envelope) error { return nil }

func TestCombineAppliesEachEventWithThePartsOfItsType(t *testing.T) {
	c, err := projector.Combine("catalog",
		part{name: "products", types: []string{"product"}},
		part{name: "everything", types: []string{"order", "product"}},
		part{name: "orders", types: []string{"order"}})
	require.NoError(t, err)
	require.Equal(t, "catalog", c.Name())
	require.Equal(t, []string{"product", "order"}, c.AggregateTypes())

	applied := func(stream string) []string {
		b := &pgx.Batch{}
		require.NoError(t, c.Apply(b, events.Envelope{Stream: stream, Version: 1}))
		var sql []string
		for _, q := range b.QueuedQueries {
			sql = append(sql, q.SQL)
		}
		return sql
	}
	require.Equal(t, []string{"products", "everything"}, applied(events.StreamName("product", "p-1")))
	require.Equal(t, []string{"everything", "orders"}, applied(events.StreamName("order", "o-1")))
	require.Empty(t, applied(events.StreamName("customer", "c-1")))
}

func TestCombineFailsTheEventWhenAPartFails(t *testing.T) {
	c, err := projector.Combine("catalog", part{name: "products", types: []string{"product"}},
		part{name: "search", types: []string{"product"}, fail: true})
	require.NoError(t, err)
	err = c.Apply(&pgx.Batch{}, events.Envelope{Stream: events.StreamName("product", "p-1")})
	require.ErrorContains(t, err, "search: cannot apply")
}

func TestCombineRefusesExternalParts(t *testing.T) {
	_, err := projector.Combine("catalog", part{name: "products", types: []string{"product"}},
		external{part{name: "products-elasticsearch", types: []string{"product"}}})
	require.ErrorContains(t, err, "products-elasticsearch")
	_, err = projector.Combine("catalog")
	require.Error(t, err)
}

// batchPart is a part that applies a batch with one statement naming its events' streams.
type batchPart struct{ part }

func (p batchPart) ApplyBatch(b *pgx.Batch, evs []events.Envelope) error {
	var streams []string
	for _, e := range evs {
		streams = append(streams, e.Stream)
	}
	b.Queue(p.name+" batch", streams)
	return nil
}

func TestCombineAppliesABatchPartByPart(t *testing.T) {
	c, err := projector.Combine("catalog",
		batchPart{part{name: "products", types: []string{"product"}}},
		part{name: "everything", types: []string{"order", "product"}})
	require.NoError(t, err)
	bc, ok := c.(projector.BatchProjection)
	require.True(t, ok)
	p1, p2, o1 := events.StreamName("product", "p-1"), events.StreamName("product", "p-2"), events.StreamName("order", "o-1")
	b := &pgx.Batch{}
	require.NoError(t, bc.ApplyBatch(b, []events.Envelope{{Stream: p1}, {Stream: o1}, {Stream: p2}}))
	var got [][]any
	for _, q := range b.QueuedQueries {
		got = append(got, append([]any{q.SQL}, q.Arguments...))
	}
	require.Equal(t, [][]any{
		{"products batch", []string{p1, p2}},
		{"everything", p1}, {"everything", o1}, {"everything", p2},
	}, got)
}
