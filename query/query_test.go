package query_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestGetProduct(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Desk Lamp", "lighting")
	p.Tags, p.Stock, p.Discontinued, p.Version = []string{"desk", "led"}, 12, true, 3
	p.UpdatedAt = t0.Add(time.Hour)
	h.putProduct(p)
	path := "/v1/products/" + p.ID.String()

	res := h.get(t, path)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.JSONEq(t, fmt.Sprintf(`{
		"id": %q, "sku": "SKU-DESK LAMP", "name": "Desk Lamp", "description": "about Desk Lamp",
		"category": "lighting", "price_cents": 1999, "currency": "EUR", "tags": ["desk", "led"], "stock": 12,
		"discontinued": true, "version": 3,
		"created_at": "2025-03-01T12:30:45.123456Z", "updated_at": "2025-03-01T13:30:45.123456Z"
	}`, p.ID), string(res.Body))
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	require.Equal(t, `"3"`, res.Header.Get("ETag"))
	require.Equal(t, map[string]uint64{"product-" + p.ID.String(): 3}, res.token(t))

	t.Run("empty tags are a list", func(t *testing.T) {
		q := newProduct("Bare", "misc")
		q.Tags = []string{}
		h.putProduct(q)
		res := h.get(t, "/v1/products/"+q.ID.String())
		require.Equal(t, http.StatusOK, res.Status)
		require.Contains(t, string(res.Body), `"tags":[]`)
	})

	t.Run("other spellings of the id name the same product", func(t *testing.T) {
		res := h.get(t, "/v1/products/"+strings.ToUpper(p.ID.String()))
		require.Equal(t, http.StatusOK, res.Status)
		require.Equal(t, map[string]uint64{"product-" + p.ID.String(): 3}, res.token(t))
	})

	t.Run("If-None-Match", func(t *testing.T) {
		for _, tt := range []struct {
			ifNoneMatch string
			want        int
		}{
			{`"3"`, http.StatusNotModified},
			{`W/"3"`, http.StatusNotModified},
			{`"1", "3"`, http.StatusNotModified},
			{`*`, http.StatusNotModified},
			{`"2"`, http.StatusOK},
			{`"30"`, http.StatusOK},
		} {
			res := h.get(t, path, "If-None-Match", tt.ifNoneMatch)
			require.Equal(t, tt.want, res.Status, "If-None-Match: %s", tt.ifNoneMatch)
			require.Equal(t, `"3"`, res.Header.Get("ETag"))
			if tt.want == http.StatusNotModified {
				require.Empty(t, res.Body)
				require.Equal(t, map[string]uint64{"product-" + p.ID.String(): 3}, res.token(t))
			}
		}
	})

	t.Run("unknown ids are 404", func(t *testing.T) {
		for _, id := range []string{uuid.NewString(), "not-a-uuid", "42"} {
			res := h.get(t, "/v1/products/"+id)
			require.Equal(t, http.StatusNotFound, res.Status, id)
			require.Equal(t, "https://strata.dev/problems/not-found", res.problem(t).Type)
		}
	})
}

func TestGetOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	o := newOrder("c-1", t0)
	p1, p2 := uuid.New(), uuid.New()
	o.Lines = []lineRow{
		{ProductID: p1, SKU: "LAMP-1", Name: "Lamp", Quantity: 2, UnitPriceCents: 1500},
		{ProductID: p2, SKU: "BULB-9", Name: "Bulb", Quantity: 3, UnitPriceCents: 250},
	}
	o.TotalCents = 3750
	o.Status, o.Carrier, o.TrackingNumber, o.Version = "shipped", "DHL", "JJD0001", 3
	o.UpdatedAt = t0.Add(2 * time.Hour)
	o.History = []historyRow{
		{Version: 1, Status: "pending", At: t0},
		{Version: 2, Status: "confirmed", At: t0.Add(time.Second)},
		{Version: 3, Status: "shipped", At: t0.Add(2 * time.Hour)},
	}
	h.putOrder(o)

	res := h.get(t, "/v1/orders/"+o.ID.String())
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.JSONEq(t, fmt.Sprintf(`{
		"id": %q, "customer_id": "c-1", "customer_name": "Ada c-1", "customer_email": "c-1@example.com",
		"status": "shipped", "currency": "EUR", "total_cents": 3750,
		"lines": [
			{"product_id": %q, "sku": "LAMP-1", "name": "Lamp", "quantity": 2, "unit_price_cents": 1500, "line_total_cents": 3000},
			{"product_id": %q, "sku": "BULB-9", "name": "Bulb", "quantity": 3, "unit_price_cents": 250, "line_total_cents": 750}
		],
		"status_history": [
			{"version": 1, "status": "pending", "reason": "", "at": "2025-03-01T12:30:45.123456Z"},
			{"version": 2, "status": "confirmed", "reason": "", "at": "2025-03-01T12:30:46.123456Z"},
			{"version": 3, "status": "shipped", "reason": "", "at": "2025-03-01T14:30:45.123456Z"}
		],
		"reason": "", "carrier": "DHL", "tracking_number": "JJD0001", "version": 3,
		"placed_at": "2025-03-01T12:30:45.123456Z", "updated_at": "2025-03-01T14:30:45.123456Z"
	}`, o.ID, p1, p2), string(res.Body))
	require.NotContains(t, string(res.Body), "hooks.example.com", "the callback URL stays private")
	require.Equal(t, `"3"`, res.Header.Get("ETag"))
	require.Equal(t, map[string]uint64{"order-" + o.ID.String(): 3}, res.token(t))

	t.Run("rejected order has its reason", func(t *testing.T) {
		r := newOrder("c-2", t0)
		r.Status, r.Reason, r.Version = "rejected", "out of stock", 2
		r.History = append(r.History, historyRow{Version: 2, Status: "rejected", Reason: "out of stock", At: t0})
		h.putOrder(r)
		var got struct {
			Reason        string `json:"reason"`
			StatusHistory []struct {
				Reason string `json:"reason"`
			} `json:"status_history"`
		}
		res := h.get(t, "/v1/orders/"+r.ID.String())
		require.Equal(t, http.StatusOK, res.Status)
		require.NoError(t, json.Unmarshal(res.Body, &got))
		require.Equal(t, "out of stock", got.Reason)
		require.Equal(t, "out of stock", got.StatusHistory[1].Reason)
	})

	t.Run("If-None-Match", func(t *testing.T) {
		res := h.get(t, "/v1/orders/"+o.ID.String(), "If-None-Match", `"3"`)
		require.Equal(t, http.StatusNotModified, res.Status)
		require.Empty(t, res.Body)
		res = h.get(t, "/v1/orders/"+o.ID.String(), "If-None-Match", `"2"`)
		require.Equal(t, http.StatusOK, res.Status)
	})

	t.Run("unknown ids are 404", func(t *testing.T) {
		for _, id := range []string{uuid.NewString(), "nope"} {
			res := h.get(t, "/v1/orders/"+id)
			require.Equal(t, http.StatusNotFound, res.Status, id)
			require.Equal(t, "https://strata.dev/problems/not-found", res.problem(t).Type)
		}
	})
}

