package query

import (
	_ "embed"
	"net/http"
)

// openAPI describes the query API. TestOpenAPIMatchesRoutes keeps it in step with the router, and
// TestOpenAPIResponsesMatchStructs its response schemas with the structs the handlers encode.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
