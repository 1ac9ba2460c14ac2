// Package searchtest is the contract suite of the [search.Index] port. Every engine runs it against a
// real server from its own tests:
//
//	func TestContract(t *testing.T) {
//		searchtest.Run(t, func(t *testing.T) searchtest.Engine { return newEngine(t) })
//	}
//
// The suite states what both engines promise. Scores differ between engines, so relevance is only
// checked where any sensible ranking agrees (a name match before a description-only match).
package searchtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/search"
)

// Engine is one engine under test, empty, used by one test only.
type Engine struct {
	Index search.Index
	// Project applies events, in order, through the engine's search projections as the projector
	// runtime would (a batch at a time, redeliveries included) and returns when they are committed.
	// They need not be searchable before Index.Refresh.
	Project func(t *testing.T, evs []events.Envelope)
}

// Factory returns a fresh engine for one test and arranges its cleanup.
type Factory func(t *testing.T) Engine

// Run runs every contract test against engines made by newEngine.
func Run(t *testing.T, newEngine Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Engine)
	}{
		{"EmptyIndex", testEmpty},
		{"TextMatchesWordsOfEveryField", testTextFields},
		{"EveryWordMustMatch", testAllWords},
		{"NameMatchesRankFirst", testNameRanksFirst},
		{"TyposAndPrefixes", testTyposAndPrefixes},
		{"Filters", testFilters},
		{"CategoryFacetsIgnoreTheCategoryFilter", testFacets},
		{"Sorts", testSorts},
		{"CursorWalksEveryResultOnce", testCursor},
		{"ForeignCursorIsRefused", testForeignCursor},
		{"ChangesAreSearchable", testChanges},
		{"RedeliveryChangesNothing", testRedelivery},
		{"HighlightsAreEscaped", testHighlights},
		{"HostileTextIsJustText", testHostileText},
		{"InvalidQueries", testInvalid},
		{"OrdersByTextStatusAndTime", testOrders},
		{"OrderStatusChanges", testOrderChanges},
		{"OrderCursor", testOrderCursor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newEngine(t))
		})
	}
}

// History writes events the way the command side would: versions per stream, ids, times that move
// forward one second per event from a fixed start.
type History struct {
	versions map[string]uint64
	clock    time.Time
}

