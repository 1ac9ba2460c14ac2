package command_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/command"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/platform"
)

const (
	productAgg = events.ProductAggregate
	orderAgg   = events.OrderAggregate
)

func TestEveryCommandSucceeds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})

	r := h.post("/v1/products", js(obj{
		"sku": " mug-350 ", "name": "Mug", "description": "Stoneware.\nDishwasher safe.", "category": "kitchen",
		"price_cents": 1250, "currency": "eur", "tags": []string{"mug", "kitchen", "mug"},
	}), "X-Correlation-ID", "corr-42")
	created := requireSuccess(t, r, http.StatusCreated, productAgg)
	require.EqualValues(t, 1, created.Version)
	p := created.ID
	require.Equal(t, "corr-42", r.Header.Get("X-Correlation-ID"))
	require.Equal(t, "corr-42", h.stream(productAgg, p)[0].Metadata.CorrelationID, "the correlation id goes on the events")

	for _, step := range []struct{ path, body string }{
		{"/rename", js(obj{"name": "Big mug"})},
		{"/reprice", js(obj{"price_cents": 1400})},
		{"/stock", js(obj{"delta": 10, "reason": "delivery"})},
	} {
		before := created.Version
		created = requireSuccess(t, h.post("/v1/products/"+p+step.path, step.body), http.StatusOK, productAgg)
		require.Equal(t, p, created.ID)
		require.Equal(t, before+1, created.Version, step.path)
	}

	// uuid.Parse reads other spellings of an id; they must address the same stream.
	other := strings.ToUpper(strings.ReplaceAll(p, "-", ""))
	res := requireSuccess(t, h.post("/v1/products/"+other+"/stock", js(obj{"delta": -1, "reason": "breakage"})), http.StatusOK, productAgg)
	require.Equal(t, p, res.ID)
	require.EqualValues(t, 5, res.Version)

	// A command already in effect appends nothing and answers the current version.
	h.requireNothingAppended(func() {
		res = requireSuccess(t, h.post("/v1/products/"+p+"/rename", js(obj{"name": "Big mug"})), http.StatusOK, productAgg)
		require.EqualValues(t, 5, res.Version)
	})

	o := requireSuccess(t, h.post("/v1/orders", orderBody(strings.ToUpper(p))), http.StatusAccepted, orderAgg)
	require.EqualValues(t, 1, o.Version)
	res = requireSuccess(t, h.post("/v1/orders/"+o.ID+"/cancel", js(obj{"reason": "changed my mind"})), http.StatusOK, orderAgg)
	require.Equal(t, o.ID, res.ID)
	require.EqualValues(t, 2, res.Version)

	shipped := h.placeOrder(p)
	h.appendEvent(orderAgg, shipped, events.OrderConfirmedV1{OrderID: shipped}) // fulfilment's part
	res = requireSuccess(t, h.post("/v1/orders/"+shipped+"/ship", js(obj{"carrier": "DHL", "tracking_number": "JD0001"})), http.StatusOK, orderAgg)
	require.EqualValues(t, 3, res.Version)

	res = requireSuccess(t, h.post("/v1/products/"+p+"/discontinue", js(obj{"reason": "end of line"})), http.StatusOK, productAgg)
	require.EqualValues(t, 6, res.Version)

	got := h.product(p)
	require.Equal(t, "MUG-350", got.SKU())
	require.Equal(t, "Big mug", got.Name())
	require.Equal(t, "Stoneware.\nDishwasher safe.", got.Description())
	require.EqualValues(t, 1400, got.PriceCents())
	require.Equal(t, "EUR", got.Currency())
	require.Equal(t, []string{"mug", "kitchen"}, got.Tags())
	require.EqualValues(t, 9, got.Stock())
	require.True(t, got.Discontinued())

	placed := h.stream(orderAgg, o.ID)[0]
	require.Equal(t, "order.placed", placed.Type)
	require.Contains(t, string(placed.Data), `"product_id":"`+p+`"`, "lines name products by canonical id")
	require.Contains(t, string(placed.Data), `"unit_price_cents":1400`, "lines are priced from the product")
}

// badCase is a request that must be refused without appending anything.
type badCase struct {
	name    string
	method  string // default POST
	path    string
	body    string
	headers []string
	status  int
	// problemType, when set, is the problem's type after https://strata.dev/problems/.
	problemType string
	// fields, when set, are exactly the fields the problem's errors name.
	fields []string
}

func TestBadInputIsRefusedAndAppendsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	prod := h.createProduct("BAD-1")
	h.adjustStock(prod, 10) // version 2
	gone := h.createProduct("GONE-1")
	requireSuccess(t, h.post("/v1/products/"+gone+"/discontinue", js(obj{"reason": "x"})), http.StatusOK, productAgg)
	pending := h.placeOrder(prod)
	unknown := uuid.NewString()

	rename := "/v1/products/" + prod + "/rename"
	stock := "/v1/products/" + prod + "/stock"
	validProduct := obj{"sku": "NEW-1", "name": "n", "category": "c", "price_cents": 1, "currency": "EUR"}
	with := func(base obj, k string, v any) string {
		m := obj{}
		for key, val := range base {
			m[key] = val
		}
		m[k] = v
		return js(m)
	}
	order := func(lines ...obj) string {
		if lines == nil {
			lines = []obj{}
		}
		return js(obj{"customer_id": "c", "customer_name": "n", "customer_email": "a@example.com", "lines": lines})
	}
	line := func(id string) obj { return obj{"product_id": id, "quantity": 1} }
	manyLines := make([]obj, 101)
	for i := range manyLines {
		manyLines[i] = line(uuid.NewString())
	}

	cases := []badCase{
		// 400: the body is not one JSON object of the schema.
		{name: "truncated JSON", path: rename, body: `{"name": "x"`, status: 400},
		{name: "invalid JSON", path: rename, body: `{"name" "x"}`, status: 400},
		{name: "unknown field", path: rename, body: `{"name":"x","colour":"red"}`, status: 400},
		{name: "unknown nested field", path: "/v1/orders", body: `{"customer_id":"c","customer_name":"n","customer_email":"a@example.com","lines":[{"product_id":"` + prod + `","quantity":1,"price":1}]}`, status: 400},
		{name: "field name in another case", path: rename, body: `{"Name":"x"}`, status: 400},
		{name: "repeated field", path: rename, body: `{"name":"x","name":"y"}`, status: 400},
		{name: "string for integer", path: "/v1/products/" + prod + "/reprice", body: `{"price_cents":"12"}`, status: 400},
		{name: "fraction for integer", path: stock, body: `{"delta":1.5,"reason":"x"}`, status: 400},
		{name: "integer overflow", path: "/v1/products/" + prod + "/reprice", body: `{"price_cents":99999999999999999999}`, status: 400},
		{name: "string for array", path: "/v1/products", body: with(validProduct, "tags", "mug"), status: 400},
		{name: "null field", path: rename, body: `{"name":null}`, status: 400},
		{name: "null in array", path: "/v1/products", body: with(validProduct, "tags", []any{nil}), status: 400},
		{name: "null body", path: rename, body: `null`, status: 400},
		{name: "array body", path: rename, body: `[{"name":"x"}]`, status: 400},
		{name: "trailing object", path: rename, body: `{"name":"x"}{"name":"y"}`, status: 400},
		{name: "trailing garbage", path: rename, body: `{"name":"x"} x`, status: 400},
		{name: "empty body", path: rename, body: ``, status: 400},
		{name: "blank body", path: rename, body: " \n", status: 400},
		{name: "invalid UTF-8", path: rename, body: "{\"name\":\"\xff\"}", status: 400},
		{name: "If-Match unquoted", path: stock, body: js(obj{"delta": 1, "reason": "x"}), headers: []string{"If-Match", "2"}, status: 400},
		{name: "If-Match weak", path: stock, body: js(obj{"delta": 1, "reason": "x"}), headers: []string{"If-Match", `W/"2"`}, status: 400},
		{name: "If-Match not a version", path: stock, body: js(obj{"delta": 1, "reason": "x"}), headers: []string{"If-Match", `"two"`}, status: 400},
		{name: "Idempotency-Key with a space", path: stock, body: js(obj{"delta": 1, "reason": "x"}), headers: []string{command.HeaderIdempotencyKey, "a key"}, status: 400},
		{name: "Idempotency-Key too long", path: stock, body: js(obj{"delta": 1, "reason": "x"}), headers: []string{command.HeaderIdempotencyKey, strings.Repeat("k", 256)}, status: 400},

		// 415: not declared as JSON.
		{name: "no Content-Type", path: rename, body: `{"name":"x"}`, headers: []string{"Content-Type", ""}, status: 415},
		{name: "text/plain", path: rename, body: `{"name":"x"}`, headers: []string{"Content-Type", "text/plain"}, status: 415},
		{name: "malformed Content-Type", path: rename, body: `{"name":"x"}`, headers: []string{"Content-Type", "application/"}, status: 415},

		// 404: no such aggregate or route.
		{name: "rename unknown product", path: "/v1/products/" + unknown + "/rename", body: `{"name":"x"}`, status: 404},
		{name: "stock of unknown product", path: "/v1/products/" + unknown + "/stock", body: `{"delta":1,"reason":"x"}`, status: 404},
		{name: "discontinue non-UUID", path: "/v1/products/mug-350/discontinue", body: `{"reason":"x"}`, status: 404},
		{name: "cancel unknown order", path: "/v1/orders/" + unknown + "/cancel", body: `{"reason":"x"}`, status: 404},
		{name: "ship non-UUID order", path: "/v1/orders/42/ship", body: `{"carrier":"c","tracking_number":"t"}`, status: 404},
		{name: "ship a product id", path: "/v1/orders/" + prod + "/ship", body: `{"carrier":"c","tracking_number":"t"}`, status: 404},
		{name: "unknown route", path: "/v1/widgets", body: `{}`, status: 404},
		{name: "If-Match on unknown product", path: "/v1/products/" + unknown + "/stock", body: `{"delta":1,"reason":"x"}`, headers: []string{"If-Match", `"1"`}, status: 404},

		// 405: the path exists, the method does not.
		{name: "GET a command", method: http.MethodGet, path: "/v1/products", status: 405},
		{name: "PUT a command", method: http.MethodPut, path: rename, body: `{"name":"x"}`, status: 405},

		// 412: If-Match names another version.
		{name: "If-Match stale", path: stock, body: js(obj{"delta": 1, "reason": "x"}), headers: []string{"If-Match", `"1"`}, status: 412, problemType: "precondition-failed"},

		// 422: validation, every problem at once.
		{name: "product validation", path: "/v1/products", body: js(obj{"sku": "-x", "name": " ", "description": strings.Repeat("d", 5001), "price_cents": 0, "currency": "euro", "tags": []string{"ok", ""}}),
			status: 422, problemType: "validation", fields: []string{"sku", "name", "description", "category", "price_cents", "currency", "tags[1]"}},
		{name: "name too long", path: rename, body: js(obj{"name": strings.Repeat("n", 201)}), status: 422, problemType: "validation", fields: []string{"name"}},
		{name: "zero delta, no reason", path: stock, body: js(obj{"delta": 0, "reason": ""}), status: 422, problemType: "validation", fields: []string{"delta", "reason"}},
		{name: "delta beyond limit", path: stock, body: js(obj{"delta": 1_000_001, "reason": "x"}), status: 422, problemType: "validation", fields: []string{"delta"}},
		{name: "cancel without reason", path: "/v1/orders/" + pending + "/cancel", body: `{"reason":""}`, status: 422, problemType: "validation", fields: []string{"reason"}},
		{name: "order validation", path: "/v1/orders", body: js(obj{"customer_id": "c", "customer_name": "", "customer_email": "Ada <ada@example.com>",
			"lines": []obj{{"product_id": prod, "quantity": 0}}, "callback_url": "ftp://example.com/x"}),
			status: 422, problemType: "validation", fields: []string{"customer_name", "customer_email", "lines[0].quantity", "callback_url"}},
		{name: "order without lines", path: "/v1/orders", body: order(), status: 422, problemType: "validation", fields: []string{"lines"}},
		{name: "order line without product", path: "/v1/orders", body: order(line(prod), line("")), status: 422, problemType: "validation", fields: []string{"lines[1].product_id"}},
		{name: "order of only lines without product", path: "/v1/orders", body: order(line("")), status: 422, problemType: "validation", fields: []string{"lines[0].product_id"}},
		{name: "order with too many lines", path: "/v1/orders", body: order(manyLines...), status: 422, problemType: "validation", fields: []string{"lines"}},
		{name: "order of unknown product", path: "/v1/orders", body: order(line(prod), line(unknown)), status: 422, problemType: "validation", fields: []string{"lines[1].product_id"}},
		{name: "order of non-UUID product", path: "/v1/orders", body: order(line("mug-350")), status: 422, problemType: "validation", fields: []string{"lines[0].product_id"}},
		{name: "order of discontinued product", path: "/v1/orders", body: order(line(prod), line(gone)), status: 422, problemType: "validation", fields: []string{"lines[1].product_id"}},
		{name: "order repeating a product", path: "/v1/orders", body: order(line(prod), line(strings.ToUpper(prod))), status: 422, problemType: "validation", fields: []string{"lines[1].product_id"}},

		// 422: a domain rule.
		{name: "stock below zero", path: stock, body: js(obj{"delta": -11, "reason": "theft"}), status: 422, problemType: "rule-violated"},
		{name: "ship a pending order", path: "/v1/orders/" + pending + "/ship", body: `{"carrier":"c","tracking_number":"t"}`, status: 422, problemType: "rule-violated"},
		{name: "duplicate SKU", path: "/v1/products", body: with(validProduct, "sku", "BAD-1"), status: 422, problemType: "rule-violated"},
		{name: "duplicate SKU in another case", path: "/v1/products", body: with(validProduct, "sku", " bad-1 "), status: 422, problemType: "rule-violated"},
		{name: "reprice discontinued", path: "/v1/products/" + gone + "/reprice", body: `{"price_cents":5}`, status: 422, problemType: "rule-violated"},
		{name: "discontinue twice", path: "/v1/products/" + gone + "/discontinue", body: `{"reason":"x"}`, status: 422, problemType: "rule-violated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			h.requireNothingAppended(func() {
				r := send(t, h.url, method, tc.path, strings.NewReader(tc.body), tc.headers...)
				p := requireProblem(t, r, tc.status)
				require.NotEmpty(t, p.Detail)
				require.NotEmpty(t, r.Header.Get(platform.HeaderRequestID))
				require.Equal(t, strings.SplitN(tc.path, "?", 2)[0], p.Instance)
				if tc.problemType != "" {
					require.Equal(t, "https://strata.dev/problems/"+tc.problemType, p.Type)
				}
				if tc.fields != nil {
					require.ElementsMatch(t, tc.fields, fields(p), "errors: %+v", p.Errors)
				}
				switch tc.status {
				case http.StatusMethodNotAllowed:
					require.Equal(t, "POST", r.Header.Get("Allow"))
				case http.StatusPreconditionFailed:
					require.NotNil(t, p.CurrentVersion)
					require.EqualValues(t, 2, *p.CurrentVersion)
				}
			})
		})
	}
}

