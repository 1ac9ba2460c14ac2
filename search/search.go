// Package search is the port between the query service and a search engine (DESIGN sections 5 and 7):
// the searches strata offers, their results, and the documents the search projections keep.
//
// Two adapters implement [Index]: search/postgres (PostgreSQL full-text, the default) and
// search/elasticsearch (chosen by ELASTICSEARCH_URL). Each adapter also provides the projections that
// feed it; they run in the projector runtime like every other projection, so the consistency tokens
// of the query service work for search too: a search waits until the engine's projection has applied
// the token's streams, then [Index.Refresh] makes sure what was applied is searchable.
//
// User text is never query syntax: Text is matched as words (PostgreSQL's websearch_to_tsquery
// accepts "quoted phrases", or and -exclusions; Elasticsearch matches the words). Both engines
// tolerate typos and match word prefixes; the contract suite (search/searchtest) pins what they
// share.
package search

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Paging limits shared by both engines.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// MaxTextLength bounds the free text of a search, in bytes: longer text is refused, not truncated.
const MaxTextLength = 256

// ErrBadCursor means a cursor was not issued by this search (another search, another sort, or not a
// cursor at all). The query service maps it to 400.
var ErrBadCursor = errors.New("not a cursor of this search")

// ErrUnavailable means the engine could not be reached or answered that it is overloaded; the query
// service maps it to 503 with Retry-After. Adapters wrap it around such failures.
var ErrUnavailable = errors.New("search engine unavailable")

// Sort orders product results.
type Sort string

// The product sorts. Relevance is the default when there is text, Name otherwise.
const (
	SortRelevance Sort = "relevance"
	SortPriceAsc  Sort = "price"
	SortPriceDesc Sort = "-price"
	SortName      Sort = "name"
	SortNewest    Sort = "newest"
)

// Sorts lists the valid values of Sort.
var Sorts = []Sort{SortRelevance, SortPriceAsc, SortPriceDesc, SortName, SortNewest}

// ProductQuery is a product search. The zero value finds every product, by name.
type ProductQuery struct {
	// Text is free text matched against name (weighted highest), SKU, tags, category and description.
	Text string
	// Category keeps products of this category only. Facets ignore it (see [ProductResults]).
	Category string
	// MinPriceCents and MaxPriceCents bound the price, inclusive, in minor units.
	MinPriceCents, MaxPriceCents *int64
	// InStock, when set, keeps products with (true) or without (false) stock on hand.
	InStock *bool
	// Sort orders the results; empty means relevance with Text, name without.
	Sort Sort
	// Cursor continues a previous search: its NextCursor. It must come from the same query.
	Cursor string
	// Limit is the page size, 1 to MaxLimit; 0 means DefaultLimit.
	Limit int
}

// Product is a product as search returns it.
type Product struct {
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
	CreatedAt    time.Time `json:"created_at"`
	Version      uint64    `json:"version"`
	// Highlights maps a field (name, description) to snippets in which the matched words are wrapped in
	// <em>…</em>; the rest of the snippet is HTML-escaped, so it is safe to show as HTML.
	Highlights map[string][]string `json:"highlights,omitempty"`
}

// Facet is one value of a field with the number of results that have it.
type Facet struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// ProductResults is a page of a product search.
type ProductResults struct {
	Items []Product
	// Total counts every product matching the query, not only this page.
	Total int64
	// Categories counts the matching products per category, most first, then by name. They are
	// counted with every filter except Category, so a client can offer the other categories.
	Categories []Facet
	// NextCursor continues the search; empty on the last page.
	NextCursor string
}

// OrderQuery is an order search. The zero value finds every order, newest first.
type OrderQuery struct {
	// Text is free text matched against the customer's name and email, the SKUs and the product
	// names of the lines. Results are by relevance with Text, newest first without.
	Text string
	// Status keeps orders in this status only.
	Status string
	// From and To bound the time the order was placed: From inclusive, To exclusive.
	From, To *time.Time
	// Cursor continues a previous search: its NextCursor. It must come from the same query.
	Cursor string
	// Limit is the page size, 1 to MaxLimit; 0 means DefaultLimit.
	Limit int
}