// NewHistory returns an empty history.
func NewHistory() *History {
	return &History{versions: map[string]uint64{}, clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Event returns the next event of aggregate id of the given type.
func (h *History) Event(aggregate, id string, ev events.Event) events.Envelope {
	stream := events.StreamName(aggregate, id)
	h.versions[stream]++
	h.clock = h.clock.Add(time.Second)
	return events.Envelope{
		ID: uuid.NewString(), Stream: stream, Version: h.versions[stream], Type: typeName(ev),
		SchemaVersion: 1, OccurredAt: h.clock, Event: ev,
	}
}

// Product returns a ProductCreatedV1 event for a new product, and its id.
func (h *History) Product(sku, name, description, category string, priceCents int64, tags ...string) (string, events.Envelope) {
	id := uuid.NewString()
	return id, h.Event(events.ProductAggregate, id, events.ProductCreatedV1{ProductID: id, SKU: sku, Name: name,
		Description: description, Category: category, PriceCents: priceCents, Currency: "EUR", Tags: tags})
}

// Stock returns an event setting a product's stock.
func (h *History) Stock(id string, stock int64) events.Envelope {
	return h.Event(events.ProductAggregate, id, events.ProductStockAdjustedV1{ProductID: id, Delta: 1, Reason: "delivery", Stock: stock})
}

// Order returns an OrderPlacedV1 event for a new order of (sku, name) lines, and its id.
func (h *History) Order(customer, email string, lines ...[2]string) (string, events.Envelope) {
	id := uuid.NewString()
	placed := events.OrderPlacedV1{OrderID: id, CustomerID: "c-" + email, CustomerName: customer, CustomerEmail: email, Currency: "EUR"}
	for _, l := range lines {
		placed.Lines = append(placed.Lines, events.OrderLineV1{ProductID: uuid.NewString(), SKU: l[0], Name: l[1], Quantity: 1, UnitPriceCents: 1000})
		placed.TotalCents += 1000
	}
	return id, h.Event(events.OrderAggregate, id, placed)
}

// Now is the time of the last event.
func (h *History) Now() time.Time { return h.clock }

func typeName(ev events.Event) string {
	t := ev.EventType()
	if i := strings.LastIndexByte(t, '.'); i > 0 {
		return t[:i]
	}
	return t
}

func project(t *testing.T, e Engine, evs ...events.Envelope) {
	t.Helper()
	e.Project(t, evs)
	require.NoError(t, e.Index.Refresh(t.Context()))
}

func products(t *testing.T, e Engine, q search.ProductQuery) search.ProductResults {
	t.Helper()
	res, err := e.Index.SearchProducts(t.Context(), q)
	require.NoError(t, err, "search products %+v", q)
	return res
}

func orders(t *testing.T, e Engine, q search.OrderQuery) search.OrderResults {
	t.Helper()
	res, err := e.Index.SearchOrders(t.Context(), q)
	require.NoError(t, err, "search orders %+v", q)
	return res
}

func productIDs(r search.ProductResults) []string {
	ids := make([]string, len(r.Items))
	for i, p := range r.Items {
		ids[i] = p.ID
	}
	return ids
}

func orderIDs(r search.OrderResults) []string {
	ids := make([]string, len(r.Items))
	for i, o := range r.Items {
		ids[i] = o.ID
	}
	return ids
}

func ptr[T any](v T) *T { return &v }

// catalog is a small catalog most tests share.
type catalog struct {
	h                                   *History
	headphones, speaker, lamp, kettle   string
	cable, discontinued, earbuds, chair string
	evs                                 []events.Envelope
}

func newCatalog() *catalog {
	c := &catalog{h: NewHistory()}
	add := func(id *string, sku, name, desc, cat string, price int64, stock int64, tags ...string) {
		var e events.Envelope
		*id, e = c.h.Product(sku, name, desc, cat, price, tags...)
		c.evs = append(c.evs, e)
		if stock > 0 {
			c.evs = append(c.evs, c.h.Stock(*id, stock))
		}
	}
	add(&c.headphones, "AUD-001", "Wireless Headphones", "Over-ear, noise cancelling, 30 hour battery", "audio", 19900, 5, "bluetooth", "travel")
	add(&c.speaker, "AUD-002", "Bluetooth Speaker", "Waterproof speaker for the garden", "audio", 7900, 0, "bluetooth", "outdoor")
	add(&c.earbuds, "AUD-003", "Sport Earbuds", "Light earbuds that stay in, sweat resistant", "audio", 4900, 12, "sport")
	add(&c.lamp, "HOM-001", "Desk Lamp", "Warm light with a wireless charging base", "home", 3900, 3, "office")
	add(&c.kettle, "HOM-002", "Electric Kettle", "Boils a litre in three minutes", "kitchen", 2900, 8)
	add(&c.chair, "HOM-003", "Office Chair", "Mesh back, adjustable arms", "home", 24900, 0, "office")
	add(&c.cable, "ACC-001", "USB-C Cable", "Two metres, braided", "accessories", 900, 40)
	add(&c.discontinued, "AUD-004", "Cassette Player", "Portable, with headphones included", "audio", 5900, 0)
	c.evs = append(c.evs, c.h.Event(events.ProductAggregate, c.discontinued, events.ProductDiscontinuedV1{ProductID: c.discontinued, Reason: "obsolete"}))
	return c
}

func seed(t *testing.T, e Engine) *catalog {
	c := newCatalog()
	project(t, e, c.evs...)
	return c
}

func testEmpty(t *testing.T, e Engine) {
	require.NoError(t, e.Index.Refresh(t.Context()))
	p := products(t, e, search.ProductQuery{Text: "anything"})
	require.Empty(t, p.Items)
	require.Zero(t, p.Total)
	require.Empty(t, p.NextCursor)
	o := orders(t, e, search.OrderQuery{})
	require.Empty(t, o.Items)
	require.Zero(t, o.Total)
}

func testTextFields(t *testing.T, e Engine) {
	c := seed(t, e)
	for q, want := range map[string][]string{
		"kettle":     {c.kettle},                     // name
		"waterproof": {c.speaker},                    // description
		"travel":     {c.headphones},                 // tag
		"AUD-003":    {c.earbuds},                    // SKU
		"kitchen":    {c.kettle},                     // category
		"bluetooth":  {c.speaker, c.headphones},      // name and tag
		"wireless":   {c.headphones, c.lamp},         // name and description
		"headphones": {c.headphones, c.discontinued}, // name and description
		"office":     {c.chair, c.lamp},              // name and tag
		"HEADPHONES": {c.headphones, c.discontinued}, // case
		"zeppelin":   nil,                            // nothing
		"lamp desk":  {c.lamp},                       // word order
		"usb-c":      {c.cable},                      // punctuation inside a word
		"Kettle!":    {c.kettle},                     // punctuation around a word
		"  kettle  ": {c.kettle},                     // spaces
		"garden":     {c.speaker},                    // a word deep in the description
		"braided":    {c.cable},                      // last word
		"earbuds":    {c.earbuds},                    // name and description, one product
		"sport":      {c.earbuds},                    // name and tag
		"arms":       {c.chair},                      // description
		"mesh":       {c.chair},                      // description
		"charging":   {c.lamp},                       // description
		"battery":    {c.headphones},                 // description
		"portable":   {c.discontinued},               // discontinued products are still found
		"audio":      {c.headphones, c.speaker, c.earbuds, c.discontinued},
	} {
		res := products(t, e, search.ProductQuery{Text: q})
		require.ElementsMatch(t, want, productIDs(res), "q=%q", q)
		require.EqualValues(t, len(want), res.Total, "q=%q", q)
	}
}

func testAllWords(t *testing.T, e Engine) {
	c := seed(t, e)
	require.ElementsMatch(t, []string{c.headphones}, productIDs(products(t, e, search.ProductQuery{Text: "wireless headphones"})))
	require.ElementsMatch(t, []string{c.speaker}, productIDs(products(t, e, search.ProductQuery{Text: "bluetooth garden"})))
	require.Empty(t, products(t, e, search.ProductQuery{Text: "kettle garden"}).Items)
}

func testNameRanksFirst(t *testing.T, e Engine) {
	c := seed(t, e)
	// Wireless Headphones has "headphones" in its name; the cassette player only in its description.
	res := products(t, e, search.ProductQuery{Text: "headphones", Sort: search.SortRelevance})
	require.Equal(t, []string{c.headphones, c.discontinued}, productIDs(res))
	res = products(t, e, search.ProductQuery{Text: "wireless"})
	require.Equal(t, []string{c.headphones, c.lamp}, productIDs(res), "relevance is the default with text")
}

func testTyposAndPrefixes(t *testing.T, e Engine) {
	c := seed(t, e)
	for q, want := range map[string]string{
		"headphnes":    c.headphones, // a letter missing
		"ketle":        c.kettle,     // a letter missing
		"speeker":      c.speaker,    // a letter wrong
		"headph":       c.headphones, // a prefix
		"wireless hea": c.headphones, // the last word a prefix
		"elect":        c.kettle,
	} {
		require.Contains(t, productIDs(products(t, e, search.ProductQuery{Text: q})), want, "q=%q", q)
	}
	require.NotContains(t, productIDs(products(t, e, search.ProductQuery{Text: "headphnes"})), c.kettle)
}

func testFilters(t *testing.T, e Engine) {
	c := seed(t, e)
	for name, tc := range map[string]struct {
		q    search.ProductQuery
		want []string
	}{
		"category":              {search.ProductQuery{Category: "home"}, []string{c.lamp, c.chair}},
		"unknown category":      {search.ProductQuery{Category: "garden"}, nil},
		"category is exact":     {search.ProductQuery{Category: "Home"}, nil},
		"min price inclusive":   {search.ProductQuery{MinPriceCents: ptr[int64](19900)}, []string{c.headphones, c.chair}},
		"max price inclusive":   {search.ProductQuery{MaxPriceCents: ptr[int64](2900)}, []string{c.kettle, c.cable}},
		"price range":           {search.ProductQuery{MinPriceCents: ptr[int64](3000), MaxPriceCents: ptr[int64](8000)}, []string{c.speaker, c.earbuds, c.lamp, c.discontinued}},
		"in stock":              {search.ProductQuery{InStock: ptr(true)}, []string{c.headphones, c.earbuds, c.lamp, c.kettle, c.cable}},
		"out of stock":          {search.ProductQuery{InStock: ptr(false)}, []string{c.speaker, c.chair, c.discontinued}},
		"text and category":     {search.ProductQuery{Text: "office", Category: "home"}, []string{c.chair, c.lamp}},
		"text, category, stock": {search.ProductQuery{Text: "office", Category: "home", InStock: ptr(true)}, []string{c.lamp}},
		"text and price":        {search.ProductQuery{Text: "audio", MaxPriceCents: ptr[int64](5000)}, []string{c.earbuds}},
	} {
		res := products(t, e, tc.q)
		require.ElementsMatch(t, tc.want, productIDs(res), name)
		require.EqualValues(t, len(tc.want), res.Total, name)
	}
}

func testFacets(t *testing.T, e Engine) {
	seed(t, e)
	all := []search.Facet{{Value: "audio", Count: 4}, {Value: "home", Count: 2}, {Value: "accessories", Count: 1}, {Value: "kitchen", Count: 1}}
	require.Equal(t, all, products(t, e, search.ProductQuery{}).Categories)
	require.Equal(t, all, products(t, e, search.ProductQuery{Category: "home"}).Categories, "the category filter does not narrow its own facets")
	require.Equal(t, []search.Facet{{Value: "audio", Count: 1}, {Value: "home", Count: 1}},
		products(t, e, search.ProductQuery{Text: "wireless"}).Categories, "text narrows the facets")
	require.Equal(t, []search.Facet{{Value: "audio", Count: 2}, {Value: "accessories", Count: 1}, {Value: "home", Count: 1}, {Value: "kitchen", Count: 1}},
		products(t, e, search.ProductQuery{InStock: ptr(true)}).Categories, "other filters narrow the facets")
	require.Empty(t, products(t, e, search.ProductQuery{Text: "zeppelin"}).Categories)
}

func testSorts(t *testing.T, e Engine) {
	c := seed(t, e)
	audio := search.ProductQuery{Category: "audio"}
	for sort, want := range map[search.Sort][]string{
		search.SortName:      {c.speaker, c.discontinued, c.earbuds, c.headphones},
		search.SortPriceAsc:  {c.earbuds, c.discontinued, c.speaker, c.headphones},
		search.SortPriceDesc: {c.headphones, c.speaker, c.discontinued, c.earbuds},
		search.SortNewest:    {c.discontinued, c.earbuds, c.speaker, c.headphones},
	} {
		q := audio
		q.Sort = sort
		require.Equal(t, want, productIDs(products(t, e, q)), "sort=%s", sort)
	}
	require.Equal(t, []string{c.cable, c.kettle, c.lamp}, productIDs(products(t, e, search.ProductQuery{InStock: ptr(true),
		MinPriceCents: ptr[int64](900), MaxPriceCents: ptr[int64](3900), Sort: search.SortPriceAsc})), "sort with filters")
}

func testCursor(t *testing.T, e Engine) {
	h := NewHistory()
	var evs []events.Envelope
	for i := range 23 {
		// Equal prices and names in pairs: paging must break ties by id and never skip or repeat.
		_, ev := h.Product(fmt.Sprintf("SKU-%03d", i), fmt.Sprintf("Widget %02d", i/2), "A widget", "widgets", int64(100*(i/2)))
		evs = append(evs, ev)
	}
	project(t, e, evs...)
	for _, q := range []search.ProductQuery{
		{Sort: search.SortName}, {Sort: search.SortPriceAsc}, {Sort: search.SortPriceDesc}, {Sort: search.SortNewest},
		{Text: "widget"}, {Text: "widget", Sort: search.SortPriceDesc}, {Category: "widgets", MinPriceCents: ptr[int64](300)},
	} {
		whole := q
		whole.Limit = search.MaxLimit
		want := productIDs(products(t, e, whole))
		require.NotEmpty(t, want)
		var got []string
		page := q
		page.Limit = 4
		for pages := 0; ; pages++ {
			require.Less(t, pages, 20, "too many pages")
			res := products(t, e, page)
			require.EqualValues(t, len(want), res.Total, "every page reports the total")
			got = append(got, productIDs(res)...)
			if res.NextCursor == "" {
				break
			}
			page.Cursor = res.NextCursor
		}
		require.Equal(t, want, got, "%+v", q)
	}
}

func testForeignCursor(t *testing.T, e Engine) {
	seed(t, e)
	res := products(t, e, search.ProductQuery{Sort: search.SortName, Limit: 2})
	require.NotEmpty(t, res.NextCursor)
	for _, q := range []search.ProductQuery{
		{Sort: search.SortPriceAsc, Cursor: res.NextCursor},
		{Sort: search.SortName, Category: "home", Cursor: res.NextCursor},
		{Sort: search.SortName, Cursor: "bm90IGEgY3Vyc29y"},
		{Sort: search.SortName, Cursor: "%%%"},
	} {
		_, err := e.Index.SearchProducts(t.Context(), q)
		require.ErrorIs(t, err, search.ErrBadCursor, "%+v", q)
	}
	_, err := e.Index.SearchOrders(t.Context(), search.OrderQuery{Cursor: res.NextCursor})
	require.ErrorIs(t, err, search.ErrBadCursor, "a product cursor on orders")
	// The page size may change between pages.
	next, err := e.Index.SearchProducts(t.Context(), search.ProductQuery{Sort: search.SortName, Cursor: res.NextCursor, Limit: 3})
	require.NoError(t, err)
	require.Len(t, next.Items, 3)
}

func testChanges(t *testing.T, e Engine) {
	c := seed(t, e)
	h := c.h
	project(t, e,
		h.Event(events.ProductAggregate, c.kettle, events.ProductRenamedV1{ProductID: c.kettle, Name: "Glass Teapot"}),
		h.Event(events.ProductAggregate, c.cable, events.ProductRepricedV1{ProductID: c.cable, PriceCents: 50000}),
		h.Stock(c.chair, 7),
		h.Event(events.ProductAggregate, c.lamp, events.ProductDiscontinuedV1{ProductID: c.lamp, Reason: "recall"}),
	)
	require.Empty(t, products(t, e, search.ProductQuery{Text: "electric kettle"}).Items, "the old name is gone")
	res := products(t, e, search.ProductQuery{Text: "teapot"})
	require.Equal(t, []string{c.kettle}, productIDs(res))
	require.Equal(t, "Glass Teapot", res.Items[0].Name)
	require.Equal(t, uint64(3), res.Items[0].Version)
	require.Contains(t, productIDs(products(t, e, search.ProductQuery{MinPriceCents: ptr[int64](40000)})), c.cable)
	require.Contains(t, productIDs(products(t, e, search.ProductQuery{InStock: ptr(true)})), c.chair)
	lamp := products(t, e, search.ProductQuery{Text: "desk lamp"})
	require.Len(t, lamp.Items, 1)
	require.True(t, lamp.Items[0].Discontinued)

	// The document is the fold of the stream: compare every field with ApplyProduct.
	var want search.Product
	for _, ev := range append(slices.Clone(c.evs), h.Stock(c.headphones, 9)) {
		if ev.Stream == events.StreamName(events.ProductAggregate, c.headphones) {
			require.NoError(t, search.ApplyProduct(&want, ev))
			project(t, e, ev)
		}
	}
	got := products(t, e, search.ProductQuery{Text: "wireless headphones"})
	require.Len(t, got.Items, 1)
	got.Items[0].Highlights = nil
	require.Equal(t, want, got.Items[0])
}

func testRedelivery(t *testing.T, e Engine) {
	c := seed(t, e)
	rename := c.h.Event(events.ProductAggregate, c.kettle, events.ProductRenamedV1{ProductID: c.kettle, Name: "Glass Teapot"})
	project(t, e, rename)
	// The whole history again, as after a crash between an engine write and the checkpoint: every
	// event is older than what the engine holds, so nothing goes back.
	project(t, e, c.evs...)
	project(t, e, rename)
	res := products(t, e, search.ProductQuery{Text: "teapot"})
	require.Equal(t, []string{c.kettle}, productIDs(res))
	require.Equal(t, uint64(3), res.Items[0].Version)
	require.EqualValues(t, 8, products(t, e, search.ProductQuery{}).Total)
}

func testHighlights(t *testing.T, e Engine) {
	h := NewHistory()
	id, ev := h.Product("XSS-1", `<script>alert("x")</script> Lamp & Shade`, "A lamp <b>bold</b> & bright", "home", 100)
	project(t, e, ev)
	res := products(t, e, search.ProductQuery{Text: "lamp"})
	require.Equal(t, []string{id}, productIDs(res))
	p := res.Items[0]
	require.Equal(t, `<script>alert("x")</script> Lamp & Shade`, p.Name, "fields are returned as written")
	require.NotEmpty(t, p.Highlights["name"])
	name := p.Highlights["name"][0]
	require.Contains(t, name, "<em>Lamp</em>")
	require.Contains(t, name, "&lt;script&gt;")
	require.NotContains(t, name, "<script>")
	require.NotEmpty(t, p.Highlights["description"])
	require.Contains(t, p.Highlights["description"][0], "<em>lamp</em>")
	require.NotContains(t, p.Highlights["description"][0], "<b>")
	require.Empty(t, products(t, e, search.ProductQuery{Category: "home"}).Items[0].Highlights, "no text, no highlights")
}

func testHostileText(t *testing.T, e Engine) {
	c := seed(t, e)
	for _, q := range []string{
		`"`, `""`, `"wireless`, `(`, `)`, `[`, `]`, `{`, `}`, `\`, `/`, `*`, `?`, `~`, `^`, `:`, `!`, `&`, `|`, `<->`,
		`-`, `--`, `+`, `OR`, `AND`, `NOT`, `or or`, `a:b`, `name:wireless`, `wireless AND`, `title:(x OR y)`,
		`'; DROP TABLE products; --`, `%`, `_`, `' OR '1'='1`, `$1`, `::text`, `\x00`, `😀`, `日本語`,
		`wireless~2`, `wirel*`, `/.*/`, `{"match_all":{}}`, `<em>`, `&amp;`, `:* & !`, `!!!`, `a & (b | !c)`,
	} {
		_, err := e.Index.SearchProducts(t.Context(), search.ProductQuery{Text: q})
		require.NoError(t, err, "q=%q", q)
		_, err = e.Index.SearchOrders(t.Context(), search.OrderQuery{Text: q})
		require.NoError(t, err, "q=%q", q)
	}
	// Syntax of either engine matches nothing special: a field-qualified term is not a field query.
	require.NotContains(t, productIDs(products(t, e, search.ProductQuery{Text: "category:kitchen"})), c.headphones)
	require.Empty(t, products(t, e, search.ProductQuery{Text: `{"match_all":{}}`}).Items)
}

func testInvalid(t *testing.T, e Engine) {
	require.NoError(t, e.Index.Refresh(t.Context()))
	for _, q := range []search.ProductQuery{
		{Limit: search.MaxLimit + 1}, {Limit: -1}, {Sort: "cheapest"}, {Sort: search.SortRelevance},
		{MinPriceCents: ptr[int64](-1)}, {MinPriceCents: ptr[int64](10), MaxPriceCents: ptr[int64](5)},
		{Text: string(make([]byte, search.MaxTextLength+1))}, {Text: "a\x00b"}, {Text: "\xff"}, {Category: "a\x00"},
	} {
		_, err := e.Index.SearchProducts(t.Context(), q)
		var invalid *search.InvalidError
		require.ErrorAs(t, err, &invalid, "%+v", q)
	}
	from := time.Now()
	for _, q := range []search.OrderQuery{{Limit: search.MaxLimit + 1}, {From: &from, To: &from}, {Status: "\x00"}} {
		_, err := e.Index.SearchOrders(t.Context(), q)
		var invalid *search.InvalidError
		require.ErrorAs(t, err, &invalid, "%+v", q)
	}
}

type orderSet struct {
	h                       *History
	alice, bob, carol, dave string
	placed                  map[string]time.Time
	evs                     []events.Envelope
}

func seedOrders(t *testing.T, e Engine) *orderSet {
	s := &orderSet{h: NewHistory(), placed: map[string]time.Time{}}
	h := s.h
	place := func(id *string, customer, email string, lines ...[2]string) {
		var ev events.Envelope
		*id, ev = h.Order(customer, email, lines...)
		s.evs = append(s.evs, ev)
		s.placed[*id] = ev.OccurredAt
	}
	place(&s.alice, "Alice Martin", "alice@example.com", [2]string{"AUD-001", "Wireless Headphones"})
	place(&s.bob, "Bob Stone", "bob@shop.example", [2]string{"HOM-002", "Electric Kettle"}, [2]string{"ACC-001", "USB-C Cable"})
	place(&s.carol, "Carol Martin", "carol@example.org", [2]string{"HOM-001", "Desk Lamp"})
	place(&s.dave, "Dave Kettleby", "dave@example.com", [2]string{"AUD-003", "Sport Earbuds"})
	s.evs = append(s.evs,
		h.Event(events.OrderAggregate, s.bob, events.OrderConfirmedV1{OrderID: s.bob}),
		h.Event(events.OrderAggregate, s.bob, events.OrderShippedV1{OrderID: s.bob, Carrier: "DHL", TrackingNumber: "1"}),
		h.Event(events.OrderAggregate, s.alice, events.OrderCancelledV1{OrderID: s.alice, Reason: "changed mind"}),
	)
	project(t, e, s.evs...)
	return s
}

func testOrders(t *testing.T, e Engine) {
	s := seedOrders(t, e)
	for name, tc := range map[string]struct {
		q       search.OrderQuery
		want    []string
		ordered bool
	}{
		"newest first":        {search.OrderQuery{}, []string{s.dave, s.carol, s.bob, s.alice}, true},
		"customer name":       {search.OrderQuery{Text: "martin"}, []string{s.alice, s.carol}, false},
		"whole email":         {search.OrderQuery{Text: "bob@shop.example"}, []string{s.bob}, false},
		"sku":                 {search.OrderQuery{Text: "HOM-001"}, []string{s.carol}, false},
		"product name":        {search.OrderQuery{Text: "lamp"}, []string{s.carol}, false},
		"prefix of a name":    {search.OrderQuery{Text: "kettle"}, []string{s.bob, s.dave}, false}, // Electric Kettle, Dave Kettleby
		"status":              {search.OrderQuery{Status: "shipped"}, []string{s.bob}, false},
		"pending":             {search.OrderQuery{Status: "pending"}, []string{s.dave, s.carol}, true},
		"from is inclusive":   {search.OrderQuery{From: ptr(s.placed[s.carol])}, []string{s.dave, s.carol}, true},
		"to is exclusive":     {search.OrderQuery{To: ptr(s.placed[s.bob])}, []string{s.alice}, true},
		"text and status":     {search.OrderQuery{Text: "martin", Status: "pending"}, []string{s.carol}, false},
		"text and time":       {search.OrderQuery{Text: "martin", From: ptr(s.placed[s.bob]), To: ptr(s.placed[s.dave])}, []string{s.carol}, false},
		"unknown status":      {search.OrderQuery{Status: "lost"}, nil, false},
		"nothing":             {search.OrderQuery{Text: "zeppelin"}, nil, false},
		"words of two fields": {search.OrderQuery{Text: "alice headphones"}, []string{s.alice}, false},
		"typo in a name":      {search.OrderQuery{Text: "marten"}, []string{s.alice, s.carol}, false},
		"name prefix":         {search.OrderQuery{Text: "caro"}, []string{s.carol}, false},
	} {
		res := orders(t, e, tc.q)
		if tc.ordered {
			require.Equal(t, tc.want, orderIDs(res), name)
		} else {
			require.ElementsMatch(t, tc.want, orderIDs(res), name)
		}
		require.EqualValues(t, len(tc.want), res.Total, name)
	}
	all := orders(t, e, search.OrderQuery{})
	require.Equal(t, []search.Facet{{Value: "pending", Count: 2}, {Value: "cancelled", Count: 1}, {Value: "shipped", Count: 1}}, all.Statuses)
	require.Equal(t, all.Statuses, orders(t, e, search.OrderQuery{Status: "shipped"}).Statuses, "the status filter does not narrow its own facets")
	bob := orders(t, e, search.OrderQuery{Text: "bob"}).Items
	require.Len(t, bob, 1)
	require.Equal(t, []string{"HOM-002", "ACC-001"}, bob[0].SKUs)
	require.Equal(t, []string{"Electric Kettle", "USB-C Cable"}, bob[0].ProductNames)
	require.Equal(t, "shipped", bob[0].Status)
	require.EqualValues(t, 2000, bob[0].TotalCents)
	require.Equal(t, uint64(3), bob[0].Version)
	require.Equal(t, s.placed[s.bob], bob[0].PlacedAt)
	require.Contains(t, bob[0].Highlights["customer_name"], "<em>Bob</em> Stone")
}

func testOrderChanges(t *testing.T, e Engine) {
	s := seedOrders(t, e)
	project(t, e, s.h.Event(events.OrderAggregate, s.carol, events.OrderRejectedV1{OrderID: s.carol, Reason: "no stock"}))
	require.Equal(t, []string{s.dave}, orderIDs(orders(t, e, search.OrderQuery{Status: "pending"})))
	require.Equal(t, []string{s.carol}, orderIDs(orders(t, e, search.OrderQuery{Status: "rejected"})))
	project(t, e, s.evs...) // redelivered: nothing goes back
	require.Equal(t, []string{s.carol}, orderIDs(orders(t, e, search.OrderQuery{Status: "rejected"})))
}

func testOrderCursor(t *testing.T, e Engine) {
	h := NewHistory()
	var evs []events.Envelope
	for i := range 11 {
		_, ev := h.Order(fmt.Sprintf("Customer %d", i), fmt.Sprintf("c%d@example.com", i), [2]string{"SKU-1", "Thing"})
		evs = append(evs, ev)
	}
	project(t, e, evs...)
	for _, q := range []search.OrderQuery{{}, {Text: "thing"}, {Status: "pending"}} {
		whole := q
		whole.Limit = search.MaxLimit
		want := orderIDs(orders(t, e, whole))
		require.Len(t, want, 11)
		var got []string
		page := q
		page.Limit = 3
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			res := orders(t, e, page)
			got = append(got, orderIDs(res)...)
			if res.NextCursor == "" {
				break
			}
			page.Cursor = res.NextCursor
		}
		require.Equal(t, want, got, "%+v", q)
	}
	first := orders(t, e, search.OrderQuery{Limit: 1})
	require.NotEmpty(t, first.NextCursor)
	_, err := e.Index.SearchOrders(t.Context(), search.OrderQuery{Text: "thing", Cursor: first.NextCursor})
	require.ErrorIs(t, err, search.ErrBadCursor, "a cursor of another query")
}
