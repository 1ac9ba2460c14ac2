package query_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/projector"
	"github.com/strata-dev/strata/query"
	"github.com/strata-dev/strata/search"
	searchpg "github.com/strata-dev/strata/search/postgres"
	"github.com/strata-dev/strata/search/searchtest"
)

// countingIndex is a real search engine that counts the calls of Refresh; when fail is set, Refresh
// fails with it.
type countingIndex struct {
	search.Index
	fail      error
	refreshes atomic.Int64
}

func (x *countingIndex) Refresh(ctx context.Context) error {
	x.refreshes.Add(1)
	if x.fail != nil {
		return x.fail
	}
	return x.Index.Refresh(ctx)
}

// newSearchHarness is a harness whose query service searches with the PostgreSQL engine on the
// harness's schema, through a countingIndex whose Refresh fails with refreshErr, if given.
func newSearchHarness(t *testing.T, opts query.HandlerOptions, refreshErr ...error) (*harness, *countingIndex) {
	t.Helper()
	idx := &countingIndex{}
	if len(refreshErr) > 0 {
		idx.fail = refreshErr[0]
	}
	h := newHarness(t, harnessConfig{handler: opts, search: func(pool *pgxpool.Pool) search.Index {
		idx.Index = searchpg.New(pool)
		return idx
	}})
	return h, idx
}

// project applies evs through the search projections as the projector runtime does: each
// projection gets the events of its aggregate type, in order, in one transaction that also records
// the stream versions. It does not notify.
func (h *harness) project(t testing.TB, evs ...events.Envelope) {
	t.Helper()
	for _, p := range []projector.Projection{searchpg.Products{}, searchpg.Orders{}} {
		var mine []events.Envelope
		for _, e := range evs {
			if typ, _, _ := events.SplitStream(e.Stream); slices.Contains(p.AggregateTypes(), typ) {
				mine = append(mine, e)
			}
		}
		if len(mine) > 0 {
			require.NoError(t, projector.Apply(t.Context(), h.pool, p, mine), p.Name())
		}
	}
}

// productHits is the JSON of GET /v1/search/products.
type productHits struct {
	Items  []search.Product `json:"items"`
	Total  int64            `json:"total"`
	Facets struct {
		Category []search.Facet `json:"category"`
	} `json:"facets"`
	NextCursor *string `json:"next_cursor"`
}

// orderHits is the JSON of GET /v1/search/orders.
type orderHits struct {
	Items  []search.Order `json:"items"`
	Total  int64          `json:"total"`
	Facets struct {
		Status []search.Facet `json:"status"`
	} `json:"facets"`
	NextCursor *string `json:"next_cursor"`
}

func (p productHits) ids() []string {
	ids := make([]string, len(p.Items))
	for i, it := range p.Items {
		ids[i] = it.ID
	}
	return ids
}

func (p orderHits) ids() []string {
	ids := make([]string, len(p.Items))
	for i, it := range p.Items {
		ids[i] = it.ID
	}
	return ids
}

// searchOK checks what every successful search answer has in common: 200, JSON that holds exactly
// the fields of a search answer (decoded strictly into v), no caching, and a Consistency-Token that
// names every returned item's stream at least at the item's version.
func searchOK(t testing.TB, res response, v any) {
	t.Helper()
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	dec := json.NewDecoder(bytes.NewReader(res.Body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), "%s", res.Body)

	var shape struct {
		Items  []json.RawMessage          `json:"items"`
		Facets map[string]json.RawMessage `json:"facets"`
	}
	require.NoError(t, json.Unmarshal(res.Body, &shape))
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(res.Body, &top))
	require.Subset(t, keys(top), []string{"items", "total", "facets"})
	require.NotEqual(t, "null", string(top["items"]), "items is a list, even when empty")
	require.Len(t, shape.Facets, 1, "one facet field: %s", top["facets"])
	for name, f := range shape.Facets {
		require.NotEqual(t, "null", string(f), "facets.%s is a list, even when empty", name)
	}

	tok := res.token(t)
	var items []struct {
		ID      string `json:"id"`
		Version uint64 `json:"version"`
	}
	require.NoError(t, json.Unmarshal(top["items"], &items))
	aggregate := events.ProductAggregate
	if _, ok := shape.Facets["status"]; ok {
		aggregate = events.OrderAggregate
	}
	if len(items) > consistency.MaxStreams {
		return // a token names at most MaxStreams streams
	}
	for _, it := range items {
		stream := events.StreamName(aggregate, it.ID)
		require.Contains(t, tok, stream, "the response token names every item")
		require.GreaterOrEqual(t, tok[stream], it.Version)
	}
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// searchProducts runs a product search that must succeed.
func (h *harness) searchProducts(t testing.TB, params string, headers ...string) (productHits, response) {
	t.Helper()
	res := h.get(t, "/v1/search/products?"+params, headers...)
	var hits productHits
	searchOK(t, res, &hits)
	return hits, res
}

// searchOrders runs an order search that must succeed.
func (h *harness) searchOrders(t testing.TB, params string, headers ...string) (orderHits, response) {
	t.Helper()
	res := h.get(t, "/v1/search/orders?"+params, headers...)
	var hits orderHits
	searchOK(t, res, &hits)
	return hits, res
}

// catalog is a handful of products in the search model.
type catalog struct {
	hist                                     *searchtest.History
	lamp, kettle, headphones, speaker, cable string
	created                                  map[string]time.Time
	evs                                      []events.Envelope
}

