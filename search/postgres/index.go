package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/search"
)

// Index searches the search models that [Products] and [Orders] keep. It is safe for concurrent use.
type Index struct {
	pool             *pgxpool.Pool
	products, orders string // the projections that keep the models
}

var _ search.Index = (*Index)(nil)

// New returns an index over the database behind pool, migrated with migrations.ReadModel, whose
// models [Products] and [Orders] keep.
func New(pool *pgxpool.Pool) *Index {
	return &Index{pool: pool, products: ProductsProjection, orders: OrdersProjection}
}

// KeptBy returns a copy of the index whose models are kept by the projections named products and
// orders instead: projections that apply [Products] and [Orders] as part of themselves
// (projector.Combine). A consistency token on a search waits for them.
func (i *Index) KeptBy(products, orders string) *Index {
	return &Index{pool: i.pool, products: products, orders: orders}
}

// Engine implements search.Index: "postgres".
func (*Index) Engine() string { return "postgres" }

// Projections implements search.Index: "products-search" and "orders-search", or those of KeptBy.
func (i *Index) Projections() (products, orders string) { return i.products, i.orders }

// Refresh implements search.Index. It has nothing to do: the projector commits the models in the
// transaction that records their stream versions, so whatever a consistency token waited for is
// already visible.
func (*Index) Refresh(context.Context) error { return nil }

// maxCorrections bounds the typo corrections of one word, like Elasticsearch's max_expansions.
const maxCorrections = 50

// candidates lists, for every word of the text that could have a typo (three letters or more),
// the vocabulary words most similar to it by trigrams: its candidate corrections. The trigram
// index serves the % operator (similarity of at least pg_trgm.similarity_threshold, 0.3 by default).
const candidates = `SELECT t.term, c.word
	FROM unnest(tsvector_to_array(to_tsvector('simple', $1))) AS t(term)
	CROSS JOIN LATERAL (
		SELECT v.word FROM %s AS v
		WHERE v.word OPERATOR(public.%%) t.term
		GROUP BY v.word
		ORDER BY public.similarity(v.word, t.term) DESC, v.word
		LIMIT %d) AS c
	WHERE char_length(t.term) >= 3 AND t.term !~ '[^[:alpha:]]'`

// parseText has PostgreSQL parse text as a web search and looks up the typo corrections of its
// words, in one round trip, then widens the words ([widen]). ok is false when the text has no
// words at all (only punctuation, say): it matches nothing. An empty text is no text search: it
// returns the zero textQuery and ok, without a round trip.
func (x *Index) parseText(ctx context.Context, text, vocabulary string) (tq textQuery, ok bool, err error) {
	if text == "" {
		return textQuery{}, true, nil
	}
	b := &pgx.Batch{}
	var parsed string
	b.Queue(`SELECT websearch_to_tsquery('simple', $1)::text`, text).QueryRow(func(row pgx.Row) error {
		return row.Scan(&parsed)
	})
	cands := map[string][]string{}
	b.Queue(fmt.Sprintf(candidates, vocabulary, maxCorrections), text).Query(func(rows pgx.Rows) error {
		var term, word string
		_, err := pgx.ForEachRow(rows, []any{&term, &word}, func() error {
			cands[term] = append(cands[term], word)
			return nil
		})
		return err
	})
	if err := x.pool.SendBatch(ctx, b).Close(); err != nil {
		return textQuery{}, false, fmt.Errorf("parse search text: %w", err)
	}
	if parsed == "" {
		return textQuery{}, false, nil
	}
	tq, err = widen(parsed, corrections(cands))
	if err != nil {
		return textQuery{}, false, fmt.Errorf("parse search text: %w", err)
	}
	return tq, true, nil
}

// args collects the bind parameters of a statement.
type args []any

// add binds v and returns its placeholder.
func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// sortKey is one key of a sort before the final id: its SQL expression over the row p, the SQL type
// of its cursor value and its direction.
type sortKey struct {
	expr  string
	typ   string // the SQL type of a cursor value
	desc  bool
	value func() any // a new value of the Go type the key scans into, which a cursor carries
}

