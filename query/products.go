package query

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/events"
)

// product is the JSON of a product.
type product struct {
	ID           string    `json:"id"`
	SKU          string    `json:"sku"`
	Name         string    `json:"name"`
	Description  string    `json:"description"`
	Category     string    `json:"category"`
	PriceCents   int64     `json:"price_cents"`
	Currency     string    `json:"currency"`
	Tags         []string  `json:"tags"`
	Stock        int64     `json:"stock"`
	Discontinued bool      `json:"discontinued"`
	Version      uint64    `json:"version"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

const productColumns = `id::text, sku, name, description, category, price_cents, currency, tags, stock, discontinued,
	version, created_at, updated_at`

func scanProduct(row pgx.CollectableRow) (product, error) {
	var (
		p       product
		version int64
	)
	err := row.Scan(&p.ID, &p.SKU, &p.Name, &p.Description, &p.Category, &p.PriceCents, &p.Currency, &p.Tags,
		&p.Stock, &p.Discontinued, &version, &p.CreatedAt, &p.UpdatedAt)
	p.Version = uint64(max(version, 0))
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	if p.Tags == nil {
		p.Tags = []string{}
	}
	return p, err
}

// getProduct answers GET /v1/products/{id}.
func (a *api) getProduct(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "product")
	if err != nil {
		return err
	}
	tok, err := a.consistent(w, r, productsProjection, events.ProductAggregate)
	if err != nil {
		return err
	}
	rows, _ := a.pool.Query(r.Context(), `SELECT `+productColumns+` FROM products WHERE id = $1`, id)
	p, err := pgx.CollectExactlyOneRow(rows, scanProduct)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("product %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read product %s: %w", id, err)
	}
	writeEntity(w, r, p, events.StreamName(events.ProductAggregate, p.ID), p.Version, tok)
	return nil
}

// listProducts answers GET /v1/products?category=&cursor=&limit=: the products of a category, or
// all of them, by name then id.
func (a *api) listProducts(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	after, paged, err := parseCursor(q, "products")
	if err != nil {
		return err
	}
	tok, err := a.consistent(w, r, productsProjection, events.ProductAggregate)
	if err != nil {
		return err
	}
	sql, args := `SELECT `+productColumns+` FROM products WHERE true`, []any{}
	if category := q.Get("category"); category != "" {
		args = append(args, category)
		sql += ` AND category = $` + strconv.Itoa(len(args))
	}
	if paged {
		args = append(args, after.Name, after.ID)
		sql += fmt.Sprintf(` AND (name, id) > ($%d::text, $%d::uuid)`, len(args)-1, len(args))
	}
	args = append(args, limit+1)
	sql += ` ORDER BY name, id LIMIT $` + strconv.Itoa(len(args))
	rows, _ := a.pool.Query(r.Context(), sql, args...)
	items, err := pgx.CollectRows(rows, scanProduct)
	if err != nil {
		return fmt.Errorf("list products: %w", err)
	}
	var p page[product]
	if len(items) > limit {
		items = items[:limit]
		last := items[limit-1]
		p.NextCursor = cursor{Kind: "products", Name: last.Name, ID: last.ID}.String()
	}
	p.Items = items
	for _, it := range items {
		tok = withStream(tok, events.StreamName(events.ProductAggregate, it.ID), it.Version)
	}
	writeList(w, p, tok)
	return nil
}