// seedCatalog projects five products; lamp, headphones and cable have stock (version 2), kettle and
// speaker have none (version 1).
func seedCatalog(t *testing.T, h *harness) *catalog {
	t.Helper()
	c := &catalog{hist: searchtest.NewHistory(), created: map[string]time.Time{}}
	add := func(id *string, sku, name, description, category string, price int64) {
		var ev events.Envelope
		*id, ev = c.hist.Product(sku, name, description, category, price, "tagged")
		c.evs = append(c.evs, ev)
		c.created[*id] = ev.OccurredAt
	}
	add(&c.lamp, "HOM-001", "Desk Lamp", "A warm desk lamp", "home", 2900)
	add(&c.kettle, "KIT-001", "Electric Kettle", "Boils water", "kitchen", 3900)
	add(&c.headphones, "AUD-001", "Wireless Headphones", "Noise cancelling", "audio", 19900)
	add(&c.speaker, "AUD-002", "Wireless Speaker", "Portable", "audio", 9900)
	add(&c.cable, "ACC-001", "USB-C Cable", "Braided", "accessories", 900)
	c.evs = append(c.evs, c.hist.Stock(c.lamp, 3), c.hist.Stock(c.headphones, 5), c.hist.Stock(c.cable, 12))
	h.project(t, c.evs...)
	return c
}

func productStream(id string) string { return events.StreamName(events.ProductAggregate, id) }
func orderStream(id string) string   { return events.StreamName(events.OrderAggregate, id) }

func TestSearchProducts(t *testing.T) {
	t.Parallel()
	h, _ := newSearchHarness(t, query.HandlerOptions{})
	c := seedCatalog(t, h)

	t.Run("text", func(t *testing.T) {
		hits, res := h.searchProducts(t, "q=wireless")
		require.ElementsMatch(t, []string{c.headphones, c.speaker}, hits.ids())
		require.EqualValues(t, 2, hits.Total)
		require.Equal(t, []search.Facet{{Value: "audio", Count: 2}}, hits.Facets.Category)
		require.Nil(t, hits.NextCursor)
		require.NotContains(t, string(res.Body), "next_cursor", "no cursor on the last page")
		require.Equal(t, map[string]uint64{productStream(c.headphones): 2, productStream(c.speaker): 1}, res.token(t),
			"the token names the items' streams at their versions, and nothing else")

		i := slices.Index(hits.ids(), c.headphones)
		p := hits.Items[i]
		require.Equal(t, "AUD-001", p.SKU)
		require.Equal(t, "Wireless Headphones", p.Name)
		require.Equal(t, "Noise cancelling", p.Description)
		require.Equal(t, "audio", p.Category)
		require.EqualValues(t, 19900, p.PriceCents)
		require.Equal(t, "EUR", p.Currency)
		require.Equal(t, []string{"tagged"}, p.Tags)
		require.EqualValues(t, 5, p.Stock)
		require.False(t, p.Discontinued)
		require.Equal(t, c.created[c.headphones], p.CreatedAt)
		require.Equal(t, uint64(2), p.Version)
		require.Equal(t, []string{"<em>Wireless</em> Headphones"}, p.Highlights["name"])
	})

	t.Run("the request's token is merged into the answer's", func(t *testing.T) {
		other := orderStream(uuid.NewString()) // another aggregate type: not waited for, but kept
		_, res := h.searchProducts(t, "q=wireless", query.HeaderConsistencyToken,
			tokenFor(productStream(c.headphones), 1, other, 3, productStream(c.kettle), 1))
		require.Equal(t, map[string]uint64{
			productStream(c.headphones): 2, // the item's version, above the token's
			productStream(c.speaker):    1,
			productStream(c.kettle):     1, // not returned, but asked for
			other:                       3,
		}, res.token(t))
	})

	t.Run("nothing found", func(t *testing.T) {
		for _, q := range []string{"q=zeppelin", "q=" + url.QueryEscape("!!!"), "min_price=1000000"} {
			hits, res := h.searchProducts(t, q)
			require.JSONEq(t, `{"items": [], "total": 0, "facets": {"category": []}}`, string(res.Body), q)
			require.Empty(t, hits.Items)
			require.Empty(t, res.Header.Get(query.HeaderConsistencyToken), q)
		}
		hits, res := h.searchProducts(t, "category=garden")
		require.Empty(t, hits.Items)
		require.Zero(t, hits.Total)
		require.Len(t, hits.Facets.Category, 4, "the category filter does not narrow its own facets: %s", res.Body)
	})

	all := []search.Facet{{Value: "audio", Count: 2}, {Value: "accessories", Count: 1}, {Value: "home", Count: 1}, {Value: "kitchen", Count: 1}}
	for _, tt := range []struct {
		params  string
		want    []string
		ordered bool
		facets  []search.Facet
	}{
		{params: "", want: []string{c.lamp, c.kettle, c.cable, c.headphones, c.speaker}, ordered: true, facets: all},
		{params: "category=audio", want: []string{c.headphones, c.speaker}, ordered: true, facets: all},
		{params: "min_price=2900&max_price=9900", want: []string{c.lamp, c.kettle, c.speaker}, ordered: true,
			facets: []search.Facet{{Value: "audio", Count: 1}, {Value: "home", Count: 1}, {Value: "kitchen", Count: 1}}},
		{params: "min_price=10000", want: []string{c.headphones}, facets: []search.Facet{{Value: "audio", Count: 1}}},
		{params: "max_price=900", want: []string{c.cable}, facets: []search.Facet{{Value: "accessories", Count: 1}}},
		{params: "in_stock=true", want: []string{c.lamp, c.cable, c.headphones}, ordered: true,
			facets: []search.Facet{{Value: "accessories", Count: 1}, {Value: "audio", Count: 1}, {Value: "home", Count: 1}}},
		{params: "in_stock=false", want: []string{c.kettle, c.speaker}, ordered: true,
			facets: []search.Facet{{Value: "audio", Count: 1}, {Value: "kitchen", Count: 1}}},
		{params: "sort=price", want: []string{c.cable, c.lamp, c.kettle, c.speaker, c.headphones}, ordered: true, facets: all},
		{params: "sort=-price", want: []string{c.headphones, c.speaker, c.kettle, c.lamp, c.cable}, ordered: true, facets: all},
		{params: "sort=newest", want: []string{c.cable, c.speaker, c.headphones, c.kettle, c.lamp}, ordered: true, facets: all},
		{params: "sort=name", want: []string{c.lamp, c.kettle, c.cable, c.headphones, c.speaker}, ordered: true, facets: all},
		{params: "q=wireless&sort=relevance&category=audio&in_stock=false", want: []string{c.speaker},
			facets: []search.Facet{{Value: "audio", Count: 1}}},
		{params: "q=" + url.QueryEscape("  desk lamp  ") + "&sort=-price", want: []string{c.lamp},
			facets: []search.Facet{{Value: "home", Count: 1}}},
	} {
		t.Run("filter "+tt.params, func(t *testing.T) {
			hits, _ := h.searchProducts(t, tt.params)
			if tt.ordered {
				require.Equal(t, tt.want, hits.ids())
			} else {
				require.ElementsMatch(t, tt.want, hits.ids())
			}
			require.EqualValues(t, len(tt.want), hits.Total)
			require.Equal(t, tt.facets, hits.Facets.Category)
		})
	}

	t.Run("limit", func(t *testing.T) {
		hits, _ := h.searchProducts(t, "limit=2")
		require.Equal(t, []string{c.lamp, c.kettle}, hits.ids())
		require.EqualValues(t, 5, hits.Total, "the total counts every match, not the page")
		require.NotNil(t, hits.NextCursor)
		require.NotEmpty(t, *hits.NextCursor)
	})
}

