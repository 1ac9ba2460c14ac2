package command_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/command"
)

// routesOnly is the command handler without a database behind it: enough to walk its routes and serve
// the document.
func routesOnly(t *testing.T) http.Handler {
	t.Helper()
	return command.NewHandler(command.NewService(nil, nil, nil, command.Options{}), command.NewIdempotency(nil), command.HandlerOptions{})
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
	require.Len(t, routed, 12)
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

// TestOpenAPIDescribesEveryCommandOutcome checks each command against DESIGN section 4: its success with
// the headers a client relies on, its request headers, and every error as a problem.
func TestOpenAPIDescribesEveryCommandOutcome(t *testing.T) {
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
	successes := map[string]string{
		"/v1/products": "201", "/v1/orders": "202",
		"/v1/products/{id}/rename": "200", "/v1/products/{id}/reprice": "200", "/v1/products/{id}/stock": "200",
		"/v1/products/{id}/discontinue": "200", "/v1/orders/{id}/cancel": "200", "/v1/orders/{id}/ship": "200",
	}
	for path, status := range successes {
		op := deref(doc["paths"].(map[string]any)[path])["post"].(map[string]any)
		responses := op["responses"].(map[string]any)

		ok := deref(responses[status])
		headers := ok["headers"].(map[string]any)
		for _, h := range []string{"ETag", "Consistency-Token"} {
			require.Contains(t, headers, h, "%s %s", path, status)
		}
		if status != "200" {
			require.Contains(t, headers, "Location", path)
		}
		body := deref(ok["content"].(map[string]any)["application/json"].(map[string]any)["schema"])
		require.ElementsMatch(t, []any{"id", "version"}, body["required"], path)

		errs := []string{"400", "409", "412", "413", "415", "422", "503"}
		if strings.Contains(path, "{id}") {
			errs = append(errs, "404")
		}
		for _, code := range errs {
			require.Contains(t, responses, code, "%s: no %s", path, code)
			content := deref(responses[code])["content"].(map[string]any)
			require.Contains(t, content, "application/problem+json", "%s %s", path, code)
			require.Equal(t, "#/components/schemas/Problem", content["application/problem+json"].(map[string]any)["schema"].(map[string]any)["$ref"])
		}
		require.Contains(t, deref(responses["503"])["headers"], "Retry-After")

		var params []string
		for _, p := range op["parameters"].([]any) {
			params = append(params, deref(p)["name"].(string))
		}
		for _, h := range []string{"If-Match", "Idempotency-Key", "X-Correlation-ID"} {
			require.Contains(t, params, h, path)
		}
		schema := deref(op["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["schema"])
		require.Equal(t, false, schema["additionalProperties"], path)
	}

	problem := deref(doc["components"].(map[string]any)["schemas"].(map[string]any)["Problem"])
	var props []string
	for name := range problem["properties"].(map[string]any) {
		props = append(props, name)
	}
	require.ElementsMatch(t, []string{"type", "title", "status", "detail", "instance", "errors", "current_version"}, props)
}

func TestOpenAPIIsServed(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	srv := httptest.NewServer(routesOnly(t))
	t.Cleanup(srv.Close)
	r := send(t, srv.URL, http.MethodGet, "/openapi.json", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, string(want), string(r.Body))
}
