package query

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	domainorder "github.com/strata-dev/strata/domain/order"
	"github.com/strata-dev/strata/internal/problem"
	"github.com/strata-dev/strata/search"
)

func loadOpenAPI(t *testing.T) (doc map[string]any, resolve func(any) map[string]any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	resolve = func(v any) map[string]any {
		t.Helper()
		m, ok := v.(map[string]any)
		require.True(t, ok, "want an object, got %v", v)
		if ref, ok := m["$ref"].(string); ok {
			cur := any(doc)
			for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
				cur = cur.(map[string]any)[tok]
			}
			target, ok := cur.(map[string]any)
			require.True(t, ok, "unresolved $ref %s", ref)
			return target
		}
		return m
	}
	return doc, resolve
}

// TestOpenAPIResponsesMatchStructs holds each response schema of openapi.json to the Go struct the
// handler encodes: the same properties, of the same JSON types, required unless omitempty.
func TestOpenAPIResponsesMatchStructs(t *testing.T) {
	t.Parallel()
	doc, resolve := loadOpenAPI(t)
	bodies := map[string]any{
		"listProducts": page[product]{}, "getProduct": product{},
		"getOrder": order{}, "listCustomerOrders": page[order]{},
		"searchProducts": productSearch{}, "searchOrders": orderSearch{},
		// The data of each status event.
		"streamOrderEvents": statusEntry{},
		// internal/platform's and this document: no struct of this package.
		"getHealth": nil, "getReadiness": nil, "getMetrics": nil, "getOpenAPI": nil,
	}
	seen := map[string]bool{}
	for path, item := range doc["paths"].(map[string]any) {
		op := item.(map[string]any)["get"].(map[string]any)
		id := op["operationId"].(string)
		body, ok := bodies[id]
		require.True(t, ok, "%s: operation %s has no struct in this test", path, id)
		seen[id] = true
		if body == nil {
			continue
		}
		content := resolve(op["responses"].(map[string]any)["200"])["content"].(map[string]any)
		var schema map[string]any
		if media, ok := content["text/event-stream"].(map[string]any); ok {
			schema = resolve(media["x-event-data"])
		} else {
			schema = resolve(content["application/json"].(map[string]any)["schema"])
		}
		matchSchema(t, id, resolve, schema, reflect.TypeOf(body))
	}
	require.Len(t, seen, len(bodies))

	// The query service's problems never carry field errors or versions; the rest is problem.Problem.
	schema := resolve(doc["components"].(map[string]any)["schemas"].(map[string]any)["Problem"])
	typ := reflect.TypeFor[problem.Problem]()
	var props []string
	for name, prop := range schema["properties"].(map[string]any) {
		props = append(props, name)
		f, ok := fieldByJSONName(typ, name)
		require.True(t, ok, "Problem: %s is not a field of problem.Problem", name)
		matchSchema(t, "Problem."+name, resolve, resolve(prop), f.Type)
	}
	require.ElementsMatch(t, []string{"type", "title", "status", "detail", "instance"}, props)
	require.ElementsMatch(t, []any{"type", "title", "status"}, schema["required"])
}

func fieldByJSONName(typ reflect.Type, name string) (reflect.StructField, bool) {
	for i := range typ.NumField() {
		if n, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ","); n == name {
			return typ.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func matchSchema(t *testing.T, where string, resolve func(any) map[string]any, schema map[string]any, typ reflect.Type) {
	t.Helper()
	if typ == reflect.TypeFor[time.Time]() {
		require.Equal(t, "string", schema["type"], where)
		require.Equal(t, "date-time", schema["format"], where)
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		require.Equal(t, "object", schema["type"], where)
		props := schema["properties"].(map[string]any)
		var names, required []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := f.Tag.Get("json")
			require.NotEmpty(t, tag, "%s: field %s has no json tag", where, f.Name)
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			names = append(names, name)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
			prop, ok := props[name]
			require.True(t, ok, "%s: field %s is not in the schema", where, name)
			matchSchema(t, where+"."+name, resolve, resolve(prop), f.Type)
		}
		var documented []string
		for name := range props {
			documented = append(documented, name)
		}
		require.ElementsMatch(t, names, documented, "%s: schema properties and struct fields differ", where)
		var documentedRequired []string
		for _, r := range schema["required"].([]any) {
			documentedRequired = append(documentedRequired, r.(string))
		}
		require.ElementsMatch(t, required, documentedRequired, "%s: required must be the fields without omitempty", where)
	case reflect.Slice:
		require.Equal(t, "array", schema["type"], where)
		matchSchema(t, where+"[]", resolve, resolve(schema["items"]), typ.Elem())
	case reflect.Map:
		require.Equal(t, reflect.String, typ.Key().Kind(), where)
		require.Equal(t, "object", schema["type"], where)
		matchSchema(t, where+"{}", resolve, resolve(schema["additionalProperties"]), typ.Elem())
	case reflect.Pointer:
		matchSchema(t, where, resolve, schema, typ.Elem())
	case reflect.String:
		require.Equal(t, "string", schema["type"], where)
	case reflect.Bool:
		require.Equal(t, "boolean", schema["type"], where)
	case reflect.Int64:
		require.Equal(t, "integer", schema["type"], where)
		require.Equal(t, "int64", schema["format"], where)
	case reflect.Int:
		require.Equal(t, "integer", schema["type"], where)
	case reflect.Uint64:
		require.Equal(t, "integer", schema["type"], where)
		minimum, ok := schema["minimum"].(float64)
		require.True(t, ok && minimum >= 0, "%s: an unsigned integer needs a minimum of 0 or more", where)
	default:
		t.Fatalf("%s: no JSON type for %s", where, typ)
	}
}

// TestOpenAPIBoundsMatchCode holds the documented bounds, defaults and enumerations to the constants
// the handlers and the search port use.
func TestOpenAPIBoundsMatchCode(t *testing.T) {
	t.Parallel()
	doc, resolve := loadOpenAPI(t)
	components := doc["components"].(map[string]any)
	param := func(name string) map[string]any {
		return resolve(components["parameters"].(map[string]any)[name])["schema"].(map[string]any)
	}
	require.InDelta(t, maxLimit, param("limit")["maximum"], 0)
	require.InDelta(t, defaultLimit, param("limit")["default"], 0)
	require.InDelta(t, maxCursorLen, param("cursor")["maxLength"], 0)
	require.InDelta(t, search.MaxLimit, param("searchLimit")["maximum"], 0)
	require.InDelta(t, search.DefaultLimit, param("searchLimit")["default"], 0)
	for _, p := range []string{"q", "searchCategory", "status"} {
		require.InDelta(t, search.MaxTextLength, param(p)["maxLength"], 0, p)
	}
	var sorts []any
	for _, s := range search.Sorts {
		sorts = append(sorts, string(s))
	}
	require.ElementsMatch(t, sorts, param("sort")["enum"])

	statuses := []any{string(domainorder.Pending), string(domainorder.Confirmed), string(domainorder.Rejected), string(domainorder.Cancelled), string(domainorder.Shipped)}
	schemas := components["schemas"].(map[string]any)
	for _, s := range []string{"Order", "StatusEntry", "SearchOrder"} {
		status := resolve(resolve(schemas[s])["properties"].(map[string]any)["status"])
		require.ElementsMatch(t, statuses, status["enum"], s)
	}
}