// orderBook is a handful of orders in the search model.
type orderBook struct {
	hist                    *searchtest.History
	alice, bob, carol, dave string
	placed                  map[string]time.Time
}

// seedOrders projects four orders: alice cancelled (version 2), bob shipped (version 3), carol and
// dave pending (version 1), placed in that order, a second apart.
func seedOrders(t *testing.T, h *harness) *orderBook {
	t.Helper()
	b := &orderBook{hist: searchtest.NewHistory(), placed: map[string]time.Time{}}
	var evs []events.Envelope
	place := func(id *string, customer, email string, lines ...[2]string) {
		var ev events.Envelope
		*id, ev = b.hist.Order(customer, email, lines...)
		evs = append(evs, ev)
		b.placed[*id] = ev.OccurredAt
	}
	place(&b.alice, "Alice Martin", "alice@example.com", [2]string{"AUD-001", "Wireless Headphones"})
	place(&b.bob, "Bob Stone", "bob@shop.example", [2]string{"HOM-002", "Electric Kettle"}, [2]string{"ACC-001", "USB-C Cable"})
	place(&b.carol, "Carol Martin", "carol@example.org", [2]string{"HOM-001", "Desk Lamp"})
	place(&b.dave, "Dave Kettleby", "dave@example.com", [2]string{"AUD-003", "Sport Earbuds"})
	evs = append(evs,
		b.hist.Event(events.OrderAggregate, b.bob, events.OrderConfirmedV1{OrderID: b.bob}),
		b.hist.Event(events.OrderAggregate, b.bob, events.OrderShippedV1{OrderID: b.bob, Carrier: "DHL", TrackingNumber: "1"}),
		b.hist.Event(events.OrderAggregate, b.alice, events.OrderCancelledV1{OrderID: b.alice, Reason: "changed mind"}),
	)
	h.project(t, evs...)
	return b
}

// rfc3339 is t as a query parameter value.
func rfc3339(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339Nano)) }

