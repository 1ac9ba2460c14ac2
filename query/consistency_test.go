package query_test

import (
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/query"
)

func TestTokenAlreadySatisfied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Lamp", "lighting")
	p.Version = 3
	h.putProduct(p)
	stream := "product-" + p.ID.String()
	other := "product-" + uuid.NewString() // an older write to another product, already applied
	h.tx(func(tx pgx.Tx) error { return h.applied(tx, "products", other, 5) })

	for _, version := range []int{1, 3} {
		start := time.Now()
		res := h.get(t, "/v1/products/"+p.ID.String(), query.HeaderConsistencyToken, tokenFor(stream, version, other, 4))
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		require.Less(t, time.Since(start), time.Second)
		require.Equal(t, map[string]uint64{stream: 3, other: 4}, res.token(t), "the request's token merged with the product's version")
	}

	t.Run("as a query parameter", func(t *testing.T) {
		res := h.get(t, "/v1/products/"+p.ID.String()+"?consistency_token="+url.QueryEscape(tokenFor(stream, 3)))
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	})
	t.Run("on a list", func(t *testing.T) {
		res := h.get(t, "/v1/products?category=lighting", query.HeaderConsistencyToken, tokenFor(stream, 2, other, 4))
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		require.Equal(t, map[string]uint64{stream: 3, other: 4}, res.token(t))
	})
}

