package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/domain/product"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/internal/problem"
)

// HeaderConsistencyToken carries the token naming what a command wrote; the query service waits for
// it before answering.
const HeaderConsistencyToken = consistency.Header

// HandlerOptions configure [NewHandler].
type HandlerOptions struct {
	// MaxBodyBytes limits request bodies (413 beyond). Default 1 MiB.
	MaxBodyBytes int64
	// MaxInFlight sheds requests beyond this many at once (503). Default 512.
	MaxInFlight int
	Logger      *slog.Logger
	// Registry serves /metrics and receives the HTTP metrics. Default: a new registry.
	Registry *prometheus.Registry
	// Ready are the readiness checks behind /readyz.
	Ready []platform.Check
}

type api struct {
	svc     *Service
	maxBody int64
	log     *slog.Logger
}

// NewHandler returns the command API of DESIGN section 4, with /openapi.json, /healthz, /readyz and
// /metrics.
func NewHandler(svc *Service, idem *Idempotency, opts HandlerOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 512
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	a := &api{svc: svc, maxBody: opts.MaxBodyBytes, log: opts.Logger}

	r := mux.NewRouter()
	middleware := platform.Middleware(opts.Logger, platform.NewHTTPMetrics(opts.Registry, "command"), opts.MaxInFlight)
	r.Use(middleware)
	platform.HandleHealth(r, opts.Registry, opts.Ready...)
	r.HandleFunc("/openapi.json", serveOpenAPI).Methods(http.MethodGet)

	// Full paths on the root router, not a /v1 subrouter: mux 1.8.1 forgets a method mismatch in a
	// subrouter when a later route of it shares the prefix, and answers 404 instead of 405.
	route := func(path string, h func(http.ResponseWriter, *http.Request) error) {
		r.Handle(path, idem.middleware(opts.MaxBodyBytes, opts.Logger, platform.Handle(a.log, h))).Methods(http.MethodPost)
	}
	route("/v1/products", a.createProduct)
	route("/v1/products/{id}/rename", a.renameProduct)
	route("/v1/products/{id}/reprice", a.repriceProduct)
	route("/v1/products/{id}/stock", a.adjustStock)
	route("/v1/products/{id}/discontinue", a.discontinueProduct)
	route("/v1/orders", a.placeOrder)
	route("/v1/orders/{id}/cancel", a.cancelOrder)
	route("/v1/orders/{id}/ship", a.shipOrder)

	platform.HandleUnmatched(r, middleware)
	return r
}

// request collects what every command carries from the HTTP request.
func (a *api) request(r *http.Request) (Request, error) {
	req := Request{Metadata: events.Metadata{
		CorrelationID:  r.Header.Get(platform.HeaderCorrelationID),
		CausationID:    r.Header.Get(platform.HeaderRequestID),
		IdempotencyKey: r.Header.Get(HeaderIdempotencyKey),
	}}
	if v := r.Header.Get("If-Match"); v != "" {
		n, err := parseETag(v)
		if err != nil {
			return Request{}, err
		}
		req.IfMatch = &n
	}
	return req, nil
}

// parseETag reads an If-Match value of the form "<version>", as sent in ETag.
func parseETag(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, fmt.Errorf("If-Match %q: want a quoted version such as \"3\": %w", v, problem.ErrMalformed)
	}
	n, err := strconv.ParseUint(s[1:len(s)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("If-Match %q: want a quoted version such as \"3\": %w", v, problem.ErrMalformed)
	}
	return n, nil
}

// pathID returns the {id} of the route in canonical form. Ids are UUIDs; anything else names nothing
// that exists. uuid.Parse also reads braced, URN and hyphenless spellings: each must name the same
// stream as the canonical one, not an empty stream of its own.
func pathID(r *http.Request, kind string) (string, error) {
	id := mux.Vars(r)["id"]
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", kind, id, domain.ErrNotFound)
	}
	return u.String(), nil
}

// respond writes a command's success: id and version in the body, ETag and Consistency-Token headers.
// It returns nothing: the command is done, and a failed write only means the client went away,
// which is no reason to log a failure or attempt a problem response after the success.
func (a *api) respond(w http.ResponseWriter, status int, res Result, location string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("ETag", strconv.Quote(strconv.FormatUint(res.Version, 10)))
	tok := consistency.For(res.Stream, res.Version).String()
	if res.Version == 0 {
		tok = ""
	}
	h.Set(HeaderConsistencyToken, tok)
	if location != "" {
		h.Set("Location", location)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		ID               string `json:"id"`
		Version          uint64 `json:"version"`
		ConsistencyToken string `json:"consistency_token,omitempty"`
	}{res.ID, res.Version, tok})
}