func TestSearchOrders(t *testing.T) {
	t.Parallel()
	h, _ := newSearchHarness(t, query.HandlerOptions{})
	b := seedOrders(t, h)
	all := []search.Facet{{Value: "pending", Count: 2}, {Value: "cancelled", Count: 1}, {Value: "shipped", Count: 1}}

	t.Run("everything, newest first", func(t *testing.T) {
		hits, res := h.searchOrders(t, "")
		require.Equal(t, []string{b.dave, b.carol, b.bob, b.alice}, hits.ids())
		require.EqualValues(t, 4, hits.Total)
		require.Equal(t, all, hits.Facets.Status)
		require.Nil(t, hits.NextCursor)
		require.Equal(t, map[string]uint64{orderStream(b.alice): 2, orderStream(b.bob): 3, orderStream(b.carol): 1,
			orderStream(b.dave): 1}, res.token(t))
		o := hits.Items[2]
		require.Equal(t, "Bob Stone", o.CustomerName)
		require.Equal(t, "bob@shop.example", o.CustomerEmail)
		require.Equal(t, "shipped", o.Status)
		require.Equal(t, []string{"HOM-002", "ACC-001"}, o.SKUs)
		require.Equal(t, []string{"Electric Kettle", "USB-C Cable"}, o.ProductNames)
		require.EqualValues(t, 2000, o.TotalCents)
		require.Equal(t, b.placed[b.bob], o.PlacedAt)
		require.Equal(t, uint64(3), o.Version)
	})

	t.Run("the request's token is merged into the answer's", func(t *testing.T) {
		other := productStream(uuid.NewString())
		_, res := h.searchOrders(t, "status=shipped", query.HeaderConsistencyToken, tokenFor(orderStream(b.bob), 2, other, 7))
		require.Equal(t, map[string]uint64{orderStream(b.bob): 3, other: 7}, res.token(t))
	})

	t.Run("nothing found", func(t *testing.T) {
		for _, q := range []string{"q=zeppelin", "q=%2A", "from=" + rfc3339(b.placed[b.dave].Add(time.Second))} {
			_, res := h.searchOrders(t, q)
			require.JSONEq(t, `{"items": [], "total": 0, "facets": {"status": []}}`, string(res.Body), q)
		}
		hits, _ := h.searchOrders(t, "status=lost")
		require.Empty(t, hits.Items)
		require.Zero(t, hits.Total)
		require.Equal(t, all, hits.Facets.Status, "the status filter does not narrow its own facets")
	})

	inBerlin := b.placed[b.carol].In(time.FixedZone("CET", 3600)) // "+01:00", escaped as %2B01:00
	for _, tt := range []struct {
		params  string
		want    []string
		ordered bool
		facets  []search.Facet
	}{
		{params: "q=martin", want: []string{b.alice, b.carol}, facets: []search.Facet{{Value: "cancelled", Count: 1}, {Value: "pending", Count: 1}}},
		{params: "q=" + url.QueryEscape("bob@shop.example"), want: []string{b.bob}, facets: []search.Facet{{Value: "shipped", Count: 1}}},
		{params: "q=HOM-001", want: []string{b.carol}, facets: []search.Facet{{Value: "pending", Count: 1}}},
		{params: "status=pending", want: []string{b.dave, b.carol}, ordered: true, facets: all},
		{params: "from=" + rfc3339(b.placed[b.carol]), want: []string{b.dave, b.carol}, ordered: true,
			facets: []search.Facet{{Value: "pending", Count: 2}}},
		{params: "from=" + rfc3339(inBerlin), want: []string{b.dave, b.carol}, ordered: true,
			facets: []search.Facet{{Value: "pending", Count: 2}}},
		{params: "to=" + rfc3339(b.placed[b.bob]), want: []string{b.alice}, ordered: true,
			facets: []search.Facet{{Value: "cancelled", Count: 1}}},
		{params: "q=martin&status=pending&from=" + rfc3339(b.placed[b.bob]) + "&to=" + rfc3339(b.placed[b.dave]),
			want: []string{b.carol}, facets: []search.Facet{{Value: "pending", Count: 1}}},
	} {
		t.Run("filter "+tt.params, func(t *testing.T) {
			hits, _ := h.searchOrders(t, tt.params)
			if tt.ordered {
				require.Equal(t, tt.want, hits.ids())
			} else {
				require.ElementsMatch(t, tt.want, hits.ids())
			}
			require.EqualValues(t, len(tt.want), hits.Total)
			require.Equal(t, tt.facets, hits.Facets.Status)
		})
	}

	t.Run("limit", func(t *testing.T) {
		hits, _ := h.searchOrders(t, "limit=1")
		require.Equal(t, []string{b.dave}, hits.ids())
		require.EqualValues(t, 4, hits.Total)
		require.NotNil(t, hits.NextCursor)
	})
}

