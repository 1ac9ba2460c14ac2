package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/eventstore/esdb/esdbtest"
	"github.com/strata-dev/strata/internal/natstest"
	"github.com/strata-dev/strata/internal/pgtest"
	"github.com/strata-dev/strata/search/elasticsearch"
)

// TestEndToEnd runs `strata dev` in-process and drives it over HTTP: every write is read back at once
// through the query service with the token the command returned, 200 times in a row, and not one read
// may be stale; then writes are searched for with their tokens, and every search must find them. It
// runs on the PostgreSQL event store with PostgreSQL full-text search, on the EventStoreDB adapter
// against the in-process stand-in of EventStoreDB's gRPC API, and with Elasticsearch when
// ELASTICSEARCH_URL names one (make test starts one).
func TestEndToEnd(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		endToEnd(t, "", "")
	})
	t.Run("eventstoredb-standin", func(t *testing.T) {
		t.Parallel()
		endToEnd(t, esdbtest.Start(t).URL(), "")
	})
	t.Run("elasticsearch", func(t *testing.T) {
		es := os.Getenv("ELASTICSEARCH_URL")
		if es == "" && os.Getenv("CI") != "" {
			t.Fatal("ELASTICSEARCH_URL is not set in CI: make test starts Elasticsearch with deploy/elasticsearch.sh")
		}
		if es == "" {
			t.Skip("ELASTICSEARCH_URL is not set; `make test` starts Elasticsearch with deploy/elasticsearch.sh")
		}
		t.Parallel()
		endToEnd(t, "", es)
	})
}

func endToEnd(t *testing.T, eventStoreURL, elasticsearchURL string) {
	vars := startDev(t, map[string]string{
		"ELASTICSEARCH_URL": elasticsearchURL, "ELASTICSEARCH_INDEX_PREFIX": "e2e-" + strings.ToLower(rand.Text()[:10]),
		"EVENTSTORE_URL": eventStoreURL, "NATS_PARTITIONS": "4",
	})
	command, query := "http://"+vars["COMMAND_ADDR"], "http://"+vars["QUERY_ADDR"]

	post := func(path, body string) (map[string]any, string) {
		t.Helper()
		resp, err := http.Post(command+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		require.Less(t, resp.StatusCode, 300, "%s: %v", path, out)
		return out, resp.Header.Get("Consistency-Token")
	}
	get := func(path, token string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, query+path, nil)
		require.NoError(t, err)
		req.Header.Set("Consistency-Token", token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}

	created, token := post("/v1/products", `{"sku":"E2E-1","name":"Mug","description":"","category":"kitchen","price_cents":1299,"currency":"EUR","tags":[]}`)
	id := created["id"].(string)
	status, product := get("/v1/products/"+id, token)
	require.Equal(t, http.StatusOK, status, "%v", product)
	require.Equal(t, "Mug", product["name"])

	stale := 0
	for i := 1; i <= 200; i++ {
		var body string
		if i%2 == 0 {
			body = fmt.Sprintf(`{"delta":1,"reason":"delivery %d"}`, i)
			_, token = post("/v1/products/"+id+"/stock", body)
		} else {
			_, token = post("/v1/products/"+id+"/rename", fmt.Sprintf(`{"name":"Mug %d"}`, i))
		}
		status, product := get("/v1/products/"+id, token)
		require.Equal(t, http.StatusOK, status, "read %d: %v", i, product)
		wantName := fmt.Sprintf("Mug %d", i-(1-i%2))
		if product["name"] != wantName || product["stock"] != float64(i/2) {
			stale++
		}
	}
	require.Zero(t, stale, "reads with the write's token must reflect the write")

	order, token := post("/v1/orders", fmt.Sprintf(`{"customer_id":"c1","customer_name":"Ada","customer_email":"ada@example.com","lines":[{"product_id":%q,"quantity":2}]}`, id))
	orderToken := token
	status, got := get("/v1/orders/"+order["id"].(string), token)
	require.Equal(t, http.StatusOK, status, "%v", got)
	require.Equal(t, "pending", got["status"])
	require.Equal(t, float64(2*1299), got["total_cents"])

	// Search with the write's token: the change is searchable at once, on either engine.
	unseen := 0
	for i := range 30 {
		word := fmt.Sprintf("aurora%dz", i)
		_, token = post("/v1/products/"+id+"/rename", fmt.Sprintf(`{"name":"Mug %s"}`, word))
		status, res := get("/v1/search/products?q="+word, token)
		require.Equal(t, http.StatusOK, status, "search %d: %v", i, res)
		items := res["items"].([]any)
		if len(items) != 1 || items[0].(map[string]any)["id"] != id || items[0].(map[string]any)["name"] != "Mug "+word {
			unseen++
		}
	}
	require.Zero(t, unseen, "searches with the write's token must find the write")
	status, res := get("/v1/search/orders?q=ada&status=pending", orderToken)
	require.Equal(t, http.StatusOK, status, "%v", res)
	require.Len(t, res["items"], 1, "%v", res)
	require.Equal(t, order["id"], res["items"].([]any)[0].(map[string]any)["id"])
}

// dropIndices removes the Elasticsearch indices and templates of cfg's prefix, if it uses
// Elasticsearch, when the test ends.
func dropIndices(t testing.TB, cfg config) {
	if len(cfg.ElasticsearchURLs) == 0 {
		return
	}
	idx, err := elasticsearch.New(elasticsearch.Options{URLs: cfg.ElasticsearchURLs, Prefix: cfg.ElasticsearchPrefix})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, idx.Drop(context.Background())) })
}

// startDev runs `strata dev` in-process on free ports, a fresh schema and data directory, with extra
// settings on top, and returns its settings once the query service is ready. It stops, and its
// Elasticsearch indices are dropped, when the test ends.
func startDev(tb testing.TB, extra map[string]string) map[string]string {
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(tb)) }
	vars := map[string]string{
		"DATABASE_URL": pgtest.URL(tb), "STRATA_DATA_DIR": tb.TempDir(),
		"COMMAND_ADDR": addr(), "QUERY_ADDR": addr(), "ADMIN_ADDR": addr(), "RELAY_ADDR": addr(),
		"NATS_EMBEDDED_PORT": fmt.Sprint(natstest.FreePort(tb)), "LOG_LEVEL": "warn",
	}
	maps.Copy(vars, extra)
	cfg, err := loadConfig(env(vars))
	require.NoError(tb, err)
	dropIndices(tb, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	tb.Cleanup(func() { cancel(); require.NoError(tb, <-done) })
	require.Eventually(tb, func() bool {
		resp, err := http.Get("http://" + vars["QUERY_ADDR"] + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 20*time.Millisecond, "strata dev should become ready")
	return vars
}
