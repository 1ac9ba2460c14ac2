package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	elastic "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/strata-dev/strata/internal/backoff"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/search"
)

// Defaults of [Options].
const (
	DefaultPrefix         = "strata"
	DefaultRequestTimeout = 10 * time.Second
	DefaultMaxRetries     = 3
)

// Names of the projections, as recorded in projection_streams and checkpoints.
const (
	ProductsProjection = "products-elasticsearch"
	OrdersProjection   = "orders-elasticsearch"
)

// mappingVersion is the version of the index templates in migrations/elasticsearch that Setup creates
// indices from: <model>-v<mappingVersion>.json.
const mappingVersion = 1

// Options configures an [Index].
type Options struct {
	// URLs are the addresses of the cluster's nodes, such as http://127.0.0.1:9200. Credentials may
	// be given in a URL (http://user:password@host:9200). At least one is required.
	URLs []string
	// Prefix starts the name of every template, index and alias, so that several deployments (or
	// tests) share a cluster. Lower-case letters, digits, '.', '_' and '-', starting with a letter or
	// digit; default [DefaultPrefix].
	Prefix string
	// RefreshInterval, when positive, sets index.refresh_interval on the indices behind the aliases
	// at Setup. Zero keeps Elasticsearch's default (1s, paused on search-idle shards), which is right
	// for strata: reads that must see a write ask for a refresh ([Index.Refresh]).
	RefreshInterval time.Duration
	// RequestTimeout bounds each request to Elasticsearch, its retries included; default
	// [DefaultRequestTimeout].
	RequestTimeout time.Duration
	// MaxRetries is how often a request is retried after a connection error or a 502, 503 or 504,
	// with exponential backoff; default [DefaultMaxRetries], negative for none.
	MaxRetries int
	// Transport, if set, carries the HTTP requests; by default a clone of http.DefaultTransport
	// that keeps more idle connections per node.
	Transport http.RoundTripper
}