// readBody reads the whole body, failing with ErrTooLarge past limit. It is idempotent: the
// idempotency middleware reads the body first and puts back a buffered copy.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("body of %d bytes, limit %d: %w", r.ContentLength, limit, problem.ErrTooLarge)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("body over %d bytes: %w", limit, problem.ErrTooLarge)
	}
	if err != nil {
		return nil, fmt.Errorf("read body: %w", problem.ErrMalformed)
	}
	return b, nil
}

// decode reads a JSON body into v strictly: JSON media type, within the size limit, no unknown
// fields, no trailing data, every type exact.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return fmt.Errorf("Content-Type %q: want application/json: %w", ct, problem.ErrUnsupportedMediaType)
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	return decodeJSON(body, v)
}

// decodeJSON is decode without the HTTP: the part worth fuzzing. Every error it returns wraps
// [problem.ErrMalformed].
func decodeJSON(body []byte, v any) error {
	// encoding/json would replace invalid bytes with U+FFFD, silently altering what is stored.
	if !utf8.Valid(body) {
		return fmt.Errorf("body is not valid UTF-8: %w", problem.ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", describeJSONError(err), problem.ErrMalformed)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("unexpected data after the JSON object: %w", problem.ErrMalformed)
	}
	if err := checkExact(body, reflect.TypeOf(v).Elem()); err != nil {
		return fmt.Errorf("%v: %w", err, problem.ErrMalformed)
	}
	return nil
}

// checkExact holds a body that encoding/json accepted to the documented schema, which is stricter:
// encoding/json matches field names case-insensitively, lets the last of repeated names win, and
// reads null as the zero value, all of which would let a client or an intermediary see a different
// request than the one decided.
func checkExact(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return walkExact(dec, t, "")
}

// walkExact checks the next value of dec against t. dec holds a document that decoded into t, so
// its syntax and scalar types are already right and the depth is bounded by t's.
func walkExact(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if tok == nil {
		if path == "" {
			return errors.New("want a JSON object, got null")
		}
		return fmt.Errorf("field %q: want %s, got null", path, jsonKind(t.Kind().String()))
	}
	switch t.Kind() {
	case reflect.Struct:
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return fmt.Errorf("invalid JSON: %w", err)
			}
			name, _ := tok.(string)
			field := name
			if path != "" {
				field = path + "." + name
			}
			f, ok := fieldByJSONName(t, name)
			if !ok {
				return fmt.Errorf("unknown field %q", field)
			}
			if seen[name] {
				return fmt.Errorf("field %q appears twice", field)
			}
			seen[name] = true
			if err := walkExact(dec, f.Type, field); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := 0; dec.More(); i++ {
			if err := walkExact(dec, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	default:
		return nil // a scalar, already type-checked
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return fmt.Errorf("invalid JSON: %w", err)
	}
	return nil
}

// fieldByJSONName finds the field of struct type t whose JSON name is exactly name.
func fieldByJSONName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name && tag != "" && tag != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func describeJSONError(err error) string {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return "empty body: want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("want a JSON object, got %s", typ.Value)
		}
		return fmt.Sprintf("field %q: want %s, got %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	default:
		return "invalid JSON"
	}
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case goKind == "string":
		return "a string"
	case goKind == "slice":
		return "an array"
	case goKind == "struct", goKind == "map":
		return "an object"
	default:
		return goKind
	}
}

// Request bodies. Field names are the API's; see /openapi.json.
type (
	createProductBody struct {
		SKU         string   `json:"sku"`
		Name        string   `json:"name"`
		Description string   `json:"description"`
		Category    string   `json:"category"`
		PriceCents  int64    `json:"price_cents"`
		Currency    string   `json:"currency"`
		Tags        []string `json:"tags"`
	}
	renameBody struct {
		Name string `json:"name"`
	}
	repriceBody struct {
		PriceCents int64 `json:"price_cents"`
	}
	stockBody struct {
		Delta  int64  `json:"delta"`
		Reason string `json:"reason"`
	}
	reasonBody struct {
		Reason string `json:"reason"`
	}
	placeOrderBody struct {
		CustomerID    string `json:"customer_id"`
		CustomerName  string `json:"customer_name"`
		CustomerEmail string `json:"customer_email"`
		Lines         []struct {
			ProductID string `json:"product_id"`
			Quantity  int64  `json:"quantity"`
		} `json:"lines"`
		CallbackURL string `json:"callback_url"`
	}
	shipBody struct {
		Carrier        string `json:"carrier"`
		TrackingNumber string `json:"tracking_number"`
	}
)