func TestSearchMalformedParameters(t *testing.T) {
	t.Parallel()
	h, idx := newSearchHarness(t, query.HandlerOptions{})
	c := seedCatalog(t, h)
	b := seedOrders(t, h)

	cursorOf := func(path string) string {
		t.Helper()
		res := h.get(t, path)
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		var p struct {
			NextCursor string `json:"next_cursor"`
		}
		require.NoError(t, json.Unmarshal(res.Body, &p))
		require.NotEmpty(t, p.NextCursor, path)
		return url.QueryEscape(p.NextCursor)
	}
	byPrice := cursorOf("/v1/search/products?sort=price&limit=1")
	ofOrders := cursorOf("/v1/search/orders?limit=1")
	h.putProduct(newProduct("Listed", "home"))
	h.putProduct(newProduct("Listed too", "home"))
	ofList := cursorOf("/v1/products?limit=1") // the product list's cursor, not a search's
	// Forged cursors of the right query (the default sort, by name) with values of the wrong kind.
	q := search.ProductQuery{}
	require.NoError(t, q.Validate())
	forged := func(after ...any) string {
		s, err := search.EncodeCursor(q.Fingerprint(), after...)
		require.NoError(t, err)
		return s
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	long := strings.Repeat("a", search.MaxTextLength+1)
	products := []struct{ params, names string }{
		{"min_price=abc", "min_price"},
		{"min_price=-1", "min_price"},
		{"min_price=1.5", "min_price"},
		{"min_price=99999999999999999999", "min_price"},
		{"max_price=abc", "max_price"},
		{"max_price=-5", "max_price"},
		{"min_price=10&max_price=5", "min_price"},
		{"in_stock=maybe", "in_stock"},
		{"in_stock=yes", "in_stock"},
		{"limit=0", "limit"},
		{"limit=-1", "limit"},
		{"limit=101", "limit"},
		{"limit=x", "limit"},
		{"limit=1.5", "limit"},
		{"sort=cheapest", "sort"},
		{"sort=PRICE", "sort"},
		{"sort=relevance", "sort"},
		{"sort=relevance&q=%20%20%20", "sort"},
		{"q=" + long, "q"},
		{"q=" + url.QueryEscape(strings.Repeat("é", search.MaxTextLength/2+1)), "q"},
		{"q=a%00b", "q"},
		{"q=%00", "q"},
		{"q=%FF%FE", "q"},
		{"category=a%00", "category"},
		{"cursor=%21%21%21", "cursor"},
		{"cursor=" + b64("garbage"), "cursor"},
		{"cursor=" + b64(`{"q":"x","a":[]}`), "cursor"},
		{"cursor=" + strings.Repeat("A", 5000), "cursor"},
		{"cursor=" + byPrice, "cursor"},                               // another sort
		{"cursor=" + byPrice + "&sort=price&in_stock=true", "cursor"}, // another filter
		{"cursor=" + ofOrders, "cursor"},
		{"cursor=" + ofList, "cursor"},
		{"cursor=" + forged(12, uuid.NewString()), "cursor"},
		{"cursor=" + forged("a\x00b", uuid.NewString()), "cursor"},
		{"cursor=" + forged("lamp", "not-a-uuid"), "cursor"},
		{"cursor=" + forged("lamp"), "cursor"},
		{"min_price=%zz", "min_price"}, // not percent-encoded: never silently ignored
		{"cursor=abc%", "cursor"},
		{"q=100%", "q"},
		{"q=a;b", "q"},
	}
	orders := []struct{ params, names string }{
		{"from=yesterday", "from"},
		{"from=2026-01-31", "from"},
		{"to=2026-13-01T00:00:00Z", "to"},
		{"from=" + rfc3339(b.placed[b.bob]) + "&to=" + rfc3339(b.placed[b.bob]), "from"},
		{"from=" + rfc3339(b.placed[b.carol]) + "&to=" + rfc3339(b.placed[b.bob]), "from"},
		{"limit=0", "limit"},
		{"limit=101", "limit"},
		{"limit=x", "limit"},
		{"q=" + long, "q"},
		{"q=a%00b", "q"},
		{"status=%00", "status"},
		{"cursor=%21%21%21", "cursor"},
		{"cursor=" + byPrice, "cursor"},
		{"cursor=" + ofOrders + "&q=martin", "cursor"},
		{"cursor=" + ofList, "cursor"},
		{"to=%zz", "to"},
	}
	check := func(t *testing.T, path, name string) {
		t.Helper()
		res := h.get(t, path)
		require.Equal(t, http.StatusBadRequest, res.Status, "%s: %s", path, res.Body)
		p := res.problem(t)
		require.Equal(t, http.StatusBadRequest, p.Status)
		require.Contains(t, []string{"https://strata.dev/problems/malformed-request", "https://strata.dev/problems/invalid-search"},
			p.Type, path)
		require.Contains(t, p.Detail, name, "the problem names the parameter: %s", path)
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	}
	for _, tt := range products {
		check(t, "/v1/search/products?"+tt.params, tt.names)
	}
	for _, tt := range orders {
		check(t, "/v1/search/orders?"+tt.params, tt.names)
	}
	require.Zero(t, idx.refreshes.Load())

	t.Run("a bad search fails at once, before waiting for its token", func(t *testing.T) {
		tok := tokenFor(productStream(uuid.NewString()), 1, orderStream(uuid.NewString()), 1) // never applied
		for _, path := range []string{"/v1/search/products?min_price=abc", "/v1/search/products?sort=relevance",
			"/v1/search/products?q=" + long, "/v1/search/orders?from=yesterday", "/v1/search/orders?limit=0"} {
			start := time.Now()
			res := h.get(t, path, query.HeaderConsistencyToken, tok, "Prefer", "wait=5")
			require.Equal(t, http.StatusBadRequest, res.Status, "%s: %s", path, res.Body)
			require.Less(t, time.Since(start), 2*time.Second, path)
		}
		require.Zero(t, idx.refreshes.Load())
	})

	t.Run("boundaries are valid", func(t *testing.T) {
		for _, params := range []string{"limit=1", "limit=100", "min_price=0", "max_price=0", "min_price=5&max_price=5",
			"in_stock=1", "in_stock=FALSE", "q=" + strings.Repeat("a", search.MaxTextLength), "q=" + url.QueryEscape(" lamp ") + "&sort=relevance",
			"cursor=", "sort=", "q=&sort=name"} {
			h.searchProducts(t, params)
		}
		for _, params := range []string{"limit=100", "from=" + rfc3339(b.placed[b.bob]) + "&to=" + rfc3339(b.placed[b.bob].Add(time.Microsecond)),
			"status=", "from=2026-01-01T00:00:00.5%2B02:00"} {
			h.searchOrders(t, params)
		}
	})

	t.Run("hostile text is just text", func(t *testing.T) {
		for _, q := range []string{
			`"`, `""`, `"wireless`, `(`, `)`, `[`, `]`, `{`, `}`, `\`, `/`, `*`, `?`, `~`, `^`, `:`, `!`, `&`, `|`, `<->`,
			`-`, `--`, `+`, `OR`, `AND`, `NOT`, `or or`, `a:b`, `name:wireless`, `wireless AND`, `title:(x OR y)`,
			`'; DROP TABLE search_products; --`, `%`, `_`, `' OR '1'='1`, `$1`, `::text`, `\x00`, `😀`, `日本語`,
			`wireless~2`, `wirel*`, `/.*/`, `{"match_all":{}}`, `{"query":{"match_all":{}}}`, `<em>`, `&amp;`,
			`:* & !`, `!!!`, `a & (b | !c)`, `wireless:*`, `lamp <-> desk`, `%00`, `%25`, `?q=x&limit=500`,
			`); SELECT pg_sleep(10); --`, `*:*`, `_exists_:name`, `+wireless -lamp`, `"unterminated`, `a'b"c`,
		} {
			h.searchProducts(t, "q="+url.QueryEscape(q))
			h.searchProducts(t, "q="+url.QueryEscape(q)+"&sort=price&category="+url.QueryEscape(q))
			h.searchOrders(t, "q="+url.QueryEscape(q)+"&status="+url.QueryEscape(q))
		}
		hits, _ := h.searchProducts(t, "")
		require.EqualValues(t, 5, hits.Total, "the catalog is intact")
		hits, _ = h.searchProducts(t, "q="+url.QueryEscape(`{"match_all":{}}`))
		require.Empty(t, hits.Items, "engine syntax matches nothing special")
		hits, _ = h.searchProducts(t, "q="+url.QueryEscape("category:kitchen"))
		require.NotContains(t, hits.ids(), c.headphones, "a field-qualified term is not a field query")
	})
}

// walkSearch follows next_cursor from the first page of a search (path has a query) to the last
// and returns the ids in the order served. It checks every page: the total is the same on each,
// only the last page is short, and only the last has no cursor.
func (h *harness) walkSearch(t *testing.T, path string, limits ...int) (ids []string, total int64) {
	t.Helper()
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 200, "the cursor does not advance")
		limit := limits[min(pages, len(limits)-1)]
		p := fmt.Sprintf("%s&limit=%d", path, limit)
		if cursor != "" {
			p += "&cursor=" + url.QueryEscape(cursor)
		}
		res := h.get(t, p)
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			Total      int64           `json:"total"`
			Facets     json.RawMessage `json:"facets"`
			NextCursor *string         `json:"next_cursor"`
		}
		var v any = &productHits{}
		if strings.HasPrefix(path, "/v1/search/orders") {
			v = &orderHits{}
		}
		searchOK(t, res, v)
		require.NoError(t, json.Unmarshal(res.Body, &page))
		if pages == 0 {
			total = page.Total
		}
		require.Equal(t, total, page.Total, "every page reports the same total")
		require.LessOrEqual(t, len(page.Items), limit)
		for _, it := range page.Items {
			ids = append(ids, it.ID)
		}
		if page.NextCursor == nil {
			return ids, total
		}
		require.Len(t, page.Items, limit, "only the last page is short")
		require.NotEmpty(t, *page.NextCursor)
		cursor = *page.NextCursor
	}
}

