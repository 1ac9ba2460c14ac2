package command

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOpenAPIBodiesMatchStructs holds each request body schema of openapi.json to the Go struct the
// handler decodes: the same fields, of the same JSON types, and no others.
func TestOpenAPIBodiesMatchStructs(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	bodies := map[string]any{
		"createProduct": createProductBody{}, "renameProduct": renameBody{}, "repriceProduct": repriceBody{},
		"adjustStock": stockBody{}, "discontinueProduct": reasonBody{}, "placeOrder": placeOrderBody{},
		"cancelOrder": reasonBody{}, "shipOrder": shipBody{},
	}
	resolve := func(v any) map[string]any {
		m := v.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			cur := any(doc)
			for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
				cur = cur.(map[string]any)[tok]
			}
			return cur.(map[string]any)
		}
		return m
	}
	seen := map[string]bool{}
	for _, item := range doc["paths"].(map[string]any) {
		op, ok := item.(map[string]any)["post"].(map[string]any)
		if !ok {
			continue
		}
		id := op["operationId"].(string)
		body, ok := bodies[id]
		require.True(t, ok, "operation %s has no body struct in this test", id)
		seen[id] = true
		schema := resolve(op["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["schema"])
		matchSchema(t, id, resolve, schema, reflect.TypeOf(body))
	}
	require.Len(t, seen, len(bodies))
}

func matchSchema(t *testing.T, where string, resolve func(any) map[string]any, schema map[string]any, typ reflect.Type) {
	t.Helper()
	switch typ.Kind() {
	case reflect.Struct:
		require.Equal(t, "object", schema["type"], where)
		require.Equal(t, false, schema["additionalProperties"], where)
		props := schema["properties"].(map[string]any)
		var names []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			names = append(names, name)
			prop, ok := props[name]
			require.True(t, ok, "%s: field %s is not in the schema", where, name)
			matchSchema(t, where+"."+name, resolve, resolve(prop), f.Type)
		}
		for name := range props {
			require.True(t, slices.Contains(names, name), "%s: schema property %s is not a field", where, name)
		}
		for _, r := range schema["required"].([]any) {
			require.Contains(t, names, r, where)
		}
	case reflect.Slice:
		require.Equal(t, "array", schema["type"], where)
		matchSchema(t, where+"[]", resolve, resolve(schema["items"]), typ.Elem())
	case reflect.String:
		require.Equal(t, "string", schema["type"], where)
	case reflect.Int64:
		require.Equal(t, "integer", schema["type"], where)
		require.Equal(t, "int64", schema["format"], where)
	default:
		t.Fatalf("%s: no JSON type for %s", where, typ)
	}
}