func TestTokenWaitWokenByNotification(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{}) // the waiter re-checks only every minute: only a notification wakes it
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	stream := "product-" + p.ID.String()

	pending := h.async(t, "/v1/products/"+p.ID.String(), query.HeaderConsistencyToken, tokenFor(stream, 2), "Prefer", "wait=5")
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond, "the request blocks")
	select {
	case r := <-pending:
		t.Fatalf("answered before the projection caught up: %d %s", r.Status, r.Body)
	default:
	}

	p.Version, p.Name = 2, "Lamp (renamed)"
	h.putProduct(p)
	notified := time.Now()
	h.notify("products")
	res := receive(t, pending, 5*time.Second)
	require.Less(t, res.at.Sub(notified), 500*time.Millisecond, "woken by the notification")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"name":"Lamp (renamed)"`)
	require.Equal(t, `"2"`, res.Header.Get("ETag"))
	require.Equal(t, "wait=5", res.Header.Get("Preference-Applied"))
	require.Equal(t, map[string]uint64{stream: 2}, res.token(t))
	require.Zero(t, h.waiter.Waiting())
}

func TestTokenWaitWakesEveryWaiter(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	const n = 20
	customer := "c-" + uuid.NewString()
	placed := make([]orderRow, n)
	var pending []<-chan timedResponse
	for i := range placed {
		placed[i] = newOrder(customer, t0.Add(time.Duration(i)*time.Second))
		tok := tokenFor("order-"+placed[i].ID.String(), 1)
		path := "/v1/orders/" + placed[i].ID.String()
		if i%2 == 1 {
			path = "/v1/customers/" + customer + "/orders?limit=200"
		}
		pending = append(pending, h.async(t, path, query.HeaderConsistencyToken, tok, "Prefer", "wait=5"))
	}
	require.Eventually(t, func() bool { return h.waiter.Waiting() == n }, 5*time.Second, time.Millisecond)

	for _, o := range placed {
		h.putOrder(o)
	}
	notified := time.Now()
	h.notify("orders")
	var wg sync.WaitGroup
	for i, c := range pending {
		wg.Go(func() {
			res := receive(t, c, 5*time.Second)
			require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
			require.Less(t, res.at.Sub(notified), time.Second)
			require.Contains(t, string(res.Body), placed[i].ID.String())
		})
	}
	wg.Wait()
}

func TestTokenNeverSatisfied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{handler: query.HandlerOptions{DefaultWait: 300 * time.Millisecond}})
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	tok := tokenFor("product-"+p.ID.String(), 9)

	for _, tt := range []struct {
		name     string
		prefer   string
		min, max time.Duration
		applied  string
	}{
		{name: "Prefer: wait=1", prefer: "wait=1", min: time.Second, max: 3 * time.Second, applied: "wait=1"},
		{name: "default wait", min: 300 * time.Millisecond, max: 2 * time.Second},
		{name: "Prefer: wait=0 looks once", prefer: "respond-async, wait=0", max: time.Second, applied: "wait=0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			headers := []string{query.HeaderConsistencyToken, tok}
			if tt.prefer != "" {
				headers = append(headers, "Prefer", tt.prefer)
			}
			start := time.Now()
			res := h.get(t, "/v1/products/"+p.ID.String(), headers...)
			elapsed := time.Since(start)
			require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)
			require.Equal(t, "1", res.Header.Get("Retry-After"))
			pr := res.problem(t)
			require.Equal(t, "https://strata.dev/problems/not-yet-consistent", pr.Type)
			require.NotContains(t, string(res.Body), "Lamp", "never stale data")
			require.GreaterOrEqual(t, elapsed, tt.min)
			require.Less(t, elapsed, tt.max)
			require.Equal(t, tt.applied, res.Header.Get("Preference-Applied"))
		})
	}

	t.Run("lists wait too", func(t *testing.T) {
		t.Parallel()
		res := h.get(t, "/v1/products", query.HeaderConsistencyToken, tok, "Prefer", "wait=1")
		require.Equal(t, http.StatusServiceUnavailable, res.Status)
		res = h.get(t, "/v1/customers/c/orders", query.HeaderConsistencyToken, tokenFor("order-"+uuid.NewString(), 1), "Prefer", "wait=1")
		require.Equal(t, http.StatusServiceUnavailable, res.Status)
	})
}

func TestPreferWaitIsCapped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	for prefer, want := range map[string]string{
		"wait=30":         "wait=10",
		`wait="4"`:        "wait=4",
		"handling=strict": "",
		"wait=soon":       "",
	} {
		res := h.get(t, "/v1/products/"+p.ID.String(), "Prefer", prefer)
		require.Equal(t, http.StatusOK, res.Status)
		require.Equal(t, want, res.Header.Get("Preference-Applied"), prefer)
	}
}

func TestMalformedToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	o := newOrder("c-1", t0)
	h.putOrder(o)
	paths := []string{"/v1/products/" + p.ID.String(), "/v1/products", "/v1/orders/" + o.ID.String(),
		"/v1/customers/c-1/orders", "/v1/orders/" + o.ID.String() + "/events"}
	for _, bad := range []string{"not a token", "eyJ2IjoyLCJzIjp7fX0", tokenFor("product-x", 1) + "!"} {
		for _, path := range paths {
			res := h.get(t, path, query.HeaderConsistencyToken, bad)
			require.Equal(t, http.StatusBadRequest, res.Status, "%s %q: %s", path, bad, res.Body)
			require.Equal(t, "https://strata.dev/problems/malformed-consistency-token", res.problem(t).Type)

			sep := "?"
			if path == "/v1/products" {
				sep = "?category=lighting&"
			}
			res = h.get(t, path+sep+"consistency_token="+url.QueryEscape(bad))
			require.Equal(t, http.StatusBadRequest, res.Status, "%s %q: %s", path, bad, res.Body)
		}
	}
}

func TestTokenOfTheOtherProjectionIsIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	p := newProduct("Lamp", "lighting")
	h.putProduct(p)
	o := newOrder("c-1", t0)
	h.putOrder(o)
	res := h.get(t, "/v1/products/"+p.ID.String(), query.HeaderConsistencyToken,
		tokenFor("order-"+uuid.NewString(), 99, "nodash", 7, "product-"+p.ID.String(), 1), "Prefer", "wait=5")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Len(t, res.token(t), 3, "irrelevant streams are passed on")

	res = h.get(t, "/v1/orders/"+o.ID.String(), query.HeaderConsistencyToken,
		tokenFor("product-"+uuid.NewString(), 99, "order-"+o.ID.String(), 1), "Prefer", "wait=5")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	// A token naming only streams of another projection (or none) costs no wait at all.
	start := time.Now()
	for _, path := range []string{"/v1/orders/" + o.ID.String(), "/v1/customers/c-1/orders"} {
		res := h.get(t, path, query.HeaderConsistencyToken, tokenFor("product-"+uuid.NewString(), 99), "Prefer", "wait=5")
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	}
	res = h.get(t, "/v1/products", query.HeaderConsistencyToken, tokenFor("order-"+uuid.NewString(), 99, "nodash", 7), "Prefer", "wait=5")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Less(t, time.Since(start), time.Second)
}

func TestListWaitsForToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessConfig{})
	customer := "c-" + uuid.NewString()
	h.putOrder(newOrder(customer, t0))
	o := newOrder(customer, t0.Add(time.Minute))

	pending := h.async(t, "/v1/customers/"+customer+"/orders", query.HeaderConsistencyToken, tokenFor("order-"+o.ID.String(), 1), "Prefer", "wait=5")
	require.Eventually(t, func() bool { return h.waiter.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	h.putOrder(o)
	h.notify("orders")
	res := receive(t, pending, 5*time.Second)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), o.ID.String())
	require.Len(t, res.token(t), 2)
}
