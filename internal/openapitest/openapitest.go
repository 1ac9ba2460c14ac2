// Package openapitest checks a service's hand-written OpenAPI document against its router: every
// route documented, every documented operation routed, every local reference resolvable. The command
// and query services use it from their tests.
package openapitest

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/stretchr/testify/require"
)

// Load reads the OpenAPI 3.1 document at path.
func Load(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc), "%s is not JSON", path)
	require.Equal(t, "3.1.0", doc["openapi"])
	return doc
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// RequireRoutesDocumented fails unless the operations of doc are exactly the routes of router
// ("GET /v1/products/{id}"), and returns how many there are.
func RequireRoutesDocumented(t testing.TB, router *mux.Router, doc map[string]any) int {
	t.Helper()
	var routed []string
	require.NoError(t, router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if route.GetHandler() == nil {
			return nil // a route that only groups others
		}
		path, err := route.GetPathTemplate()
		require.NoError(t, err)
		ms, err := route.GetMethods()
		require.NoError(t, err, "route %s answers every method; give it Methods so the document can describe it", path)
		for _, m := range ms {
			routed = append(routed, m+" "+path)
		}
		return nil
	}))
	var documented []string
	for path, item := range doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if slices.Contains(methods, method) {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	var missing, extra []string
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			missing = append(missing, r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routed, d) {
			extra = append(extra, d)
		}
	}
	require.Empty(t, missing, "routes missing from the OpenAPI document")
	require.Empty(t, extra, "operations of the OpenAPI document that nothing routes")
	return len(routed)
}

// RequireRefsResolve fails unless every $ref in doc resolves, and there is at least one.
func RequireRefsResolve(t testing.TB, doc map[string]any) {
	t.Helper()
	refs := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				refs++
				require.NotNil(t, Resolve(t, doc, ref), "unresolved $ref %s", ref)
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

// Resolve resolves a local reference ("#/a/b") in doc, or returns nil.
func Resolve(t testing.TB, doc any, ref string) any {
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

// Object returns v as an object, following it if it is a reference, and fails otherwise.
func Object(t testing.TB, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "want an object, got %v", v)
	if ref, ok := m["$ref"].(string); ok {
		target, ok := Resolve(t, doc, ref).(map[string]any)
		require.True(t, ok, "unresolved $ref %s", ref)
		return target
	}
	return m
}
