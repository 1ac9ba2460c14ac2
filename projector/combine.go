package projector

import (
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/events"
)

// Combine returns a projection named name that applies each event with every part that consumes
// its aggregate type, in the order of parts. The parts' read models then share one consumer, one
// transaction per batch, one version guard (projection_streams under name), one checkpoint and one
// dead-letter queue: a batch costs one commit instead of one per part, and an event that fails in
// any part is parked for all of them. Parts whose read model lives outside PostgreSQL ([External])
// cannot be combined: their writes are not part of the transaction. The combined projection is a
// [BatchProjection]: each part applies its events of a batch together, parts that are
// BatchProjections with their own set-based statements. Parts must keep separate tables, as their
// statements are not interleaved event by event.
func Combine(name string, parts ...Projection) (Projection, error) {
	if name == "" || len(parts) == 0 {
		return nil, errors.New("projector: combine: a name and at least one part are required")
	}
	c := &combined{name: name, parts: parts, consumes: map[string][]int{}}
	for i, p := range parts {
		if _, ok := p.(External); ok {
			return nil, fmt.Errorf("projector: combine %s: %s keeps its read model outside PostgreSQL", name, p.Name())
		}
		for _, t := range p.AggregateTypes() {
			if _, ok := c.consumes[t]; !ok {
				c.types = append(c.types, t)
			}
			c.consumes[t] = append(c.consumes[t], i)
		}
	}
	return c, nil
}

type combined struct {
	name     string
	parts    []Projection
	types    []string
	consumes map[string][]int // aggregate type → indexes of the parts that consume it
}

func (c *combined) Name() string { return c.name }

func (c *combined) AggregateTypes() []string { return slices.Clone(c.types) }

func (c *combined) ApplyBatch(b *pgx.Batch, evs []events.Envelope) error {
	byPart := make([][]events.Envelope, len(c.parts))
	for _, e := range evs {
		parts, err := c.partsOf(e)
		if err != nil {
			return err
		}
		for _, i := range parts {
			byPart[i] = append(byPart[i], e)
		}
	}
	for i, p := range c.parts {
		if err := applyEvents(b, p, byPart[i]); err != nil {
			return fmt.Errorf("%s: %w", p.Name(), err)
		}
	}
	return nil
}

func (c *combined) Apply(b *pgx.Batch, e events.Envelope) error {
	parts, err := c.partsOf(e)
	if err != nil {
		return err
	}
	for _, i := range parts {
		if err := c.parts[i].Apply(b, e); err != nil {
			return fmt.Errorf("%s: %w", c.parts[i].Name(), err)
		}
	}
	return nil
}

// partsOf returns the indexes of the parts that consume e's aggregate type.
func (c *combined) partsOf(e events.Envelope) ([]int, error) {
	typ, _, ok := events.SplitStream(e.Stream)
	if !ok {
		return nil, fmt.Errorf("%s: not a stream name", e.Stream)
	}
	return c.consumes[typ], nil
}
