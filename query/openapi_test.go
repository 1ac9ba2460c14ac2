package query_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/query"
	searchpg "github.com/strata-dev/strata/search/postgres"
)

// routesOnly is the query handler with every route, search included, over a pool it never uses:
// enough to walk its routes and serve the document.
func routesOnly(t *testing.T) http.Handler {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.URL(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	waiter := query.NewWaiter(pool, slog.New(slog.DiscardHandler))
	return query.NewHandler(pool, waiter, query.HandlerOptions{Search: searchpg.New(pool)})
}

func loadSpec(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc), "openapi.json is not JSON")
	require.Equal(t, "3.1.0", doc["openapi"])
	return doc
}

var specMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	router, ok := routesOnly(t).(*mux.Router)
	require.True(t, ok, "NewHandler no longer returns a *mux.Router: update this test")

	var routed []string
	require.NoError(t, router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if route.GetHandler() == nil {
			return nil // a route that only groups others
		}
		path, err := route.GetPathTemplate()
		require.NoError(t, err)
		methods, err := route.GetMethods()
		require.NoError(t, err, "route %s answers every method; give it Methods so the spec can describe it", path)
		for _, m := range methods {
			routed = append(routed, m+" "+path)
		}
		return nil
	}))

	var specified []string
	for path, item := range loadSpec(t)["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if slices.Contains(specMethods, method) {
				specified = append(specified, strings.ToUpper(method)+" "+path)
			}
		}
	}
	var missing, extra []string
	for _, r := range routed {
		if !slices.Contains(specified, r) {
			missing = append(missing, r)
		}
	}
	for _, s := range specified {
		if !slices.Contains(routed, s) {
			extra = append(extra, s)
		}
	}
	require.Empty(t, missing, "routes of NewHandler missing from openapi.json")
	require.Empty(t, extra, "operations of openapi.json that NewHandler does not route")
	require.Len(t, routed, 11)
}

func TestOpenAPIRefsResolve(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	refs := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				refs++
				require.NotNil(t, resolvePointer(t, doc, ref), "unresolved $ref %s", ref)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
	require.Positive(t, refs)
}

// resolvePointer resolves a local reference ("#/a/b") in doc, or returns nil.
func resolvePointer(t *testing.T, doc any, ref string) any {
	t.Helper()
	require.True(t, strings.HasPrefix(ref, "#/"), "only local references are used: %s", ref)
	cur := doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch c := cur.(type) {
		case map[string]any:
			cur = c[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
		if cur == nil {
			return nil
		}
	}
	return cur
}

// TestOpenAPIDescribesEveryReadOutcome checks each read against DESIGN section 5 and the handlers:
// the query parameters they read, the consistency-token protocol, ETag and If-None-Match on single
// entities, and every error as a problem.
func TestOpenAPIDescribesEveryReadOutcome(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	deref := func(v any) map[string]any {
		t.Helper()
		m, ok := v.(map[string]any)
		require.True(t, ok, "want an object, got %v", v)
		if ref, ok := m["$ref"].(string); ok {
			target, ok := resolvePointer(t, doc, ref).(map[string]any)
			require.True(t, ok, "unresolved $ref %s", ref)
			return target
		}
		return m
	}
	tests := []struct {
		path    string
		query   []string // the query parameters the handler reads
		errs    []string
		entity  bool // ETag, If-None-Match, 304
		content string
	}{
		{path: "/v1/products", query: []string{"category", "cursor", "limit"}, errs: []string{"400", "500", "503"}},
		{path: "/v1/products/{id}", errs: []string{"400", "404", "500", "503"}, entity: true},
		{path: "/v1/orders/{id}", errs: []string{"400", "404", "500", "503"}, entity: true},
		{path: "/v1/orders/{id}/events", errs: []string{"400", "404", "500", "503"}, content: "text/event-stream"},
		{path: "/v1/customers/{id}/orders", query: []string{"cursor", "limit"}, errs: []string{"400", "500", "503"}},
		{
			path:  "/v1/search/products",
			query: []string{"q", "category", "min_price", "max_price", "in_stock", "sort", "cursor", "limit"},
			errs:  []string{"400", "500", "503"},
		},
		{path: "/v1/search/orders", query: []string{"q", "status", "from", "to", "cursor", "limit"}, errs: []string{"400", "500", "503"}},
	}
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			op := deref(doc["paths"].(map[string]any)[tt.path])["get"].(map[string]any)
			require.NotEmpty(t, op["operationId"])
			require.NotEmpty(t, op["description"])

			var inQuery, inHeader, inPath []string
			for _, p := range op["parameters"].([]any) {
				p := deref(p)
				require.NotEmpty(t, p["description"], "parameter %s", p["name"])
				require.Contains(t, p, "schema", "parameter %s", p["name"])
				switch p["in"] {
				case "query":
					inQuery = append(inQuery, p["name"].(string))
				case "header":
					inHeader = append(inHeader, p["name"].(string))
				case "path":
					require.Equal(t, true, p["required"])
					inPath = append(inPath, p["name"].(string))
				}
			}
			require.ElementsMatch(t, append(slices.Clone(tt.query), "consistency_token"), inQuery)
			var wantPath []string
			for _, m := range pathParam.FindAllStringSubmatch(tt.path, -1) {
				wantPath = append(wantPath, m[1])
			}
			require.ElementsMatch(t, wantPath, inPath)
			for _, h := range []string{"Consistency-Token", "Prefer", "X-Request-ID", "X-Correlation-ID"} {
				require.Contains(t, inHeader, h)
			}
			require.Equal(t, tt.entity, slices.Contains(inHeader, "If-None-Match"))
			require.Equal(t, tt.content == "text/event-stream", slices.Contains(inHeader, "Last-Event-ID"))

			responses := op["responses"].(map[string]any)
			ok := deref(responses["200"])
			headers := ok["headers"].(map[string]any)
			for _, h := range []string{"Consistency-Token", "Preference-Applied", "Cache-Control", "X-Request-ID"} {
				require.Contains(t, headers, h)
			}
			content := tt.content
			if content == "" {
				content = "application/json"
			}
			require.Contains(t, ok["content"], content)
			require.Equal(t, tt.entity, headers["ETag"] != nil)
			if tt.entity {
				notModified := deref(responses["304"])
				require.NotContains(t, notModified, "content")
				for _, h := range []string{"ETag", "Consistency-Token", "Cache-Control"} {
					require.Contains(t, notModified["headers"], h)
				}
			} else {
				require.NotContains(t, responses, "304")
			}

			var statuses []string
			for code := range responses {
				statuses = append(statuses, code)
			}
			want := append([]string{"200"}, tt.errs...)
			if tt.entity {
				want = append(want, "304")
			}
			require.ElementsMatch(t, want, statuses)
			for _, code := range tt.errs {
				content := deref(responses[code])["content"].(map[string]any)
				require.Len(t, content, 1, code)
				require.Equal(t, "#/components/schemas/Problem",
					content["application/problem+json"].(map[string]any)["schema"].(map[string]any)["$ref"], code)
			}
			require.Contains(t, deref(responses["503"])["headers"], "Retry-After")
		})
	}
}

func TestOpenAPIIsServed(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	srv := httptest.NewServer(routesOnly(t))
	t.Cleanup(srv.Close)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/openapi.json", nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	require.NotEmpty(t, res.Header.Get("X-Request-ID"), "served through the service's middleware")
	require.Equal(t, string(want), string(body))

	req, err = http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/openapi.json", nil)
	require.NoError(t, err)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
	require.Equal(t, "GET", res.Header.Get("Allow"))
}