func (a *api) createProduct(w http.ResponseWriter, r *http.Request) error {
	var b createProductBody
	if err := decode(w, r, a.maxBody, &b); err != nil {
		return err
	}
	req, err := a.request(r)
	if err != nil {
		return err
	}
	res, err := a.svc.CreateProduct(r.Context(), product.Create{
		SKU: b.SKU, Name: b.Name, Description: b.Description, Category: b.Category,
		PriceCents: b.PriceCents, Currency: b.Currency, Tags: b.Tags,
	}, req)
	if err != nil {
		return err
	}
	a.respond(w, http.StatusCreated, res, "/v1/products/"+res.ID)
	return nil
}

// onStream decodes body into v, then runs the command on the aggregate of kind named by the path.
func (a *api) onStream(w http.ResponseWriter, r *http.Request, kind string, v any, run func(id string, req Request) (Result, error)) error {
	if err := decode(w, r, a.maxBody, v); err != nil {
		return err
	}
	id, err := pathID(r, kind)
	if err != nil {
		return err
	}
	req, err := a.request(r)
	if err != nil {
		return err
	}
	res, err := run(id, req)
	if err != nil {
		return err
	}
	a.respond(w, http.StatusOK, res, "")
	return nil
}

func (a *api) renameProduct(w http.ResponseWriter, r *http.Request) error {
	var b renameBody
	return a.onStream(w, r, "product", &b, func(id string, req Request) (Result, error) {
		return a.svc.RenameProduct(r.Context(), id, b.Name, req)
	})
}

func (a *api) repriceProduct(w http.ResponseWriter, r *http.Request) error {
	var b repriceBody
	return a.onStream(w, r, "product", &b, func(id string, req Request) (Result, error) {
		return a.svc.RepriceProduct(r.Context(), id, b.PriceCents, req)
	})
}

func (a *api) adjustStock(w http.ResponseWriter, r *http.Request) error {
	var b stockBody
	return a.onStream(w, r, "product", &b, func(id string, req Request) (Result, error) {
		return a.svc.AdjustStock(r.Context(), id, b.Delta, b.Reason, req)
	})
}

func (a *api) discontinueProduct(w http.ResponseWriter, r *http.Request) error {
	var b reasonBody
	return a.onStream(w, r, "product", &b, func(id string, req Request) (Result, error) {
		return a.svc.DiscontinueProduct(r.Context(), id, b.Reason, req)
	})
}

func (a *api) placeOrder(w http.ResponseWriter, r *http.Request) error {
	var b placeOrderBody
	if err := decode(w, r, a.maxBody, &b); err != nil {
		return err
	}
	req, err := a.request(r)
	if err != nil {
		return err
	}
	po := PlaceOrder{CustomerID: b.CustomerID, CustomerName: b.CustomerName, CustomerEmail: b.CustomerEmail, CallbackURL: b.CallbackURL}
	for _, l := range b.Lines {
		po.Lines = append(po.Lines, OrderLine{ProductID: l.ProductID, Quantity: l.Quantity})
	}
	res, err := a.svc.PlaceOrder(r.Context(), po, req)
	if err != nil {
		return err
	}
	a.respond(w, http.StatusAccepted, res, "/v1/orders/"+res.ID)
	return nil
}

func (a *api) cancelOrder(w http.ResponseWriter, r *http.Request) error {
	var b reasonBody
	return a.onStream(w, r, "order", &b, func(id string, req Request) (Result, error) {
		return a.svc.CancelOrder(r.Context(), id, b.Reason, req)
	})
}

func (a *api) shipOrder(w http.ResponseWriter, r *http.Request) error {
	var b shipBody
	return a.onStream(w, r, "order", &b, func(id string, req Request) (Result, error) {
		return a.svc.ShipOrder(r.Context(), id, b.Carrier, b.TrackingNumber, req)
	})
}
