package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/internal/problem"
)

// Request headers the middleware fills in when the client did not send them.
const (
	HeaderRequestID     = "X-Request-ID"
	HeaderCorrelationID = "X-Correlation-ID"
)

// HTTPMetrics counts requests per route. Create one per service registry with [NewHTTPMetrics].
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// NewHTTPMetrics registers the HTTP metrics of service on reg.
func NewHTTPMetrics(reg prometheus.Registerer, service string) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_http_requests_total", Help: "HTTP requests by route, method and status.",
			ConstLabels: prometheus.Labels{"service": service},
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "strata_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			ConstLabels: prometheus.Labels{"service": service},
			Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_http_requests_in_flight", Help: "HTTP requests being served.",
			ConstLabels: prometheus.Labels{"service": service},
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

// Middleware wraps every route of a service: it assigns request and correlation ids, sheds load
// beyond maxInFlight concurrent requests (503 with Retry-After), turns panics into 500s, and writes
// one log line and one metrics sample per request.
func Middleware(log *slog.Logger, metrics *HTTPMetrics, maxInFlight int) mux.MiddlewareFunc {
	slots := make(chan struct{}, maxInFlight)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			route := "unmatched"
			if cr := mux.CurrentRoute(r); cr != nil {
				if tpl, err := cr.GetPathTemplate(); err == nil {
					route = tpl
				}
			}
			requestID := headerOrNew(r, HeaderRequestID)
			correlationID := headerOrNew(r, HeaderCorrelationID)
			w.Header().Set(HeaderRequestID, requestID)
			w.Header().Set(HeaderCorrelationID, correlationID)
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}

			select {
			case slots <- struct{}{}:
				metrics.inFlight.Inc()
				func() {
					defer func() {
						<-slots
						metrics.inFlight.Dec()
						if v := recover(); v != nil {
							if v == http.ErrAbortHandler {
								panic(v)
							}
							log.Error("handler panicked", "route", route, "request_id", requestID, "panic", fmt.Sprint(v))
							if !rec.wrote {
								problem.Write(rec, r, problem.FromError(fmt.Errorf("panic: %v", v)))
							}
						}
					}()
					next.ServeHTTP(rec, r)
				}()
			default:
				problem.Write(rec, r, problem.FromError(fmt.Errorf("more than %d requests in flight: %w", maxInFlight, problem.ErrOverloaded)))
			}

			elapsed := time.Since(start)
			metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
			metrics.duration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if rec.status >= 500 {
				level = slog.LevelError
			}
			log.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method), slog.String("route", route), slog.Int("status", rec.status),
				slog.Duration("duration", elapsed), slog.String("request_id", requestID),
				slog.String("correlation_id", correlationID))
		})
	}
}

func headerOrNew(r *http.Request, name string) string {
	v := r.Header.Get(name)
	if v == "" || len(v) > 128 {
		v = uuid.NewString()
		r.Header.Set(name, v)
	}
	return v
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Flush lets streaming handlers (SSE) flush through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Check is one readiness check: it fails when a dependency is unreachable.
type Check struct {
	Name string
	Run  func(context.Context) error
}

// HandleHealth registers GET /healthz (the process is alive), GET /readyz (every check passes within
// two seconds) and GET /metrics (Prometheus, from gatherer) on r.
func HandleHealth(r *mux.Router, gatherer prometheus.Gatherer, checks ...Check) {
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		status, results := http.StatusOK, map[string]string{}
		for _, c := range checks {
			if err := c.Run(ctx); err != nil {
				status, results[c.Name] = http.StatusServiceUnavailable, err.Error()
				continue
			}
			results[c.Name] = "ok"
		}
		WriteJSON(w, status, map[string]any{"status": http.StatusText(status), "checks": results})
	}).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)
}

// WriteJSON answers with v as JSON, not to be cached. A failed write means the client went away;
// there is nothing to add.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// HandleUnmatched answers the requests no route of r matches: 404, or 405 with the Allow header RFC
// 9110 requires, as problem+json. It wraps them in mw because mux applies r.Use only to matched
// routes: without it, these would get no request id, log line, metrics or load shedding.
func HandleUnmatched(r *mux.Router, mw mux.MiddlewareFunc) {
	r.NotFoundHandler = mw(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		problem.Write(w, req, problem.FromError(fmt.Errorf("no route %s %s: %w", req.Method, req.URL.Path, domain.ErrNotFound)))
	}))
	r.MethodNotAllowedHandler = mw(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", strings.Join(allowedMethods(r, req), ", "))
		problem.Write(w, req, problem.Problem{Type: "https://strata.dev/problems/method-not-allowed", Title: "Method not allowed",
			Status: http.StatusMethodNotAllowed, Detail: req.Method + " is not allowed on " + req.URL.Path})
	}))
}

// allowedMethods lists the methods r routes for req's path.
func allowedMethods(r *mux.Router, req *http.Request) []string {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := req.Clone(req.Context())
		probe.Method = m
		var match mux.RouteMatch
		if r.Match(probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	return allowed
}

// Handle adapts a handler that returns an error: the error becomes a problem response through the
// one mapping in internal/problem, and server faults are logged once, here.
func Handle(log *slog.Logger, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		p := problem.FromError(err)
		if p.Status >= 500 && p.Status != http.StatusServiceUnavailable {
			log.Error("request failed", "route", r.URL.Path, "request_id", r.Header.Get(HeaderRequestID), "err", err)
		}
		problem.Write(w, r, p)
	})
}