func stringKey() any  { return new(string) }
func int64Key() any   { return new(int64) }
func timeKey() any    { return new(time.Time) }
func float32Key() any { return new(float32) }

// order returns the ORDER BY list of keys then the id, over the expressions or (inner=false) over
// the columns k0, k1… of a subquery m.
func order(keys []sortKey, inner bool) string {
	var parts []string
	for i, k := range keys {
		e := k.expr
		if !inner {
			e = "m.k" + strconv.Itoa(i)
		}
		if k.desc {
			e += " DESC"
		}
		parts = append(parts, e)
	}
	if inner {
		return strings.Join(append(parts, "p.id"), ", ")
	}
	return strings.Join(append(parts, "m.id"), ", ")
}

// keyset returns the condition that a row sorts after the cursor's values: the keys in order, then
// the id ascending. The first key is also bounded on its own, so that an index on it can serve.
func keyset(a *args, keys []sortKey, values []any, id string) string {
	cond := "p.id > " + a.add(id) + "::uuid"
	var first string
	for i := len(keys) - 1; i >= 0; i-- {
		k, v := keys[i], a.add(values[i])+"::"+keys[i].typ
		op := ">"
		if k.desc {
			op = "<"
		}
		cond = fmt.Sprintf("(%s %s %s OR (%[1]s = %[3]s AND %s))", k.expr, op, v, cond)
		first = fmt.Sprintf("%s %s= %s", k.expr, op, v)
	}
	if first == "" {
		return cond
	}
	return first + " AND " + cond
}

// decodeCursor returns the key values and the id of cursor, typed as keys says; none for an empty
// cursor (the first page).
func decodeCursor(cursor, fingerprint string, keys []sortKey) ([]any, string, error) {
	if cursor == "" {
		return nil, "", nil
	}
	raw, err := search.DecodeCursor(cursor, fingerprint, len(keys)+1)
	if err != nil {
		return nil, "", err
	}
	values := make([]any, len(keys))
	for i, k := range keys {
		values[i] = k.value()
		if err := json.Unmarshal(raw[i], values[i]); err != nil {
			return nil, "", search.ErrBadCursor
		}
		if s, ok := values[i].(*string); ok && strings.ContainsRune(*s, 0) {
			return nil, "", search.ErrBadCursor // PostgreSQL text cannot hold NUL
		}
	}
	var id string
	if err := json.Unmarshal(raw[len(keys)], &id); err != nil {
		return nil, "", search.ErrBadCursor
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, "", search.ErrBadCursor
	}
	return values, id, nil
}

// keyColumns returns the select lists of keys: the columns m.k0, m.k1… of the outer query, and the
// expressions that the inner query names so.
func keyColumns(keys []sortKey) (outer, inner string) {
	cols, exprs := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		cols[i] = "m.k" + strconv.Itoa(i)
		exprs[i] = k.expr + " AS k" + strconv.Itoa(i)
	}
	return strings.Join(cols, ", "), strings.Join(exprs, ", ")
}

// keyValues returns new values to scan the keys of a row into, which its cursor carries.
func keyValues(keys []sortKey) []any {
	values := make([]any, len(keys))
	for i, k := range keys {
		values[i] = k.value()
	}
	return values
}

// trim cuts the rows of a page, fetched one more than limit, to limit. When there were more, cursor
// is the cursor after the last row kept, whose sort values after returns.
func trim[R any](rows []R, limit int, fingerprint string, after func(R) []any) (_ []R, cursor string, _ error) {
	if len(rows) <= limit {
		return rows, "", nil
	}
	rows = rows[:limit]
	cursor, err := search.EncodeCursor(fingerprint, after(rows[limit-1])...)
	if err != nil {
		return nil, "", err
	}
	return rows, cursor, nil
}

// score ranks a document for relevance: cover density of everything that matched, plus that of the
// words as typed, so that exact matches rank above prefixes and corrections. Field weights are
// ts_rank_cd's defaults: A (names) 1, B 0.4, C (descriptions) 0.2. The expression is computed the same
// way for the ORDER BY and for the keyset condition, and its real value travels in the cursor
// unchanged, so paging by relevance neither skips nor repeats.
func score(a *args, tq textQuery) string {
	return fmt.Sprintf("(ts_rank_cd(p.document, %s::text::tsquery) + ts_rank_cd(p.document, %s::text::tsquery))",
		a.add(tq.loose), a.add(tq.exact))
}