func TestSearchCursorsWalkEveryResultOnce(t *testing.T) {
	t.Parallel()
	h, _ := newSearchHarness(t, query.HandlerOptions{})
	hist := searchtest.NewHistory()
	var evs []events.Envelope
	for i := range 23 {
		// Equal names and prices in pairs: pages must break ties and never skip or repeat.
		id, ev := hist.Product(fmt.Sprintf("SKU-%03d", i), fmt.Sprintf("Widget %02d", i/2), "A widget", "widgets", int64(100*(i/2)))
		evs = append(evs, ev)
		if i%3 == 0 {
			evs = append(evs, hist.Stock(id, 4))
		}
	}
	for i := range 11 {
		_, ev := hist.Order(fmt.Sprintf("Customer %d", i), fmt.Sprintf("c%d@example.com", i), [2]string{"SKU-1", "Thing"})
		evs = append(evs, ev)
	}
	h.project(t, evs...)

	for _, tt := range []struct {
		params string
		n      int
	}{
		{"sort=name", 23}, {"sort=price", 23}, {"sort=-price", 23}, {"sort=newest", 23},
		{"q=widget", 23}, {"q=widget&sort=-price", 23}, {"q=widgets", 23},
		{"category=widgets&min_price=300", 17}, {"in_stock=true&sort=price", 8}, {"in_stock=false&max_price=500", 8},
	} {
		t.Run(tt.params, func(t *testing.T) {
			path := "/v1/search/products?" + tt.params
			whole, res := h.searchProducts(t, tt.params+"&limit=100")
			require.Len(t, whole.Items, tt.n, "%s", res.Body)
			want := whole.ids()
			require.Len(t, uniq(want), tt.n)
			for _, limits := range [][]int{{4}, {1}, {tt.n}, {tt.n - 1}, {2, 5, 1, 3, 7}} {
				got, total := h.walkSearch(t, path, limits...)
				require.Equal(t, want, got, "limits %v: every result exactly once, in the same order", limits)
				require.EqualValues(t, tt.n, total)
			}
		})
	}
	for _, tt := range []struct {
		params string
		n      int
	}{
		{"x=", 11}, {"q=thing", 11}, {"status=pending", 11}, {"q=customer&status=pending", 11},
		{"from=" + rfc3339(evs[len(evs)-8].OccurredAt), 8},
	} {
		t.Run("orders "+tt.params, func(t *testing.T) {
			whole, _ := h.searchOrders(t, tt.params+"&limit=100")
			require.Len(t, whole.Items, tt.n)
			want := whole.ids()
			require.Len(t, uniq(want), tt.n)
			for _, limits := range [][]int{{3}, {1}, {tt.n}, {4, 1, 2}} {
				got, total := h.walkSearch(t, "/v1/search/orders?"+tt.params, limits...)
				require.Equal(t, want, got, "limits %v", limits)
				require.EqualValues(t, tt.n, total)
			}
		})
	}
}

