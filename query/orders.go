package query

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/events"
)

// order is the JSON of an order. The callback URL it was placed with is not shown: it may hold a
// secret of the client's.
type order struct {
	ID             string        `json:"id"`
	CustomerID     string        `json:"customer_id"`
	CustomerName   string        `json:"customer_name"`
	CustomerEmail  string        `json:"customer_email"`
	Status         string        `json:"status"`
	Currency       string        `json:"currency"`
	TotalCents     int64         `json:"total_cents"`
	Lines          []orderLine   `json:"lines"`
	StatusHistory  []statusEntry `json:"status_history"`
	Reason         string        `json:"reason"`
	Carrier        string        `json:"carrier"`
	TrackingNumber string        `json:"tracking_number"`
	Version        uint64        `json:"version"`
	PlacedAt       time.Time     `json:"placed_at"`
	UpdatedAt      time.Time     `json:"updated_at"`
}

type orderLine struct {
	ProductID      string `json:"product_id"`
	SKU            string `json:"sku"`
	Name           string `json:"name"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	LineTotalCents int64  `json:"line_total_cents"`
}

// statusEntry is one change of an order's status; Version is the order's version that made it.
type statusEntry struct {
	Version uint64    `json:"version"`
	Status  string    `json:"status"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// orderColumns reads an order with its lines and status history in one row, so that one query
// answers for a whole page of orders.
const orderColumns = `o.id::text, o.customer_id, o.customer_name, o.customer_email, o.status, o.currency,
	o.total_cents, o.reason, o.carrier, o.tracking_number, o.version, o.placed_at, o.updated_at,
	COALESCE((SELECT json_agg(json_build_object('product_id', l.product_id, 'sku', l.sku, 'name', l.name,
			'quantity', l.quantity, 'unit_price_cents', l.unit_price_cents) ORDER BY l.line_no)
		FROM order_lines l WHERE l.order_id = o.id), '[]'),
	COALESCE((SELECT json_agg(json_build_object('version', h.version, 'status', h.status, 'reason', h.reason,
			'at', h.at) ORDER BY h.version)
		FROM order_status_history h WHERE h.order_id = o.id), '[]')`

func scanOrder(row pgx.CollectableRow) (order, error) {
	var (
		o       order
		version int64
	)
	err := row.Scan(&o.ID, &o.CustomerID, &o.CustomerName, &o.CustomerEmail, &o.Status, &o.Currency,
		&o.TotalCents, &o.Reason, &o.Carrier, &o.TrackingNumber, &version, &o.PlacedAt, &o.UpdatedAt,
		&o.Lines, &o.StatusHistory)
	o.Version = uint64(max(version, 0))
	o.PlacedAt, o.UpdatedAt = o.PlacedAt.UTC(), o.UpdatedAt.UTC()
	for i := range o.Lines {
		o.Lines[i].LineTotalCents = o.Lines[i].Quantity * o.Lines[i].UnitPriceCents
	}
	for i := range o.StatusHistory {
		o.StatusHistory[i].At = o.StatusHistory[i].At.UTC()
	}
	if o.Lines == nil {
		o.Lines = []orderLine{}
	}
	if o.StatusHistory == nil {
		o.StatusHistory = []statusEntry{}
	}
	return o, err
}

// getOrder answers GET /v1/orders/{id}.
func (a *api) getOrder(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "order")
	if err != nil {
		return err
	}
	tok, err := a.consistent(w, r, ordersProjection, events.OrderAggregate)
	if err != nil {
		return err
	}
	rows, _ := a.pool.Query(r.Context(), `SELECT `+orderColumns+` FROM orders o WHERE o.id = $1`, id)
	o, err := pgx.CollectExactlyOneRow(rows, scanOrder)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("order %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read order %s: %w", id, err)
	}
	writeEntity(w, r, o, events.StreamName(events.OrderAggregate, o.ID), o.Version, tok)
	return nil
}

// listCustomerOrders answers GET /v1/customers/{id}/orders?cursor=&limit=: the customer's orders,
// newest first (by placed_at, then id). A customer without orders has an empty list, not a 404:
// customers are not entities of the read model.
func (a *api) listCustomerOrders(w http.ResponseWriter, r *http.Request) error {
	customer := mux.Vars(r)["id"]
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	before, paged, err := parseCursor(q, "customer-orders")
	if err != nil {
		return err
	}
	tok, err := a.consistent(w, r, ordersProjection, events.OrderAggregate)
	if err != nil {
		return err
	}
	sql, args := `SELECT `+orderColumns+` FROM orders o WHERE o.customer_id = $1`, []any{customer}
	if paged {
		args = append(args, time.UnixMicro(before.At), before.ID)
		sql += ` AND (o.placed_at, o.id) < ($2::timestamptz, $3::uuid)`
	}
	args = append(args, limit+1)
	sql += fmt.Sprintf(` ORDER BY o.placed_at DESC, o.id DESC LIMIT $%d`, len(args))
	rows, _ := a.pool.Query(r.Context(), sql, args...)
	items, err := pgx.CollectRows(rows, scanOrder)
	if err != nil {
		return fmt.Errorf("list orders of customer: %w", err)
	}
	var p page[order]
	if len(items) > limit {
		items = items[:limit]
		last := items[limit-1]
		p.NextCursor = cursor{Kind: "customer-orders", At: last.PlacedAt.UnixMicro(), ID: last.ID}.String()
	}
	p.Items = items
	for _, it := range items {
		tok = withStream(tok, events.StreamName(events.OrderAggregate, it.ID), it.Version)
	}
	writeList(w, p, tok)
	return nil
}