var validPrefix = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}$`)

func (o *Options) setDefaults() error {
	var errs []error
	if len(o.URLs) == 0 {
		errs = append(errs, errors.New("at least one URL is required"))
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !validPrefix.MatchString(o.Prefix) {
		errs = append(errs, fmt.Errorf("prefix %q: want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100", o.Prefix))
	}
	if o.RefreshInterval < 0 {
		errs = append(errs, fmt.Errorf("refresh interval must not be negative, got %s", o.RefreshInterval))
	}
	if o.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout must not be negative, got %s", o.RequestTimeout))
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	return errors.Join(errs...)
}

// names are the names of one model's template, index and aliases.
type names struct {
	model          string // products or orders
	template       string // <prefix>-<model>-v<n>, also the name of the index it applies to
	read, write    string // the aliases
	templateSource string // the file in migrations.Elasticsearch
}

func newNames(prefix, model string) names {
	base := prefix + "-" + model
	return names{
		model:          model,
		template:       fmt.Sprintf("%s-v%d", base, mappingVersion),
		read:           base,
		write:          base + "-write",
		templateSource: fmt.Sprintf("elasticsearch/%s-v%d.json", model, mappingVersion),
	}
}

// conn is what an [Index] and its projections share: the client and the names.
type conn struct {
	es       *elastic.Client
	timeout  time.Duration
	products names
	orders   names
}

// Index is the Elasticsearch engine of the search port: it searches the product and order indices
// and provides the projections that fill them ([Index.Products], [Index.Orders]). It is safe for
// concurrent use.
type Index struct {
	c               *conn
	refreshInterval time.Duration
	refresh         *refresher
}

// New returns an Index on the cluster opts names. It performs no I/O; call [Index.Setup] before the
// first search or write. It fails only on invalid options.
func New(opts Options) (*Index, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("elasticsearch: %w", err)
	}
	maxRetries := max(opts.MaxRetries, 0)
	transport := opts.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32 // the default 2 would reconnect under concurrent searches
		transport = t
	}
	es, err := elastic.NewClient(elastic.Config{
		Addresses:     opts.URLs,
		Transport:     transport,
		RetryOnStatus: []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
		DisableRetry:  maxRetries == 0,
		MaxRetries:    maxRetries,
		RetryBackoff:  retryBackoff,
		// Connection errors are retried, but not a request whose context ended.
		RetryOnError: func(req *http.Request, _ error) bool { return req.Context().Err() == nil },
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: %w", err)
	}
	c := &conn{es: es, timeout: opts.RequestTimeout,
		products: newNames(opts.Prefix, "products"), orders: newNames(opts.Prefix, "orders")}
	idx := &Index{c: c, refreshInterval: opts.RefreshInterval}
	idx.refresh = newRefresher(func(ctx context.Context) error {
		return c.refresh(ctx, c.products.read, c.orders.read)
	})
	return idx, nil
}

// retryBackoff waits 100ms, 200ms, 400ms… up to 2s between retries (the client counts attempts
// from 1), with up to 50% jitter.
func retryBackoff(attempt int) time.Duration {
	return backoff.Delay(100*time.Millisecond, 2*time.Second, attempt-1)
}

// Engine implements [search.Index]: "elasticsearch".
func (*Index) Engine() string { return "elasticsearch" }

// Projections implements [search.Index].
func (*Index) Projections() (products, orders string) { return ProductsProjection, OrdersProjection }

// Products returns the projection that keeps the product index.
func (i *Index) Products() *Products { return &Products{c: i.c} }

// Orders returns the projection that keeps the order index.
func (i *Index) Orders() *Orders { return &Orders{c: i.c} }

// Refresh implements [search.Index]: it returns once a _refresh of both read aliases that started
// after the call has finished. Concurrent callers share refreshes. It fails if the refresh fails or
// ctx ends first.
func (i *Index) Refresh(ctx context.Context) error { return i.refresh.do(ctx) }

// Setup puts the index templates and, for each model whose aliases are missing, creates the current
// version of its index with both aliases (read, and write with is_write_index). Existing aliases are
// left alone, whichever index they point to. It is idempotent and safe to call from several
// processes at once. It fails if Elasticsearch cannot be reached or refuses a request.
func (i *Index) Setup(ctx context.Context) error {
	for _, n := range []names{i.c.products, i.c.orders} {
		if err := i.c.setup(ctx, n); err != nil {
			return fmt.Errorf("elasticsearch setup %s: %w", n.model, err)
		}
		if i.refreshInterval > 0 {
			body := fmt.Sprintf(`{"index":{"refresh_interval":"%dms"}}`, i.refreshInterval.Milliseconds())
			_, err := i.c.do(ctx, esapi.IndicesPutSettingsRequest{Index: []string{n.read, n.write}, Body: strings.NewReader(body)})
			if err != nil {
				return fmt.Errorf("elasticsearch setup %s: refresh interval: %w", n.model, err)
			}
		}
	}
	return nil
}

func (c *conn) setup(ctx context.Context, n names) error {
	source, err := migrations.Elasticsearch.ReadFile(n.templateSource)
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	template, err := json.Marshal(map[string]any{
		"index_patterns": []string{n.template},
		"priority":       500, // above any catch-all template of the cluster
		"template":       json.RawMessage(source),
		"_meta":          map[string]any{"managed_by": "strata", "source": "migrations/" + n.templateSource},
	})
	if err != nil {
		return err
	}
	if _, err := c.do(ctx, esapi.IndicesPutIndexTemplateRequest{Name: n.template, Body: bytes.NewReader(template)}); err != nil {
		return fmt.Errorf("put template %s: %w", n.template, err)
	}

	missing, err := c.missingAliases(ctx, n.read, n.write)
	if err != nil || len(missing) == 0 {
		return err
	}
	create, err := json.Marshal(map[string]any{"aliases": map[string]any{
		n.read:  map[string]any{},
		n.write: map[string]any{"is_write_index": true},
	}})
	if err != nil {
		return err
	}
	_, err = c.do(ctx, esapi.IndicesCreateRequest{Index: n.template, Body: bytes.NewReader(create)})
	var e *Error
	if errors.As(err, &e) && e.Type == "resource_already_exists_exception" {
		// Another process created it, or a previous Setup stopped before its aliases existed: add
		// the aliases that are still missing, to this index.
		missing, err = c.missingAliases(ctx, n.read, n.write)
		if err != nil || len(missing) == 0 {
			return err
		}
		var actions []map[string]any
		for _, a := range missing {
			add := map[string]any{"index": n.template, "alias": a}
			if a == n.write {
				add["is_write_index"] = true
			}
			actions = append(actions, map[string]any{"add": add})
		}
		body, err := json.Marshal(map[string]any{"actions": actions})
		if err != nil {
			return err
		}
		_, err = c.do(ctx, esapi.IndicesUpdateAliasesRequest{Body: bytes.NewReader(body)})
		if err != nil {
			return fmt.Errorf("add aliases %v to %s: %w", missing, n.template, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create index %s: %w", n.template, err)
	}
	return nil
}

// missingAliases returns those of aliases that do not exist.
func (c *conn) missingAliases(ctx context.Context, aliases ...string) ([]string, error) {
	var missing []string
	for _, a := range aliases {
		_, err := c.do(ctx, esapi.IndicesExistsAliasRequest{Name: []string{a}})
		var e *Error
		switch {
		case err == nil:
		case errors.As(err, &e) && e.Status == http.StatusNotFound:
			missing = append(missing, a)
		default:
			return nil, fmt.Errorf("alias %s: %w", a, err)
		}
	}
	return missing, nil
}

// refresh refreshes the indices behind the given aliases; it fails unless every shard refreshed.
func (c *conn) refresh(ctx context.Context, aliases ...string) error {
	body, err := c.do(ctx, esapi.IndicesRefreshRequest{Index: aliases})
	if err != nil {
		return fmt.Errorf("elasticsearch refresh: %w", err)
	}
	var res struct {
		Shards struct {
			Total, Failed int
		} `json:"_shards"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return fmt.Errorf("elasticsearch refresh: %w", err)
	}
	if res.Shards.Failed > 0 {
		return fmt.Errorf("elasticsearch refresh: %d of %d shards failed", res.Shards.Failed, res.Shards.Total)
	}
	return nil
}

