package query_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/openapitest"
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
	return openapitest.Load(t, "openapi.json")
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	router, ok := routesOnly(t).(*mux.Router)
	require.True(t, ok, "NewHandler no longer returns a *mux.Router: update this test")
	require.Equal(t, 11, openapitest.RequireRoutesDocumented(t, router, loadSpec(t)))
}

func TestOpenAPIRefsResolve(t *testing.T) {
	t.Parallel()
	openapitest.RequireRefsResolve(t, loadSpec(t))
}

// TestOpenAPIDescribesEveryReadOutcome checks each read against DESIGN section 5 and the handlers:
// the query parameters they read, the consistency-token protocol, ETag and If-None-Match on single
// entities, and every error as a problem.
func TestOpenAPIDescribesEveryReadOutcome(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	deref := func(v any) map[string]any {
		t.Helper()
		return openapitest.Object(t, doc, v)
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