// Order is an order as search returns it.
type Order struct {
	ID            string    `json:"id"`
	CustomerID    string    `json:"customer_id"`
	CustomerName  string    `json:"customer_name"`
	CustomerEmail string    `json:"customer_email"`
	Status        string    `json:"status"`
	SKUs          []string  `json:"skus"`
	ProductNames  []string  `json:"product_names"`
	TotalCents    int64     `json:"total_cents"`
	Currency      string    `json:"currency"`
	PlacedAt      time.Time `json:"placed_at"`
	Version       uint64    `json:"version"`
	// Highlights is as in [Product], for customer_name and product_names.
	Highlights map[string][]string `json:"highlights,omitempty"`
}

// OrderResults is a page of an order search.
type OrderResults struct {
	Items []Order
	// Total counts every order matching the query.
	Total int64
	// Statuses counts the matching orders per status, counted with every filter except Status.
	Statuses []Facet
	// NextCursor continues the search; empty on the last page.
	NextCursor string
}

// Index is a search engine holding the product and order search models.
type Index interface {
	// Engine names the engine: "postgres" or "elasticsearch".
	Engine() string
	// Projections names the projections that feed the product and the order models: a search waits
	// on them for consistency tokens.
	Projections() (products, orders string)
	// Refresh returns once everything the projections had committed when it was called is searchable.
	Refresh(ctx context.Context) error
	// SearchProducts runs a product search. A query that fails [ProductQuery.Validate] is refused
	// with its error; a foreign cursor with [ErrBadCursor].
	SearchProducts(ctx context.Context, q ProductQuery) (ProductResults, error)
	// SearchOrders runs an order search, with the same rules.
	SearchOrders(ctx context.Context, q OrderQuery) (OrderResults, error)
}

// InvalidError describes a query that cannot run; the query service maps it to 400.
type InvalidError struct {
	Field, Problem string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Problem) }

// Validate checks q and fills its defaults: Limit and Sort. Text is trimmed.
func (q *ProductQuery) Validate() error {
	q.Text = strings.TrimSpace(q.Text)
	if err := validateText("q", q.Text); err != nil {
		return err
	}
	if err := validateText("category", q.Category); err != nil {
		return err
	}
	if err := validateLimit(&q.Limit); err != nil {
		return err
	}
	switch {
	case q.MinPriceCents != nil && *q.MinPriceCents < 0:
		return &InvalidError{"min_price", "must not be negative"}
	case q.MaxPriceCents != nil && *q.MaxPriceCents < 0:
		return &InvalidError{"max_price", "must not be negative"}
	case q.MinPriceCents != nil && q.MaxPriceCents != nil && *q.MinPriceCents > *q.MaxPriceCents:
		return &InvalidError{"min_price", "must not exceed max_price"}
	}
	if q.Sort == "" {
		q.Sort = SortName
		if q.Text != "" {
			q.Sort = SortRelevance
		}
	}
	if !slices.Contains(Sorts, q.Sort) {
		return &InvalidError{"sort", fmt.Sprintf("must be one of %v", Sorts)}
	}
	if q.Sort == SortRelevance && q.Text == "" {
		return &InvalidError{"sort", "relevance needs text (q)"}
	}
	return nil
}

// Validate checks q and fills its default Limit. Text is trimmed.
func (q *OrderQuery) Validate() error {
	q.Text = strings.TrimSpace(q.Text)
	if err := validateText("q", q.Text); err != nil {
		return err
	}
	if err := validateText("status", q.Status); err != nil {
		return err
	}
	if err := validateLimit(&q.Limit); err != nil {
		return err
	}
	if q.From != nil && q.To != nil && !q.From.Before(*q.To) {
		return &InvalidError{"from", "must be before to"}
	}
	return nil
}

// validateText refuses what no engine can take as text: very long strings, invalid UTF-8 and control
// characters (PostgreSQL refuses NUL in text, which would otherwise surface as a server error).
func validateText(field, s string) error {
	switch {
	case len(s) > MaxTextLength:
		return &InvalidError{field, fmt.Sprintf("longer than %d bytes", MaxTextLength)}
	case !utf8.ValidString(s):
		return &InvalidError{field, "not valid UTF-8"}
	case strings.ContainsFunc(s, unicode.IsControl):
		return &InvalidError{field, "contains control characters"}
	}
	return nil
}

func validateLimit(limit *int) error {
	switch {
	case *limit == 0:
		*limit = DefaultLimit
	case *limit < 0 || *limit > MaxLimit:
		return &InvalidError{"limit", fmt.Sprintf("must be between 1 and %d", MaxLimit)}
	}
	return nil
}