func TestBodyOverTheLimitIs413(t *testing.T) {
	t.Parallel()
	const limit = 128
	h := newHarness(t, config{handler: command.HandlerOptions{MaxBodyBytes: limit}})
	p := h.createProduct("SMALL-1") // fits
	big := js(obj{"name": strings.Repeat("n", limit)})
	require.Greater(t, len(big), limit)

	for _, tc := range []struct {
		name    string
		body    func() io.Reader
		headers []string
	}{
		// A reader of unknown length makes the client send the body chunked, without Content-Length.
		{name: "with Content-Length", body: func() io.Reader { return strings.NewReader(big) }},
		{name: "chunked", body: func() io.Reader { return io.MultiReader(strings.NewReader(big)) }},
		{name: "with Idempotency-Key", body: func() io.Reader { return strings.NewReader(big) }, headers: []string{command.HeaderIdempotencyKey, "k-413"}},
		{name: "chunked with Idempotency-Key", body: func() io.Reader { return io.MultiReader(strings.NewReader(big)) }, headers: []string{command.HeaderIdempotencyKey, "k-413c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			h.requireNothingAppended(func() {
				r := send(t, h.url, http.MethodPost, "/v1/products/"+p+"/rename", tc.body(), tc.headers...)
				requireProblem(t, r, http.StatusRequestEntityTooLarge)
			})
		})
	}
}

func TestIfMatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	p := h.createProduct("IFM-1")
	stock := func(ifMatch string) response {
		return h.post("/v1/products/"+p+"/stock", js(obj{"delta": 1, "reason": "count"}), "If-Match", ifMatch)
	}

	res := requireSuccess(t, stock(`"1"`), http.StatusOK, productAgg)
	require.EqualValues(t, 2, res.Version)

	h.requireNothingAppended(func() {
		prob := requireProblem(t, stock(`"1"`), http.StatusPreconditionFailed)
		require.NotNil(t, prob.CurrentVersion)
		require.EqualValues(t, 2, *prob.CurrentVersion)
		requireProblem(t, stock(`"3"`), http.StatusPreconditionFailed)
	})

	// The ETag of one response is the If-Match of the next.
	r := stock(`"2"`)
	res = requireSuccess(t, r, http.StatusOK, productAgg)
	require.EqualValues(t, 3, res.Version)
	res = requireSuccess(t, stock(r.Header.Get("ETag")), http.StatusOK, productAgg)
	require.EqualValues(t, 4, res.Version)
	require.EqualValues(t, 3, h.product(p).Stock())

	// A stream that does not exist yet is at version 0, so only "0" lets a create through.
	create := func(ifMatch string) response {
		return h.post("/v1/products", js(obj{"sku": "IFM-2", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"}), "If-Match", ifMatch)
	}
	h.requireNothingAppended(func() {
		prob := requireProblem(t, create(`"1"`), http.StatusPreconditionFailed)
		require.NotNil(t, prob.CurrentVersion)
		require.EqualValues(t, 0, *prob.CurrentVersion)
	})
	requireSuccess(t, create(`"0"`), http.StatusCreated, productAgg)
}

// replayCase is a command that is safe to send twice with one Idempotency-Key.
type replayCase struct {
	name, path, body string
	status           int
	aggregate        string
}

func TestIdempotencyKeyReplaysFirstResponse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	p := h.createProduct("IDEM-1")
	cases := []replayCase{
		{"create product", "/v1/products", js(obj{"sku": "IDEM-2", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"}), http.StatusCreated, productAgg},
		{"adjust stock", "/v1/products/" + p + "/stock", js(obj{"delta": 3, "reason": "delivery"}), http.StatusOK, productAgg},
		{"place order", "/v1/orders", orderBody(p), http.StatusAccepted, orderAgg},
	}
	firsts := make([]response, len(cases))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			key := "key-" + strconv.Itoa(i)
			first := h.post(tc.path, tc.body, command.HeaderIdempotencyKey, key)
			requireSuccess(t, first, tc.status, tc.aggregate)
			require.Empty(t, first.Header.Get("Idempotent-Replayed"))
			firsts[i] = first

			h.requireNothingAppended(func() {
				requireReplay(t, first, h.post(tc.path, tc.body, command.HeaderIdempotencyKey, key))

				prob := requireProblem(t, h.post(tc.path, strings.Replace(tc.body, `"`, ` "`, 1), command.HeaderIdempotencyKey, key), http.StatusUnprocessableEntity)
				require.Equal(t, "https://strata.dev/problems/idempotency-key-reused", prob.Type)
				requireProblem(t, h.post("/v1/products/"+p+"/rename", `{"name":"other"}`, command.HeaderIdempotencyKey, key), http.StatusUnprocessableEntity)
			})
		})
	}
	require.EqualValues(t, 3, h.product(p).Stock())

	// A restarted service, or another instance, on the same database replays the same responses.
	restarted, _ := h.server(config{})
	h.requireNothingAppended(func() {
		for i, tc := range cases {
			requireReplay(t, firsts[i], send(t, restarted, http.MethodPost, tc.path, strings.NewReader(tc.body), command.HeaderIdempotencyKey, "key-"+strconv.Itoa(i)))
		}
	})
}

// requireReplay checks that again is the replay of first, byte for byte.
func requireReplay(t testing.TB, first, again response) {
	t.Helper()
	require.Equal(t, first.Status, again.Status)
	require.Equal(t, string(first.Body), string(again.Body))
	for _, name := range []string{"Content-Type", "Cache-Control", "ETag", command.HeaderConsistencyToken, "Location"} {
		require.Equal(t, first.Header.Values(name), again.Header.Values(name), name)
	}
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
}

func TestIdempotencyKeyOfAFailedRequestMayBeReused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	h.requireNothingAppended(func() {
		r := h.post("/v1/products", js(obj{"sku": "FIX-1", "name": "n", "category": "c", "price_cents": 0, "currency": "EUR"}), command.HeaderIdempotencyKey, "k")
		requireProblem(t, r, http.StatusUnprocessableEntity)
	})
	fixed := js(obj{"sku": "FIX-1", "name": "n", "category": "c", "price_cents": 1, "currency": "EUR"})
	first := h.post("/v1/products", fixed, command.HeaderIdempotencyKey, "k")
	requireSuccess(t, first, http.StatusCreated, productAgg)
	requireReplay(t, first, h.post("/v1/products", fixed, command.HeaderIdempotencyKey, "k"))
}