// listPage is a list answer with items reduced to what the tests compare.
type listPage struct {
	Items []struct {
		ID       string    `json:"id"`
		Name     string    `json:"name"`
		Category string    `json:"category"`
		Version  uint64    `json:"version"`
		PlacedAt time.Time `json:"placed_at"`
	} `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// walk follows next_cursor from the first page of path (which has a query) to the last, checks
// each page, and returns the ids in the order served.
func (h *harness) walk(t *testing.T, path string, limit int) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 1000, "the cursor does not advance")
		p := path + "&limit=" + fmt.Sprint(limit)
		if cursor != "" {
			p += "&cursor=" + url.QueryEscape(cursor)
		}
		res := h.get(t, p)
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
		var page listPage
		require.NoError(t, json.Unmarshal(res.Body, &page))
		require.LessOrEqual(t, len(page.Items), limit)
		tok := res.token(t)
		for _, it := range page.Items {
			ids = append(ids, it.ID)
			if len(page.Items) <= 64 { // tokens name at most 64 streams
				require.Contains(t, tok, streamOf(path)+it.ID, "the response token names every item")
			}
		}
		if page.NextCursor == nil {
			require.NotContains(t, string(res.Body), "next_cursor")
			return ids
		}
		require.Len(t, page.Items, limit, "only the last page is short")
		cursor = *page.NextCursor
	}
}

func streamOf(path string) string {
	if strings.HasPrefix(path, "/v1/products") {
		return "product-"
	}
	return "order-"
}

func TestListProducts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	var all []productRow
	for i, name := range []string{"Lamp", "atlas", "Atlas", "Atlas", "Zebra", "Chair", "Bulb", "Desk", "Atlas"} {
		p := newProduct(name, []string{"lighting", "furniture"}[i%2])
		all = append(all, p)
		h.putProduct(p)
	}
	other := newHarness(t, harnessConfig{}) // another schema: its products are not listed
	other.putProduct(newProduct("Elsewhere", "lighting"))

	res := h.get(t, "/v1/products")
	require.Equal(t, http.StatusOK, res.Status)
	var first listPage
	require.NoError(t, json.Unmarshal(res.Body, &first))
	want := make([]string, len(all))
	for i, p := range all {
		want[i] = p.ID.String()
	}
	got := make([]string, len(first.Items))
	for i, it := range first.Items {
		got[i] = it.ID
	}
	require.ElementsMatch(t, want, got)
	require.Nil(t, first.NextCursor)
	// The served order is by name, then id, in the database's collation.
	for i := 1; i < len(first.Items); i++ {
		a, b := first.Items[i-1], first.Items[i]
		if a.Name == b.Name {
			require.Less(t, a.ID, b.ID, "equal names are ordered by id")
		}
	}

	for _, limit := range []int{1, 2, 4, 9, 200} {
		t.Run(fmt.Sprintf("walk all, limit %d", limit), func(t *testing.T) {
			require.Equal(t, got, h.walk(t, "/v1/products?category=", limit), "every product exactly once, in the same order")
		})
	}
	t.Run("walk a category", func(t *testing.T) {
		ids := h.walk(t, "/v1/products?category=furniture", 2)
		var want []string
		for _, id := range got {
			if i := slices.IndexFunc(all, func(p productRow) bool { return p.ID.String() == id }); all[i].Category == "furniture" {
				want = append(want, id)
			}
		}
		require.Equal(t, want, ids)
	})
	t.Run("an unknown category is empty", func(t *testing.T) {
		res := h.get(t, "/v1/products?category=nothing")
		require.Equal(t, http.StatusOK, res.Status)
		require.JSONEq(t, `{"items": []}`, string(res.Body))
	})
	t.Run("a page reflects a later change of a product", func(t *testing.T) {
		p := all[0]
		p.Version, p.Stock = 2, 99
		h.putProduct(p)
		res := h.get(t, "/v1/products?category="+p.Category)
		require.Equal(t, uint64(2), res.token(t)["product-"+p.ID.String()])
	})
}

func TestListLimitsAndCursors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	_, err := h.pool.Exec(t.Context(), `
		INSERT INTO products (id, sku, name, description, category, price_cents, currency, tags, stock, version,
			created_at, updated_at)
		SELECT gen_random_uuid(), 'SKU-' || i, 'Product ' || lpad(i::text, 3, '0'), '', 'bulk', 100, 'EUR', '{}', 1, 1, now(), now()
		FROM generate_series(1, 201) AS i`)
	require.NoError(t, err)

	count := func(res response) (int, bool) {
		t.Helper()
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		var p listPage
		require.NoError(t, json.Unmarshal(res.Body, &p))
		return len(p.Items), p.NextCursor != nil
	}
	n, more := count(h.get(t, "/v1/products"))
	require.Equal(t, 50, n, "default limit")
	require.True(t, more)
	n, more = count(h.get(t, "/v1/products?limit=200"))
	require.Equal(t, 200, n, "maximum limit")
	require.True(t, more)
	n, more = count(h.get(t, "/v1/products?limit=1"))
	require.Equal(t, 1, n)
	require.True(t, more)
	require.Len(t, h.walk(t, "/v1/products?category=bulk", 200), 201)

	ordersCursor := customerOrdersCursor(t, h)
	for _, q := range []string{
		"limit=0", "limit=-1", "limit=201", "limit=ten", "limit=1.5",
		"cursor=%21%21%21", "cursor=" + base64.RawURLEncoding.EncodeToString([]byte("garbage")),
		"cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`{"k":"products","n":"x","i":"not-a-uuid"}`)),
		"cursor=" + ordersCursor,
		"cursor=" + strings.Repeat("A", 5000),
	} {
		res := h.get(t, "/v1/products?"+q)
		require.Equal(t, http.StatusBadRequest, res.Status, q)
		require.Equal(t, "https://strata.dev/problems/malformed-request", res.problem(t).Type, q)
		res = h.get(t, "/v1/customers/c-1/orders?"+q)
		if q != "cursor="+ordersCursor {
			require.Equal(t, http.StatusBadRequest, res.Status, q)
		}
	}
	res := h.get(t, "/v1/customers/c-1/orders?cursor="+h.productsCursor(t))
	require.Equal(t, http.StatusBadRequest, res.Status, "a products cursor is not a customer-orders cursor")
}

func (h *harness) productsCursor(t *testing.T) string {
	res := h.get(t, "/v1/products?limit=1")
	var p listPage
	require.NoError(t, json.Unmarshal(res.Body, &p))
	require.NotNil(t, p.NextCursor)
	return *p.NextCursor
}

func customerOrdersCursor(t *testing.T, h *harness) string {
	for range 2 {
		h.putOrder(newOrder("c-1", t0))
	}
	res := h.get(t, "/v1/customers/c-1/orders?limit=1")
	var p listPage
	require.NoError(t, json.Unmarshal(res.Body, &p))
	require.NotNil(t, p.NextCursor)
	return *p.NextCursor
}

func TestListCustomerOrders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	var want []orderRow
	for i, at := range []time.Duration{0, time.Minute, time.Minute, time.Minute, 2 * time.Minute, -time.Hour, time.Microsecond} {
		o := newOrder("cust-7", t0.Add(at))
		o.Version = int64(i + 1)
		want = append(want, o)
		h.putOrder(o)
	}
	h.putOrder(newOrder("cust-8", t0.Add(time.Hour)))
	// Newest first; equal timestamps by id, descending.
	slices.SortFunc(want, func(a, b orderRow) int {
		if c := b.PlacedAt.Compare(a.PlacedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID.String(), a.ID.String())
	})
	wantIDs := make([]string, len(want))
	for i, o := range want {
		wantIDs[i] = o.ID.String()
	}

	for _, limit := range []int{1, 2, 3, 7, 50} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			require.Equal(t, wantIDs, h.walk(t, "/v1/customers/cust-7/orders?x=", limit))
		})
	}

	t.Run("items are whole orders", func(t *testing.T) {
		res := h.get(t, "/v1/customers/cust-8/orders")
		require.Equal(t, http.StatusOK, res.Status)
		var page struct {
			Items []map[string]any `json:"items"`
		}
		require.NoError(t, json.Unmarshal(res.Body, &page))
		require.Len(t, page.Items, 1)
		for _, field := range []string{"id", "customer_id", "customer_name", "customer_email", "status", "currency",
			"total_cents", "lines", "status_history", "reason", "carrier", "tracking_number", "version", "placed_at", "updated_at"} {
			require.Contains(t, page.Items[0], field)
		}
		require.Len(t, page.Items[0]["lines"], 1)
		require.Len(t, page.Items[0]["status_history"], 1)
	})

	t.Run("a customer without orders has an empty list", func(t *testing.T) {
		res := h.get(t, "/v1/customers/nobody/orders")
		require.Equal(t, http.StatusOK, res.Status)
		require.JSONEq(t, `{"items": []}`, string(res.Body))
		require.Empty(t, res.Header.Get("Consistency-Token"))
	})
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	id := uuid.NewString()
	for _, tt := range []struct{ method, path string }{
		{http.MethodPost, "/v1/products"},
		{http.MethodPost, "/v1/products/" + id},
		{http.MethodDelete, "/v1/orders/" + id},
		{http.MethodPost, "/v1/orders/" + id + "/events"},
		{http.MethodPut, "/v1/customers/c/orders"},
	} {
		res, err := do(t.Context(), tt.method, h.url+tt.path)
		require.NoError(t, err)
		require.Equal(t, http.StatusMethodNotAllowed, res.Status, "%s %s", tt.method, tt.path)
		require.Equal(t, "GET", res.Header.Get("Allow"))
		require.Equal(t, "https://strata.dev/problems/method-not-allowed", res.problem(t).Type)
		require.NotEmpty(t, res.Header.Get("X-Request-ID"), "the middleware wraps 405s")
	}
	res := h.get(t, "/v1/nothing")
	require.Equal(t, http.StatusNotFound, res.Status)
	require.Equal(t, "https://strata.dev/problems/not-found", res.problem(t).Type)
	require.NotEmpty(t, res.Header.Get("X-Request-ID"), "the middleware wraps 404s")
}

func TestHealth(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	res := h.get(t, "/healthz")
	require.Equal(t, http.StatusOK, res.Status)

	res = h.get(t, "/readyz")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.JSONEq(t, `{"status": "OK", "checks": {"database": "ok", "listen": "ok"}}`, string(res.Body))

	h.get(t, "/v1/products")
	res = h.get(t, "/metrics")
	require.Equal(t, http.StatusOK, res.Status)
	for _, m := range []string{`strata_http_requests_total{method="GET",route="/v1/products",service="query",status="200"} 1`,
		"strata_query_listening 1", "strata_query_consistency_waiting 0"} {
		require.Contains(t, string(res.Body), m)
	}

	h.stopWaiter()
	res = h.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.Unmarshal(res.Body, &body))
	require.Equal(t, "ok", body.Checks["database"])
	require.Contains(t, body.Checks["listen"], "not listening")

	t.Run("not ready before the waiter runs", func(t *testing.T) {
		idle := newHarness(t, harnessConfig{idle: true})
		require.Equal(t, http.StatusServiceUnavailable, idle.get(t, "/readyz").Status)
	})
}