func uniq(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func TestSearchWaitsForToken(t *testing.T) {
	t.Parallel()
	h, idx := newSearchHarness(t, query.HandlerOptions{DefaultWait: 300 * time.Millisecond})
	hist := searchtest.NewHistory()
	id, created := hist.Product("LMP-1", "Desk Lamp", "A lamp for the desk", "home", 2900)
	stream := productStream(id)
	tok := tokenFor(stream, 1)
	// The product list has applied the product, the search model not yet: a search waits on its own
	// projection.
	listed := newProduct("Desk Lamp", "home")
	listed.ID = uuid.MustParse(id)
	h.putProduct(listed)

	for _, tt := range []struct {
		name     string
		prefer   string
		min, max time.Duration
		applied  string
	}{
		{name: "Prefer: wait=1", prefer: "wait=1", min: time.Second, max: 3 * time.Second, applied: "wait=1"},
		{name: "default wait", min: 300 * time.Millisecond, max: 2 * time.Second},
		{name: "Prefer: wait=0 looks once", prefer: "wait=0", max: time.Second, applied: "wait=0"},
	} {
		t.Run("not yet applied: "+tt.name, func(t *testing.T) {
			headers := []string{query.HeaderConsistencyToken, tok}
			if tt.prefer != "" {
				headers = append(headers, "Prefer", tt.prefer)
			}
			start := time.Now()
			res := h.get(t, "/v1/search/products?q=lamp", headers...)
			elapsed := time.Since(start)
			require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
			require.Equal(t, "1", res.Header.Get("Retry-After"))
			require.Equal(t, "https://strata.dev/problems/not-yet-consistent", res.problem(t).Type)
			require.NotContains(t, string(res.Body), "Desk Lamp", "never stale data")
			require.GreaterOrEqual(t, elapsed, tt.min)
			require.Less(t, elapsed, tt.max)
			require.Equal(t, tt.applied, res.Header.Get("Preference-Applied"))
		})
	}
	require.Zero(t, idx.refreshes.Load(), "no refresh when the wait runs out")

	t.Run("the token as a query parameter waits too", func(t *testing.T) {
		res := h.get(t, "/v1/search/products?q=lamp&consistency_token="+url.QueryEscape(tok), "Prefer", "wait=0")
		require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
	})

	t.Run("a token of the other aggregate type is not waited for", func(t *testing.T) {
		order := tokenFor(orderStream(uuid.NewString()), 4) // never applied
		start := time.Now()
		hits, _ := h.searchProducts(t, "q=lamp", query.HeaderConsistencyToken, order, "Prefer", "wait=5")
		require.Less(t, time.Since(start), 2*time.Second)
		require.Empty(t, hits.Items)
		res := h.get(t, "/v1/search/orders", query.HeaderConsistencyToken, order, "Prefer", "wait=0")
		require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
		require.Zero(t, idx.refreshes.Load())
	})

	t.Run("woken by the search projection's notification", func(t *testing.T) {
		pending := h.async(t, "/v1/search/products?q=lamp", query.HeaderConsistencyToken, tok, "Prefer", "wait=5")
		require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)
		h.project(t, created)
		notified := time.Now()
		h.notify(searchpg.ProductsProjection)
		res := receive(t, pending, 5*time.Second)
		var hits productHits
		searchOK(t, res.response, &hits)
		// The waiter re-checks only every minute: the notification woke the request.
		require.Less(t, res.at.Sub(notified), time.Second)
		require.Equal(t, []string{id}, hits.ids())
		require.Equal(t, map[string]uint64{stream: 1}, res.token(t))
		require.Equal(t, "wait=5", res.Header.Get("Preference-Applied"))
		require.EqualValues(t, 1, idx.refreshes.Load(), "one refresh once the token's streams were applied")
	})

	t.Run("already applied: answered at once", func(t *testing.T) {
		start := time.Now()
		hits, _ := h.searchProducts(t, "q=lamp", query.HeaderConsistencyToken, tok, "Prefer", "wait=0")
		require.Less(t, time.Since(start), time.Second)
		require.Equal(t, []string{id}, hits.ids())
		require.EqualValues(t, 2, idx.refreshes.Load())
	})
}

func TestSearchOrdersWaitForToken(t *testing.T) {
	t.Parallel()
	h, idx := newSearchHarness(t, query.HandlerOptions{})
	hist := searchtest.NewHistory()
	id, placed := hist.Order("Ada Lovelace", "ada@example.com", [2]string{"SKU-1", "Loom"})
	tok := tokenFor(orderStream(id), 1)

	res := h.get(t, "/v1/search/orders?q=ada", query.HeaderConsistencyToken, tok, "Prefer", "wait=1")
	require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
	require.Equal(t, "1", res.Header.Get("Retry-After"))

	pending := h.async(t, "/v1/search/orders?q=ada", query.HeaderConsistencyToken, tok, "Prefer", "wait=5")
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	h.project(t, placed)
	notified := time.Now()
	h.notify(searchpg.OrdersProjection)
	got := receive(t, pending, 5*time.Second)
	require.Less(t, got.at.Sub(notified), time.Second)
	var hits orderHits
	searchOK(t, got.response, &hits)
	require.Equal(t, []string{id}, hits.ids())
	require.EqualValues(t, 1, idx.refreshes.Load())
}

