package command_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/command"
	"github.com/strata-dev/strata/internal/openapitest"
)

// routesOnly is the command handler without a database behind it: enough to walk its routes and serve
// the document.
func routesOnly(t *testing.T) http.Handler {
	t.Helper()
	return command.NewHandler(command.NewService(nil, nil, nil, command.Options{}), command.NewIdempotency(nil), command.HandlerOptions{})
}

func loadSpec(t *testing.T) map[string]any {
	t.Helper()
	return openapitest.Load(t, "openapi.json")
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	router, ok := routesOnly(t).(*mux.Router)
	require.True(t, ok, "NewHandler no longer returns a *mux.Router: update this test")
	require.Equal(t, 12, openapitest.RequireRoutesDocumented(t, router, loadSpec(t)))
}

func TestOpenAPIRefsResolve(t *testing.T) {
	t.Parallel()
	openapitest.RequireRefsResolve(t, loadSpec(t))
}

// TestOpenAPIDescribesEveryCommandOutcome checks each command against DESIGN section 4: its success with
// the headers a client relies on, its request headers, and every error as a problem.
func TestOpenAPIDescribesEveryCommandOutcome(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	deref := func(v any) map[string]any {
		t.Helper()
		return openapitest.Object(t, doc, v)
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
