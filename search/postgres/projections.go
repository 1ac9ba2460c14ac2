package postgres

import (
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/events"
)

// The names of the projections, as in projection_streams and [Index.Projections].
const (
	ProductsProjection = "products-search"
	OrdersProjection   = "orders-search"
)

// addWords adds the words of a document's text to a vocabulary, skipping words it has. Only words
// with a letter are typo candidates. Idempotent: running it again adds nothing.
const addWords = `INSERT INTO %s (word)
	SELECT w FROM unnest(tsvector_to_array(%s)) AS w
	WHERE w ~ '[[:alpha:]]' AND NOT EXISTS (SELECT 1 FROM %[1]s AS v WHERE v.word = w)`

// Products keeps the product search model, search_products, and its vocabulary. Its statements carry
// the version guard of every read model, so applying an event twice changes nothing.
type Products struct{}

// Name implements projector.Projection: "products-search".
func (Products) Name() string { return ProductsProjection }

// AggregateTypes implements projector.Projection.
func (Products) AggregateTypes() []string { return []string{events.ProductAggregate} }

// Apply implements projector.Projection. It fails for an event type it does not know.
func (Products) Apply(b *pgx.Batch, e events.Envelope) error {
	_, id, _ := events.SplitStream(e.Stream)
	v := int64(e.Version)
	set := func(assignments string, args ...any) {
		b.Queue(`UPDATE search_products SET `+assignments+`, version = $2 WHERE id = $1 AND version < $2`,
			append([]any{id, v}, args...)...)
	}
	switch ev := e.Event.(type) {
	case events.ProductCreatedV1:
		tags := ev.Tags
		if tags == nil {
			tags = []string{}
		}
		b.Queue(`INSERT INTO search_products (id, sku, name, description, category, price_cents, currency, tags, version, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`,
			id, ev.SKU, ev.Name, ev.Description, ev.Category, ev.PriceCents, ev.Currency, tags, v, e.OccurredAt)
		b.Queue(fmt.Sprintf(addWords, "search_product_words", "search_product_document($1, $2, $3, $4, $5)"),
			ev.Name, ev.SKU, tags, ev.Category, ev.Description)
	case events.ProductRenamedV1:
		set(`name = $3`, ev.Name)
		b.Queue(fmt.Sprintf(addWords, "search_product_words", "to_tsvector('simple', $1)"), ev.Name)
	case events.ProductRepricedV1:
		set(`price_cents = $3`, ev.PriceCents)
	case events.ProductStockAdjustedV1:
		set(`stock = $3`, ev.Stock)
	case events.ProductStockReservedV1:
		set(`stock = $3`, ev.Stock)
	case events.ProductStockReleasedV1:
		set(`stock = $3`, ev.Stock)
	case events.ProductDiscontinuedV1:
		set(`discontinued = true`)
	default:
		return fmt.Errorf("products search: no handler for %T", e.Event)
	}
	return nil
}

// Orders keeps the order search model, search_orders, and its vocabulary, as [Products] does for
// products.
type Orders struct{}

// Name implements projector.Projection: "orders-search".
func (Orders) Name() string { return OrdersProjection }

// AggregateTypes implements projector.Projection.
func (Orders) AggregateTypes() []string { return []string{events.OrderAggregate} }

// Apply implements projector.Projection. It fails for an event type it does not know.
func (Orders) Apply(b *pgx.Batch, e events.Envelope) error {
	_, id, _ := events.SplitStream(e.Stream)
	v := int64(e.Version)
	status := func(to string) {
		b.Queue(`UPDATE search_orders SET status = $3, version = $2 WHERE id = $1 AND version < $2`, id, v, to)
	}
	switch ev := e.Event.(type) {
	case events.OrderPlacedV1:
		skus := make([]string, 0, len(ev.Lines))
		names := make([]string, 0, len(ev.Lines))
		for _, l := range ev.Lines {
			skus, names = append(skus, l.SKU), append(names, l.Name)
		}
		b.Queue(`INSERT INTO search_orders (id, customer_id, customer_name, customer_email, status, skus, product_names, total_cents, currency, version, placed_at)
			VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`,
			id, ev.CustomerID, ev.CustomerName, ev.CustomerEmail, skus, names, ev.TotalCents, ev.Currency, v, e.OccurredAt)
		b.Queue(fmt.Sprintf(addWords, "search_order_words", "search_order_document($1, $2, $3, $4)"),
			ev.CustomerName, ev.CustomerEmail, skus, names)
	case events.OrderConfirmedV1:
		status("confirmed")
	case events.OrderRejectedV1:
		status("rejected")
	case events.OrderCancelledV1:
		status("cancelled")
	case events.OrderShippedV1:
		status("shipped")
	default:
		return fmt.Errorf("orders search: no handler for %T", e.Event)
	}
	return nil
}