func TestSearchRefresh(t *testing.T) {
	t.Parallel()
	h, idx := newSearchHarness(t, query.HandlerOptions{})
	c := seedCatalog(t, h)
	b := seedOrders(t, h)
	unappliedProduct, unappliedOrder := productStream(uuid.NewString()), orderStream(uuid.NewString())

	for _, tt := range []struct {
		name    string
		path    string
		headers []string
		want    int64
	}{
		{name: "products without a token", path: "/v1/search/products?q=lamp", want: 0},
		{name: "orders without a token", path: "/v1/search/orders?q=martin", want: 0},
		{name: "products, a token of an order", path: "/v1/search/products",
			headers: []string{query.HeaderConsistencyToken, tokenFor(orderStream(b.bob), 3, unappliedOrder, 2)}, want: 0},
		{name: "orders, a token of a product", path: "/v1/search/orders",
			headers: []string{query.HeaderConsistencyToken, tokenFor(productStream(c.lamp), 2, unappliedProduct, 2)}, want: 0},
		{name: "products, a token of a product", path: "/v1/search/products?q=lamp",
			headers: []string{query.HeaderConsistencyToken, tokenFor(productStream(c.lamp), 2)}, want: 1},
		{name: "products, a token of several products and an order", path: "/v1/search/products",
			headers: []string{query.HeaderConsistencyToken, tokenFor(productStream(c.lamp), 1, productStream(c.kettle), 1,
				productStream(c.cable), 2, unappliedOrder, 1)}, want: 1},
		{name: "products, Prefer: wait=0", path: "/v1/search/products?sort=price",
			headers: []string{query.HeaderConsistencyToken, tokenFor(productStream(c.cable), 2), "Prefer", "wait=0"}, want: 1},
		{name: "orders, a token of an order", path: "/v1/search/orders?status=shipped",
			headers: []string{query.HeaderConsistencyToken, tokenFor(orderStream(b.bob), 3)}, want: 1},
		{name: "orders, a token of orders and a product", path: "/v1/search/orders",
			headers: []string{query.HeaderConsistencyToken, tokenFor(orderStream(b.bob), 1, orderStream(b.alice), 2, unappliedProduct, 9)}, want: 1},
		{name: "orders, the token as a query parameter", path: "/v1/search/orders?consistency_token=" + url.QueryEscape(tokenFor(orderStream(b.dave), 1)), want: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				before := idx.refreshes.Load()
				res := h.get(t, tt.path, tt.headers...)
				var v any = &productHits{}
				if strings.HasPrefix(tt.path, "/v1/search/orders") {
					v = &orderHits{}
				}
				searchOK(t, res, v)
				require.Equal(t, tt.want, idx.refreshes.Load()-before, "refreshes per search")
			}
		})
	}
}

func TestSearchRefreshFails(t *testing.T) {
	t.Parallel()
	h, idx := newSearchHarness(t, query.HandlerOptions{}, fmt.Errorf("refresh: %w", search.ErrUnavailable))
	c := seedCatalog(t, h)

	res := h.get(t, "/v1/search/products?q=lamp", query.HeaderConsistencyToken, tokenFor(productStream(c.lamp), 2))
	require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
	require.Equal(t, "https://strata.dev/problems/search-unavailable", res.problem(t).Type)
	require.Equal(t, "1", res.Header.Get("Retry-After"))
	require.NotContains(t, string(res.Body), "Desk Lamp")
	require.EqualValues(t, 1, idx.refreshes.Load())

	hits, _ := h.searchProducts(t, "q=lamp") // without a token nothing needs a refresh
	require.Equal(t, []string{c.lamp}, hits.ids())
}

func TestSearchMalformedToken(t *testing.T) {
	t.Parallel()
	h, idx := newSearchHarness(t, query.HandlerOptions{})
	seedCatalog(t, h)
	for _, bad := range []string{"not a token", "eyJ2IjoyLCJzIjp7fX0", tokenFor("product-x", 1) + "!",
		base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"s":{"product-x":0}}`))} {
		for _, path := range []string{"/v1/search/products", "/v1/search/orders", "/v1/search/products?q=lamp"} {
			res := h.get(t, path, query.HeaderConsistencyToken, bad)
			require.Equal(t, http.StatusBadRequest, res.Status, "%s %q: %s", path, bad, res.Body)
			require.Equal(t, "https://strata.dev/problems/malformed-consistency-token", res.problem(t).Type)

			sep := "?"
			if strings.Contains(path, "?") {
				sep = "&"
			}
			res = h.get(t, path+sep+"consistency_token="+url.QueryEscape(bad))
			require.Equal(t, http.StatusBadRequest, res.Status, "%s %q: %s", path, bad, res.Body)
			require.Equal(t, "https://strata.dev/problems/malformed-consistency-token", res.problem(t).Type)
		}
	}
	require.Zero(t, idx.refreshes.Load())
}

func TestSearchDisabled(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{}) // no HandlerOptions.Search
	for _, path := range []string{"/v1/search/products", "/v1/search/products?q=lamp", "/v1/search/orders"} {
		res := h.get(t, path)
		require.Equal(t, http.StatusNotFound, res.Status, "%s: %s", path, res.Body)
		require.Equal(t, "https://strata.dev/problems/not-found", res.problem(t).Type)
	}
}