// page is a query's page and facets: the rows of the page (one more than the limit, to know whether
// there is a next page), and the facet counts.
func page[T any](ctx context.Context, pool *pgxpool.Pool, pageSQL string, pageArgs args, scan pgx.RowToFunc[T],
	facetSQL string, facetArgs args,
) ([]T, []search.Facet, error) {
	b := &pgx.Batch{}
	var rows []T
	var facets []search.Facet
	b.Queue(pageSQL, pageArgs...).Query(func(r pgx.Rows) error {
		var err error
		rows, err = pgx.CollectRows(r, scan)
		return err
	})
	b.Queue(facetSQL, facetArgs...).Query(func(r pgx.Rows) error {
		var err error
		facets, err = pgx.CollectRows(r, pgx.RowToStructByPos[search.Facet])
		return err
	})
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, err
	}
	return rows, facets, nil
}

// total is the number of matches: the count of the filtered value's facet, or of all facets when the
// query does not filter on the facet's field.
func total(facets []search.Facet, filter string) int64 {
	var n int64
	for _, f := range facets {
		if filter == "" || f.Value == filter {
			n += f.Count
		}
	}
	return n
}

func where(conds []string) string {
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}

func productKeys(s search.Sort, scoreExpr string) []sortKey {
	switch s {
	case search.SortRelevance:
		return []sortKey{{expr: scoreExpr, typ: "real", desc: true, value: float32Key}}
	case search.SortPriceAsc:
		return []sortKey{{expr: "p.price_cents", typ: "bigint", value: int64Key}}
	case search.SortPriceDesc:
		return []sortKey{{expr: "p.price_cents", typ: "bigint", desc: true, value: int64Key}}
	case search.SortNewest:
		return []sortKey{{expr: "p.created_at", typ: "timestamptz", desc: true, value: timeKey}}
	default: // search.SortName: Validate refuses anything else
		return []sortKey{{expr: `lower(p.name) COLLATE "C"`, typ: "text", value: stringKey}}
	}
}

// productRow is a row of a product page: the product, its sort keys and its headlines.
type productRow struct {
	search.Product
	keys                      []any
	headName, headDescription string
}

