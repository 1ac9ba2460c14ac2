package query

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/search"
)

// productSearch is the JSON of GET /v1/search/products.
type productSearch struct {
	Items      []search.Product `json:"items"`
	Total      int64            `json:"total"`
	Facets     productFacets    `json:"facets"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

type productFacets struct {
	Category []search.Facet `json:"category"`
}

// orderSearch is the JSON of GET /v1/search/orders.
type orderSearch struct {
	Items      []search.Order `json:"items"`
	Total      int64          `json:"total"`
	Facets     orderFacets    `json:"facets"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

type orderFacets struct {
	Status []search.Facet `json:"status"`
}

// searchProducts answers GET /v1/search/products?q=&category=&min_price=&max_price=&in_stock=&sort=&cursor=&limit=.
// Prices are in minor units, like price_cents.
func (a *api) searchProducts(w http.ResponseWriter, r *http.Request) error {
	v, err := searchParams(r)
	if err != nil {
		return err
	}
	q := search.ProductQuery{Text: v.Get("q"), Category: v.Get("category"), Sort: search.Sort(v.Get("sort")), Cursor: v.Get("cursor")}
	if q.MinPriceCents, err = optionalInt(v, "min_price"); err != nil {
		return err
	}
	if q.MaxPriceCents, err = optionalInt(v, "max_price"); err != nil {
		return err
	}
	if q.InStock, err = optionalBool(v, "in_stock"); err != nil {
		return err
	}
	if q.Limit, err = searchLimit(v); err != nil {
		return err
	}
	if err := q.Validate(); err != nil { // before waiting: a bad query fails at once
		return err
	}
	products, _ := a.opts.Search.Projections()
	tok, err := a.searchable(w, r, products, events.ProductAggregate)
	if err != nil {
		return err
	}
	res, err := a.opts.Search.SearchProducts(r.Context(), q)
	if err != nil {
		return fmt.Errorf("search products: %w", err)
	}
	out := productSearch{Items: res.Items, Total: res.Total, Facets: productFacets{Category: res.Categories}, NextCursor: res.NextCursor}
	for _, p := range res.Items {
		tok = withStream(tok, events.StreamName(events.ProductAggregate, p.ID), p.Version)
	}
	writeSearch(w, out, tok)
	return nil
}

// searchOrders answers GET /v1/search/orders?q=&status=&from=&to=&cursor=&limit=. from and to are
// RFC 3339 times.
func (a *api) searchOrders(w http.ResponseWriter, r *http.Request) error {
	v, err := searchParams(r)
	if err != nil {
		return err
	}
	q := search.OrderQuery{Text: v.Get("q"), Status: v.Get("status"), Cursor: v.Get("cursor")}
	if q.From, err = optionalTime(v, "from"); err != nil {
		return err
	}
	if q.To, err = optionalTime(v, "to"); err != nil {
		return err
	}
	if q.Limit, err = searchLimit(v); err != nil {
		return err
	}
	if err := q.Validate(); err != nil {
		return err
	}
	_, orders := a.opts.Search.Projections()
	tok, err := a.searchable(w, r, orders, events.OrderAggregate)
	if err != nil {
		return err
	}
	res, err := a.opts.Search.SearchOrders(r.Context(), q)
	if err != nil {
		return fmt.Errorf("search orders: %w", err)
	}
	out := orderSearch{Items: res.Items, Total: res.Total, Facets: orderFacets{Status: res.Statuses}, NextCursor: res.NextCursor}
	for _, o := range res.Items {
		tok = withStream(tok, events.StreamName(events.OrderAggregate, o.ID), o.Version)
	}
	writeSearch(w, out, tok)
	return nil
}

// searchable is [api.consistent] for a search model: once the projection has applied the token's
// streams, the engine is asked to make them searchable (Elasticsearch shows writes only after a
// refresh). Requests without a token read whatever is searchable and cost no refresh.
func (a *api) searchable(w http.ResponseWriter, r *http.Request, projection, aggregate string) (consistency.Token, error) {
	tok, err := a.consistent(w, r, projection, aggregate)
	if err != nil {
		return tok, err
	}
	if len(streamsOf(tok, aggregate)) == 0 {
		return tok, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.MaxWait)
	defer cancel()
	if err := a.opts.Search.Refresh(ctx); err != nil {
		return tok, fmt.Errorf("make %s searchable: %w", projection, err)
	}
	return tok, nil
}

func writeSearch(w http.ResponseWriter, v any, tok consistency.Token) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderConsistencyToken, tok.String())
	writeJSON(w, http.StatusOK, v)
}

// searchParams parses the query string of a search. r.URL.Query() drops, without a word, every pair
// it cannot decode (a bad %-escape such as q=100%, a raw semicolon), and the search would then run
// without it: a mangled min_price would widen the results, a mangled cursor would restart at the
// first page. Such a pair is refused instead, naming its parameter.
func searchParams(r *http.Request) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err == nil {
		return v, nil
	}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		name, value, _ := strings.Cut(pair, "=")
		_, nameErr := url.QueryUnescape(name)
		_, valueErr := url.QueryUnescape(value)
		if nameErr != nil || valueErr != nil || strings.Contains(pair, ";") {
			return nil, fmt.Errorf("query parameter %.40q: not percent-encoded (a %% or ; must be escaped): %w", name, problem.ErrMalformed)
		}
	}
	return nil, fmt.Errorf("query string: %v: %w", err, problem.ErrMalformed)
}

// searchLimit reads the limit of a search: 1 to search.MaxLimit, 0 (the engine's default) when absent.
func searchLimit(v url.Values) (int, error) { return limitParam(v, 0, search.MaxLimit) }

func optionalInt(v url.Values, name string) (*int64, error) {
	s := v.Get(name)
	if s == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s %q: want a whole number of minor units (cents), 0 or more: %w", name, s, problem.ErrMalformed)
	}
	return &n, nil
}

func optionalBool(v url.Values, name string) (*bool, error) {
	s := v.Get(name)
	if s == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: want true or false: %w", name, s, problem.ErrMalformed)
	}
	return &b, nil
}

func optionalTime(v url.Values, name string) (*time.Time, error) {
	s := v.Get(name)
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: want an RFC 3339 time such as 2026-01-31T00:00:00Z: %w", name, s, problem.ErrMalformed)
	}
	return &t, nil
}