// TestIdempotencyWithoutStoredResponse covers a command that committed but whose response was never
// stored (the process died in between): the retry must find the command's events and answer as the
// first time, even when the stream or the products it read have moved on since.
func TestIdempotencyWithoutStoredResponse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	forget := func() {
		_, err := h.pool.Exec(t.Context(), `DELETE FROM idempotency_keys`)
		require.NoError(t, err)
	}
	p := h.createProduct("LOST-1")

	createBody := js(obj{"sku": "LOST-2", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"})
	created := requireSuccess(t, h.post("/v1/products", createBody, command.HeaderIdempotencyKey, "create"), http.StatusCreated, productAgg)

	stockBody := js(obj{"delta": 5, "reason": "delivery"})
	adjusted := requireSuccess(t, h.post("/v1/products/"+p+"/stock", stockBody, command.HeaderIdempotencyKey, "stock"), http.StatusOK, productAgg)
	require.EqualValues(t, 2, adjusted.Version)

	placed := requireSuccess(t, h.post("/v1/orders", orderBody(p), command.HeaderIdempotencyKey, "order"), http.StatusAccepted, orderAgg)

	forget()
	h.adjustStock(p, 1) // the stream moves on: version 3
	requireSuccess(t, h.post("/v1/products/"+p+"/discontinue", `{"reason":"gone"}`), http.StatusOK, productAgg)

	h.requireNothingAppended(func() {
		again := requireSuccess(t, h.post("/v1/products", createBody, command.HeaderIdempotencyKey, "create"), http.StatusCreated, productAgg)
		require.Equal(t, created, again)
		again = requireSuccess(t, h.post("/v1/products/"+p+"/stock", stockBody, command.HeaderIdempotencyKey, "stock"), http.StatusOK, productAgg)
		require.Equal(t, adjusted, again, "answers the version the command wrote, not the stream's current one")
		again = requireSuccess(t, h.post("/v1/orders", orderBody(p), command.HeaderIdempotencyKey, "order"), http.StatusAccepted, orderAgg)
		require.Equal(t, placed, again, "the order was placed before its product was discontinued")
	})
	require.EqualValues(t, 6, h.product(p).Stock())
}

// TestPurgedKeysAreAnsweredFromTheEventStore retries after the record of a key was purged: the
// command is not run again, and the answer is rebuilt from its events.
func TestPurgedKeysAreAnsweredFromTheEventStore(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	body := js(obj{"sku": "PURGE-1", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"})
	first := h.post("/v1/products", body, command.HeaderIdempotencyKey, "purged")
	created := requireSuccess(t, first, http.StatusCreated, productAgg)

	idem := command.NewIdempotency(h.pool)
	n, err := idem.Purge(t.Context(), time.Hour)
	require.NoError(t, err)
	require.Zero(t, n, "the record is younger than an hour")
	n, err = idem.Purge(t.Context(), 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	h.requireNothingAppended(func() {
		again := h.post("/v1/products", body, command.HeaderIdempotencyKey, "purged")
		require.Equal(t, created, requireSuccess(t, again, http.StatusCreated, productAgg))
		require.Empty(t, again.Header.Get("Idempotent-Replayed"))
	})
}

func TestIdempotencyKeyUsedConcurrently(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	p := h.createProduct("CONC-1")
	const n = 10
	for _, tc := range []replayCase{
		{"create product", "/v1/products", js(obj{"sku": "CONC-2", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"}), http.StatusCreated, productAgg},
		{"adjust stock", "/v1/products/" + p + "/stock", js(obj{"delta": 7, "reason": "delivery"}), http.StatusOK, productAgg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			before := h.eventCount()
			rs := concurrently(t, n, func(int) (string, string, string, []string) {
				return h.url, tc.path, tc.body, []string{command.HeaderIdempotencyKey, "same-" + strings.ReplaceAll(tc.name, " ", "-")}
			})
			first := requireSuccess(t, rs[0], tc.status, tc.aggregate)
			for _, r := range rs[1:] {
				require.Equal(t, first, requireSuccess(t, r, tc.status, tc.aggregate))
			}
			require.Equal(t, before+1, h.eventCount(), "appended once")
		})
	}
	require.EqualValues(t, 7, h.product(p).Stock())
}

// TestIdempotencyKeyReusedWhileInFlight holds a command in flight and sends its key again: with another
// body it is refused at once, with the same body it waits for, and answers with, the first one's events.
func TestIdempotencyKeyReusedWhileInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	p := h.createProduct("FLIGHT-1")
	path := "/v1/products/" + p + "/stock"
	body := js(obj{"delta": 1, "reason": "delivery"})
	key := []string{command.HeaderIdempotencyKey, "in-flight"}

	unlock := h.lockEvents()
	first := make(chan response, 1)
	twin := make(chan response, 1)
	go func() {
		r, _ := do(t.Context(), h.url, http.MethodPost, path, strings.NewReader(body), key...)
		first <- r
	}()
	require.Eventually(t, func() bool { return h.waitingAppends() == 1 }, 10*time.Second, 5*time.Millisecond)
	go func() {
		r, _ := do(t.Context(), h.url, http.MethodPost, path, strings.NewReader(body), key...)
		twin <- r
	}()

	// Bounded, so that a regression that lets this request run (and block) beside the first fails
	// the test instead of hanging it.
	reused := make(chan response, 1)
	go func() {
		r, _ := do(t.Context(), h.url, http.MethodPost, path, strings.NewReader(js(obj{"delta": 2, "reason": "delivery"})), key...)
		reused <- r
	}()
	var refused response
	require.Eventually(t, func() bool {
		select {
		case refused = <-reused:
			return true
		default:
			return false
		}
	}, 5*time.Second, 5*time.Millisecond, "a request reusing the key of one in flight was not refused")
	requireProblem(t, refused, http.StatusUnprocessableEntity)

	unlock()
	a, b := <-first, <-twin
	resA := requireSuccess(t, a, http.StatusOK, productAgg)
	require.Equal(t, resA, requireSuccess(t, b, http.StatusOK, productAgg))
	require.EqualValues(t, 2, resA.Version)
	require.EqualValues(t, 1, h.product(p).Stock())
}

func TestConcurrentStockAdjustmentsLoseNoUpdate(t *testing.T) {
	t.Parallel()
	const n = 50
	h := newHarness(t, config{})
	p := h.createProduct("HOT-1")
	rs := concurrently(t, n, func(int) (string, string, string, []string) {
		return h.url, "/v1/products/" + p + "/stock", js(obj{"delta": 1, "reason": "count"}), nil
	})
	requireEveryUpdate(t, h, p, rs)
}

// TestConcurrentStockAdjustmentsAcrossProcesses splits the requests over two services on one database,
// as two processes would be: each serialises its own requests on a lock, so a request only loses its
// append to a request of the other service, at most once per such request. Retrying one more time
// than the other service has requests is then always enough.
func TestConcurrentStockAdjustmentsAcrossProcesses(t *testing.T) {
	t.Parallel()
	const n = 50
	cfg := config{service: command.Options{MaxAttempts: n/2 + 1}}
	h := newHarness(t, cfg)
	other, _ := h.server(cfg)
	p := h.createProduct("HOT-2")
	rs := concurrently(t, n, func(i int) (string, string, string, []string) {
		base := h.url
		if i%2 == 1 {
			base = other
		}
		return base, "/v1/products/" + p + "/stock", js(obj{"delta": 1, "reason": "count"}), nil
	})
	requireEveryUpdate(t, h, p, rs)
}

// TestCachedStateBehindAnotherProcess: each command service caches the aggregates it used, and
// another process's appends leave that state behind. Every kind of decision must still be made on
// the current state: one that appends (the version check catches it), a refusal, a no-op, an
// If-Match, and the prices an order takes from its products.
func TestCachedStateBehindAnotherProcess(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	other, _ := h.server(config{})
	viaOther := func(path string, body any, headers ...string) result {
		t.Helper()
		return requireSuccess(t, send(t, other, http.MethodPost, path, strings.NewReader(js(body)), headers...), http.StatusOK, productAgg)
	}
	p := h.createProduct("STALE-1") // h caches it at version 1, with no stock
	stock := "/v1/products/" + p + "/stock"

	viaOther(stock, obj{"delta": 10, "reason": "delivery"}) // version 2, stock 10
	res := requireSuccess(t, h.post(stock, js(obj{"delta": -4, "reason": "write-off"})), http.StatusOK, productAgg)
	require.EqualValues(t, 3, res.Version, "refused on the cached state (no stock), allowed on the current one")

	res = viaOther(stock, obj{"delta": 1, "reason": "count"}) // other's cache is at version 2
	require.EqualValues(t, 4, res.Version)
	require.EqualValues(t, 7, h.product(p).Stock())

	rename := "/v1/products/" + p + "/rename"
	requireSuccess(t, h.post(rename, js(obj{"name": "Alpha"})), http.StatusOK, productAgg)       // version 5
	viaOther(rename, obj{"name": "Beta"})                                                        // version 6
	res = requireSuccess(t, h.post(rename, js(obj{"name": "Alpha"})), http.StatusOK, productAgg) // a no-op on the cached state
	require.EqualValues(t, 7, res.Version)
	require.Equal(t, "Alpha", h.product(p).Name())

	res = viaOther(stock, obj{"delta": 1, "reason": "count"}) // version 8
	res = requireSuccess(t, h.post(stock, js(obj{"delta": 1, "reason": "count"}), "If-Match", strconv.Quote(strconv.FormatUint(res.Version, 10))), http.StatusOK, productAgg)
	require.EqualValues(t, 9, res.Version, "an If-Match newer than the cached state")

	viaOther("/v1/products/"+p+"/reprice", obj{"price_cents": 999})
	o := h.placeOrder(p)
	stored := h.stream(orderAgg, o)
	require.Len(t, stored, 1)
	e, err := h.codec.Decode(stored[0].Type, stored[0].SchemaVersion, stored[0].Data)
	require.NoError(t, err)
	placed, ok := e.(events.OrderPlacedV1)
	require.True(t, ok, "%T", e)
	require.EqualValues(t, 999, placed.Lines[0].UnitPriceCents, "the order is priced with the current price")
}

// requireEveryUpdate checks that each of rs, +1 adjustments of product p at version 1, was appended.
func requireEveryUpdate(t *testing.T, h *harness, p string, rs []response) {
	t.Helper()
	var versions []uint64
	for _, r := range rs {
		versions = append(versions, requireSuccess(t, r, http.StatusOK, productAgg).Version)
	}
	slices.Sort(versions)
	for i, v := range versions {
		require.EqualValues(t, i+2, v, "versions %v", versions)
	}
	adjusted := 0
	for _, e := range h.stream(productAgg, p) {
		if e.Type == "product.stock-adjusted" {
			adjusted++
		}
	}
	require.Equal(t, len(rs), adjusted)
	require.EqualValues(t, len(rs), h.product(p).Stock())
}

func TestSKUClaims(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	create := func(sku string) response {
		return h.post("/v1/products", js(obj{"sku": sku, "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"}))
	}
	orphan := func(sku, age string) string {
		id := uuid.NewString()
		_, err := h.pool.Exec(t.Context(), `INSERT INTO product_skus (sku, product_id, claimed_at) VALUES ($1, $2, now() - $3::interval)`, sku, id, age)
		require.NoError(t, err)
		return id
	}
	holder := func(sku string) string {
		var id string
		require.NoError(t, h.pool.QueryRow(t.Context(), `SELECT product_id FROM product_skus WHERE sku = $1`, sku).Scan(&id))
		return id
	}

	p := h.createProduct("Claim-1")
	require.Equal(t, p, holder("CLAIM-1"))
	// An old claim of a product that exists is no orphan.
	_, err := h.pool.Exec(t.Context(), `UPDATE product_skus SET claimed_at = now() - interval '1 day'`)
	require.NoError(t, err)
	h.requireNothingAppended(func() {
		requireProblem(t, create("claim-1"), http.StatusUnprocessableEntity)
	})
	require.Equal(t, p, holder("CLAIM-1"))

	// A claim whose product never came to exist (its creator died between claim and append) is taken
	// over once it is older than the grace period...
	orphan("ORPHAN-OLD", "1 hour")
	taker := requireSuccess(t, create("orphan-old"), http.StatusCreated, productAgg)
	require.Equal(t, taker.ID, holder("ORPHAN-OLD"))
	require.Equal(t, "ORPHAN-OLD", h.product(taker.ID).SKU())

	// ...but not before: its creator may still be about to append.
	young := orphan("ORPHAN-NEW", "0 seconds")
	h.requireNothingAppended(func() {
		requireProblem(t, create("Orphan-New"), http.StatusUnprocessableEntity)
	})
	require.Equal(t, young, holder("ORPHAN-NEW"))

	// A refused create claims nothing, so the SKU stays free for the next one.
	h.requireNothingAppended(func() {
		requireProblem(t, h.post("/v1/products", js(obj{"sku": "FREE-1", "name": "", "category": "c", "price_cents": 5, "currency": "EUR"})), http.StatusUnprocessableEntity)
	})
	requireSuccess(t, create("free-1"), http.StatusCreated, productAgg)
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config{})
	h.createProduct("METRIC-1")
	requireProblem(t, h.post("/v1/nowhere", `{}`), http.StatusNotFound)

	r := h.get("/healthz")
	require.Equal(t, http.StatusOK, r.Status)
	require.JSONEq(t, `{"status":"ok"}`, string(r.Body))

	r = h.get("/readyz")
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	require.JSONEq(t, `{"status":"OK","checks":{"postgres":"ok"}}`, string(r.Body))

	r = h.get("/metrics")
	require.Equal(t, http.StatusOK, r.Status)
	require.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain"), r.Header.Get("Content-Type"))
	require.Contains(t, string(r.Body), `strata_http_requests_total{method="POST",route="/v1/products",service="command",status="201"} 1`)
	require.Contains(t, string(r.Body), `strata_command_appends_total{aggregate="product"} 1`)
	require.Contains(t, string(r.Body), `strata_command_aggregate_cache_total{result="miss"} 1`, "the new product's stream")
	require.Contains(t, string(r.Body), `strata_http_requests_total{method="POST",route="unmatched",service="command",status="404"} 1`)

	down, _ := h.server(config{handler: command.HandlerOptions{Ready: []platform.Check{
		{Name: "postgres", Run: h.pool.Ping},
		{Name: "nats", Run: func(context.Context) error { return errors.New("no route to host") }},
	}}})
	r = send(t, down, http.MethodGet, "/readyz", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.Status)
	require.JSONEq(t, `{"status":"Service Unavailable","checks":{"postgres":"ok","nats":"no route to host"}}`, string(r.Body))
}

// TestOverloadIs503 fills the only request slot with a readiness check that waits, then sends a
// command.
func TestOverloadIs503(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	gate := platform.Check{Name: "gate", Run: func(ctx context.Context) error {
		close(entered)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}}
	h := newHarness(t, config{handler: command.HandlerOptions{MaxInFlight: 1, Ready: []platform.Check{gate}}})
	ready := make(chan response, 1)
	go func() {
		r, _ := do(t.Context(), h.url, http.MethodGet, "/readyz", nil)
		ready <- r
	}()
	<-entered
	h.requireNothingAppended(func() {
		r := h.post("/v1/products", js(obj{"sku": "BUSY-1", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"}))
		requireProblem(t, r, http.StatusServiceUnavailable)
		require.Equal(t, "1", r.Header.Get("Retry-After"))
	})
	close(release)
	require.Equal(t, http.StatusOK, (<-ready).Status)
	requireSuccess(t, h.post("/v1/products", js(obj{"sku": "BUSY-1", "name": "n", "category": "c", "price_cents": 5, "currency": "EUR"})), http.StatusCreated, productAgg)
}