// SearchProducts implements search.Index. Besides [search.InvalidError] and [search.ErrBadCursor]
// it fails when PostgreSQL does.
func (x *Index) SearchProducts(ctx context.Context, q search.ProductQuery) (search.ProductResults, error) {
	if err := q.Validate(); err != nil {
		return search.ProductResults{}, err
	}
	fp := q.Fingerprint()
	values, afterID, err := decodeCursor(q.Cursor, fp, productKeys(q.Sort, ""))
	if err != nil {
		return search.ProductResults{}, err
	}
	tq, ok, err := x.parseText(ctx, q.Text, "search_product_words")
	if err != nil {
		return search.ProductResults{}, fmt.Errorf("search products: %w", err)
	}
	if !ok {
		return search.ProductResults{Items: []search.Product{}, Categories: []search.Facet{}}, nil
	}

	var pa, fa args
	filters := func(a *args, category bool) []string {
		var conds []string
		if q.Text != "" {
			conds = append(conds, "p.document @@ "+a.add(tq.match)+"::text::tsquery")
		}
		if category && q.Category != "" {
			conds = append(conds, "p.category = "+a.add(q.Category))
		}
		if q.MinPriceCents != nil {
			conds = append(conds, "p.price_cents >= "+a.add(*q.MinPriceCents))
		}
		if q.MaxPriceCents != nil {
			conds = append(conds, "p.price_cents <= "+a.add(*q.MaxPriceCents))
		}
		if q.InStock != nil {
			conds = append(conds, map[bool]string{true: "p.stock > 0", false: "p.stock <= 0"}[*q.InStock])
		}
		return conds
	}
	conds := filters(&pa, true)
	var scoreExpr string
	if q.Sort == search.SortRelevance {
		scoreExpr = score(&pa, tq)
	}
	keys := productKeys(q.Sort, scoreExpr)
	if q.Cursor != "" {
		conds = append(conds, keyset(&pa, keys, values, afterID))
	}
	heads := `'', ''`
	if q.Text != "" {
		h := pa.add(tq.loose) + "::text::tsquery"
		heads = fmt.Sprintf(`ts_headline('simple', m.name, %[1]s, %[2]s), ts_headline('simple', m.description, %[1]s, %[3]s)`,
			h, pa.add(headlineWhole), pa.add(headlineFragments))
	}
	pageSQL := pageQuery(&pa, "search_products", "id, sku, name, description, category, price_cents, currency, tags, stock, discontinued, version, created_at",
		heads, keys, conds, q.Limit)
	facetSQL := facetQuery("search_products", "category", filters(&fa, false))

	scan := func(row pgx.CollectableRow) (productRow, error) {
		var r productRow
		var version int64
		r.keys = keyValues(keys)
		dest := []any{&r.ID, &r.SKU, &r.Name, &r.Description, &r.Category, &r.PriceCents, &r.Currency, &r.Tags,
			&r.Stock, &r.Discontinued, &version, &r.CreatedAt}
		err := row.Scan(append(append(dest, r.keys...), &r.headName, &r.headDescription)...)
		r.Version, r.CreatedAt = uint64(version), r.CreatedAt.UTC()
		return r, err
	}
	rows, facets, err := page(ctx, x.pool, pageSQL, pa, scan, facetSQL, fa)
	if err != nil {
		return search.ProductResults{}, fmt.Errorf("search products: %w", err)
	}
	rows, next, err := trim(rows, q.Limit, fp, func(r productRow) []any { return append(r.keys, r.ID) })
	if err != nil {
		return search.ProductResults{}, err
	}
	res := search.ProductResults{Items: make([]search.Product, 0, len(rows)), Categories: facets,
		Total: total(facets, q.Category), NextCursor: next}
	for _, r := range rows {
		p := r.Product
		p.Highlights = highlights(map[string][]string{
			"name": snippets(r.headName), "description": snippets(r.headDescription)})
		res.Items = append(res.Items, p)
	}
	return res, nil
}

// pageQuery returns the SQL of a page of table's rows that match conds: their columns (a
// comma-separated list), their sort keys, and heads, the headline expressions over the page's rows
// (m), which are computed only for the limit+1 rows of the page.
func pageQuery(a *args, table, columns, heads string, keys []sortKey, conds []string, limit int) string {
	qualified := func(alias string) string {
		cols := strings.Split(columns, ", ")
		for i, c := range cols {
			cols[i] = alias + "." + c
		}
		return strings.Join(cols, ", ")
	}
	outerKeys, innerKeys := keyColumns(keys)
	return fmt.Sprintf(`SELECT %s, %s, %s
		FROM (
			SELECT %s, %s
			FROM %s AS p
			WHERE %s
			ORDER BY %s
			LIMIT %s
		) AS m
		ORDER BY %s`,
		qualified("m"), outerKeys, heads, qualified("p"), innerKeys, table, where(conds), order(keys, true), a.add(limit+1), order(keys, false))
}

// facetQuery returns the SQL counting table's rows that match conds by column, most first.
func facetQuery(table, column string, conds []string) string {
	return fmt.Sprintf(`SELECT p.%[2]s, count(*) FROM %[1]s AS p WHERE %[3]s
		GROUP BY p.%[2]s ORDER BY count(*) DESC, p.%[2]s`, table, column, where(conds))
}

// highlights returns the fields of byField that have snippets, or nil when none has.
func highlights(byField map[string][]string) map[string][]string {
	for f, s := range byField {
		if len(s) == 0 {
			delete(byField, f)
		}
	}
	if len(byField) == 0 {
		return nil
	}
	return byField
}

func orderKeys(text bool, scoreExpr string) []sortKey {
	newest := sortKey{expr: "p.placed_at", typ: "timestamptz", desc: true, value: timeKey}
	if text {
		return []sortKey{{expr: scoreExpr, typ: "real", desc: true, value: float32Key}, newest}
	}
	return []sortKey{newest}
}

