// Package postgres holds strata's PostgreSQL read models: the projections that keep the products
// and orders tables (migrations/readmodel) in step with the events. Statements carry their own
// version guard, so applying an event twice changes nothing.
package postgres

import (
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/events"
)

// Products keeps the products table: the catalog with stock.
type Products struct{}

// Name implements projector.Projection.
func (Products) Name() string { return "products" }

// AggregateTypes implements projector.Projection.
func (Products) AggregateTypes() []string { return []string{events.ProductAggregate} }

// Apply implements projector.Projection.
func (Products) Apply(b *pgx.Batch, e events.Envelope) error {
	_, id, _ := events.SplitStream(e.Stream)
	v, at := int64(e.Version), e.OccurredAt
	set := func(assignments string, args ...any) {
		b.Queue(`UPDATE products SET `+assignments+`, version = $2, updated_at = $3 WHERE id = $1 AND version < $2`,
			append([]any{id, v, at}, args...)...)
	}
	switch ev := e.Event.(type) {
	case events.ProductCreatedV1:
		b.Queue(`INSERT INTO products (id, sku, name, description, category, price_cents, currency, tags, stock, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $10) ON CONFLICT (id) DO NOTHING`,
			id, ev.SKU, ev.Name, ev.Description, ev.Category, ev.PriceCents, ev.Currency, nonNil(ev.Tags), v, at)
	case events.ProductRenamedV1:
		set(`name = $4`, ev.Name)
	case events.ProductRepricedV1:
		set(`price_cents = $4`, ev.PriceCents)
	case events.ProductStockAdjustedV1:
		set(`stock = $4`, ev.Stock)
	case events.ProductStockReservedV1:
		set(`stock = $4`, ev.Stock)
	case events.ProductStockReleasedV1:
		set(`stock = $4`, ev.Stock)
	case events.ProductDiscontinuedV1:
		set(`discontinued = true`)
	default:
		return fmt.Errorf("products: no handler for %T", e.Event)
	}
	return nil
}

// Orders keeps the orders, order_lines and order_status_history tables.
type Orders struct{}

// Name implements projector.Projection.
func (Orders) Name() string { return "orders" }

// AggregateTypes implements projector.Projection.
func (Orders) AggregateTypes() []string { return []string{events.OrderAggregate} }

// Apply implements projector.Projection.
func (Orders) Apply(b *pgx.Batch, e events.Envelope) error {
	_, id, _ := events.SplitStream(e.Stream)
	v, at := int64(e.Version), e.OccurredAt
	status := func(to, assignments string, args ...any) {
		if assignments != "" {
			assignments = ", " + assignments
		}
		b.Queue(`UPDATE orders SET status = $4`+assignments+`, version = $2, updated_at = $3 WHERE id = $1 AND version < $2`,
			append([]any{id, v, at, to}, args...)...)
	}
	history := func(to, reason string) {
		b.Queue(`INSERT INTO order_status_history (order_id, version, status, reason, at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (order_id, version) DO NOTHING`, id, v, to, reason, at)
	}
	switch ev := e.Event.(type) {
	case events.OrderPlacedV1:
		b.Queue(`INSERT INTO orders (id, customer_id, customer_name, customer_email, status, currency, total_cents, callback_url, version, placed_at, updated_at)
			VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $9) ON CONFLICT (id) DO NOTHING`,
			id, ev.CustomerID, ev.CustomerName, ev.CustomerEmail, ev.Currency, ev.TotalCents, ev.CallbackURL, v, at)
		for i, l := range ev.Lines {
			b.Queue(`INSERT INTO order_lines (order_id, line_no, product_id, sku, name, quantity, unit_price_cents)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id, line_no) DO NOTHING`,
				id, i+1, l.ProductID, l.SKU, l.Name, l.Quantity, l.UnitPriceCents)
		}
		history("pending", "")
	case events.OrderConfirmedV1:
		status("confirmed", "")
		history("confirmed", "")
	case events.OrderRejectedV1:
		status("rejected", "reason = $5", ev.Reason)
		history("rejected", ev.Reason)
	case events.OrderCancelledV1:
		status("cancelled", "reason = $5", ev.Reason)
		history("cancelled", ev.Reason)
	case events.OrderShippedV1:
		status("shipped", "carrier = $5, tracking_number = $6", ev.Carrier, ev.TrackingNumber)
		history("shipped", "")
	default:
		return fmt.Errorf("orders: no handler for %T", e.Event)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
