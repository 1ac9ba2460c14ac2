package command

import (
	_ "embed"
	"net/http"
)

// openAPI describes the command API. TestOpenAPIMatchesRoutes keeps it in step with the router.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