// orderRow is a row of an order page: the order, its sort keys and its headlines.
type orderRow struct {
	search.Order
	keys             []any
	headCustomer     string
	headProductNames []string
}

// SearchOrders implements search.Index, as SearchProducts does.
func (x *Index) SearchOrders(ctx context.Context, q search.OrderQuery) (search.OrderResults, error) {
	if err := q.Validate(); err != nil {
		return search.OrderResults{}, err
	}
	fp := q.Fingerprint()
	values, afterID, err := decodeCursor(q.Cursor, fp, orderKeys(q.Text != "", ""))
	if err != nil {
		return search.OrderResults{}, err
	}
	tq, ok, err := x.parseText(ctx, q.Text, "search_order_words")
	if err != nil {
		return search.OrderResults{}, fmt.Errorf("search orders: %w", err)
	}
	if !ok {
		return search.OrderResults{Items: []search.Order{}, Statuses: []search.Facet{}}, nil
	}

	var pa, fa args
	filters := func(a *args, status bool) []string {
		var conds []string
		if q.Text != "" {
			conds = append(conds, "p.document @@ "+a.add(tq.match)+"::text::tsquery")
		}
		if status && q.Status != "" {
			conds = append(conds, "p.status = "+a.add(q.Status))
		}
		if q.From != nil {
			conds = append(conds, "p.placed_at >= "+a.add(*q.From))
		}
		if q.To != nil {
			conds = append(conds, "p.placed_at < "+a.add(*q.To))
		}
		return conds
	}
	conds := filters(&pa, true)
	var scoreExpr string
	if q.Text != "" {
		scoreExpr = score(&pa, tq)
	}
	keys := orderKeys(q.Text != "", scoreExpr)
	if q.Cursor != "" {
		conds = append(conds, keyset(&pa, keys, values, afterID))
	}
	heads := `'', '{}'::text[]`
	if q.Text != "" {
		h, whole := pa.add(tq.loose)+"::text::tsquery", pa.add(headlineWhole)
		heads = fmt.Sprintf(`ts_headline('simple', m.customer_name, %s, %s),
			ARRAY(SELECT ts_headline('simple', n, %[1]s, %[2]s) FROM unnest(m.product_names) AS n)`, h, whole)
	}
	pageSQL := pageQuery(&pa, "search_orders", "id, customer_id, customer_name, customer_email, status, skus, product_names, total_cents, currency, placed_at, version",
		heads, keys, conds, q.Limit)
	facetSQL := facetQuery("search_orders", "status", filters(&fa, false))

	scan := func(row pgx.CollectableRow) (orderRow, error) {
		var r orderRow
		var version int64
		dest := []any{&r.ID, &r.CustomerID, &r.CustomerName, &r.CustomerEmail, &r.Status, &r.SKUs,
			&r.ProductNames, &r.TotalCents, &r.Currency, &r.PlacedAt, &version}
		r.keys = keyValues(keys)
		err := row.Scan(append(append(dest, r.keys...), &r.headCustomer, &r.headProductNames)...)
		r.Version, r.PlacedAt = uint64(version), r.PlacedAt.UTC()
		return r, err
	}
	rows, facets, err := page(ctx, x.pool, pageSQL, pa, scan, facetSQL, fa)
	if err != nil {
		return search.OrderResults{}, fmt.Errorf("search orders: %w", err)
	}
	rows, next, err := trim(rows, q.Limit, fp, func(r orderRow) []any { return append(r.keys, r.ID) })
	if err != nil {
		return search.OrderResults{}, err
	}
	res := search.OrderResults{Items: make([]search.Order, 0, len(rows)), Statuses: facets,
		Total: total(facets, q.Status), NextCursor: next}
	for _, r := range rows {
		o := r.Order
		o.Highlights = highlights(map[string][]string{
			"customer_name": snippets(r.headCustomer), "product_names": snippets(r.headProductNames...)})
		res.Items = append(res.Items, o)
	}
	return res, nil
}