// Error is an error response of Elasticsearch: its HTTP status and the type and reason of its root
// cause.
type Error struct {
	Status       int
	Type, Reason string
}

// Unwrap makes an overloaded or unreachable cluster (429, 502, 503, 504) a [search.ErrUnavailable],
// which the query service answers with 503 and Retry-After.
func (e *Error) Unwrap() error {
	switch e.Status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return search.ErrUnavailable
	}
	return nil
}

// Drop deletes what [Index.Setup] created under the prefix: the indices (their documents) and the
// index templates. It is for tests, benchmarks and tearing a deployment down; what is already gone
// is not an error.
func (i *Index) Drop(ctx context.Context) error {
	var errs []error
	for _, n := range []names{i.c.products, i.c.orders} {
		ignore := true
		if _, err := i.c.do(ctx, esapi.IndicesDeleteRequest{Index: []string{n.template}, IgnoreUnavailable: &ignore}); err != nil {
			errs = append(errs, fmt.Errorf("delete index %s: %w", n.template, err))
		}
		_, err := i.c.do(ctx, esapi.IndicesDeleteIndexTemplateRequest{Name: n.template})
		var e *Error
		if err != nil && !(errors.As(err, &e) && e.Status == http.StatusNotFound) {
			errs = append(errs, fmt.Errorf("delete index template %s: %w", n.template, err))
		}
	}
	return errors.Join(errs...)
}

// Error describes the error for humans.
func (e *Error) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("status %d", e.Status)
	}
	return fmt.Sprintf("%s: %s (status %d)", e.Type, e.Reason, e.Status)
}

// do runs req within the request timeout and returns the body of a successful response, or an
// [*Error] for an error response.
func (c *conn) do(ctx context.Context, req esapi.Request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := req.Do(ctx, c.es)
	if err != nil {
		// Retries included, the cluster could not be reached in time.
		return nil, fmt.Errorf("%w: %w", search.ErrUnavailable, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if res.IsError() {
		return nil, parseError(res.StatusCode, body)
	}
	return body, nil
}

func parseError(status int, body []byte) *Error {
	var r struct {
		Error json.RawMessage `json:"error"`
	}
	e := &Error{Status: status}
	if json.Unmarshal(body, &r) != nil || len(r.Error) == 0 {
		e.Reason = truncate(string(body), 500)
		return e
	}
	var cause errorCause
	if json.Unmarshal(r.Error, &cause) != nil {
		e.Reason = truncate(string(r.Error), 500) // some errors are plain strings
		return e
	}
	e.Type, e.Reason = cause.Type, cause.describe()
	return e
}

// errorCause is the error object of a response or of a bulk item.
type errorCause struct {
	Type     string      `json:"type"`
	Reason   string      `json:"reason"`
	CausedBy *errorCause `json:"caused_by"`
}

// describe returns the reason followed by the chain of causes.
func (c errorCause) describe() string {
	s := c.Reason
	for cause := c.CausedBy; cause != nil; cause = cause.CausedBy {
		s += "; caused by " + cause.Type + ": " + cause.Reason
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
