// Package problem writes RFC 9457 problem details and holds the one mapping from errors to HTTP
// statuses that every strata service uses. Handlers return errors; they never choose a status for a
// failure themselves.
package problem

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/consistency"
	"github.com/strata-dev/strata/search"
)

// Errors of the HTTP edge that are not domain or store errors. Wrap them with the detail a client
// needs: the detail becomes the problem's "detail".
var (
	// ErrMalformed: the request cannot be decoded: bad JSON, unknown fields, wrong types (400).
	ErrMalformed = errors.New("malformed request")
	// ErrUnsupportedMediaType: the body is not JSON (415).
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrTooLarge: the body is over the limit (413).
	ErrTooLarge = errors.New("request body too large")
	// ErrPreconditionFailed: If-Match names another version than the current one (412).
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrKeyReused: an Idempotency-Key was sent again with another request (422).
	ErrKeyReused = errors.New("idempotency key reused with a different request")
	// ErrOverloaded: the service sheds load; retry after a moment (503 with Retry-After).
	ErrOverloaded = errors.New("overloaded")
	// ErrNotYetConsistent: a read model has not yet applied what a consistency token names (503 with
	// Retry-After).
	ErrNotYetConsistent = errors.New("not yet consistent")
)

// ContentType is the media type of problem details.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Errors lists every invalid field, for validation problems.
	Errors []domain.FieldProblem `json:"errors,omitempty"`
	// CurrentVersion is the resource's version, for version conflicts.
	CurrentVersion *uint64 `json:"current_version,omitempty"`

	// RetryAfter, in seconds, becomes the Retry-After header when positive.
	RetryAfter int `json:"-"`
}

const typeBase = "https://strata.dev/problems/"

// FromError maps err to a problem. It is the only place that decides the status of a failure.
// Unknown errors become a 500 whose detail does not leak internals.
func FromError(err error) Problem {
	var (
		validation    *domain.ValidationError
		conflict      *eventstore.ConflictError
		invalidSearch *search.InvalidError
	)
	switch {
	case errors.As(err, &validation):
		return Problem{Type: typeBase + "validation", Title: "Invalid input", Status: http.StatusUnprocessableEntity,
			Detail: err.Error(), Errors: validation.Problems}
	case errors.Is(err, domain.ErrInvalid):
		return Problem{Type: typeBase + "validation", Title: "Invalid input", Status: http.StatusUnprocessableEntity, Detail: err.Error()}
	case errors.Is(err, domain.ErrRule):
		return Problem{Type: typeBase + "rule-violated", Title: "Refused by a business rule", Status: http.StatusUnprocessableEntity, Detail: err.Error()}
	case errors.Is(err, domain.ErrNotFound):
		return Problem{Type: typeBase + "not-found", Title: "Not found", Status: http.StatusNotFound, Detail: err.Error()}
	case errors.Is(err, ErrPreconditionFailed):
		p := Problem{Type: typeBase + "precondition-failed", Title: "Version mismatch", Status: http.StatusPreconditionFailed, Detail: err.Error()}
		if errors.As(err, &conflict) {
			p.CurrentVersion = &conflict.Actual
		}
		return p
	case errors.As(err, &conflict):
		return Problem{Type: typeBase + "conflict", Title: "Concurrent modification", Status: http.StatusConflict,
			Detail: err.Error(), CurrentVersion: &conflict.Actual}
	case errors.Is(err, eventstore.ErrConflict):
		return Problem{Type: typeBase + "conflict", Title: "Concurrent modification", Status: http.StatusConflict, Detail: err.Error()}
	case errors.Is(err, ErrMalformed):
		return Problem{Type: typeBase + "malformed-request", Title: "Malformed request", Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.As(err, &invalidSearch):
		return Problem{Type: typeBase + "invalid-search", Title: "Invalid search", Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.Is(err, search.ErrBadCursor):
		return Problem{Type: typeBase + "malformed-request", Title: "Malformed request", Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.Is(err, search.ErrUnavailable):
		return Problem{Type: typeBase + "search-unavailable", Title: "Search unavailable", Status: http.StatusServiceUnavailable, Detail: err.Error(), RetryAfter: 1}
	case errors.Is(err, consistency.ErrMalformed):
		return Problem{Type: typeBase + "malformed-consistency-token", Title: "Malformed consistency token", Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.Is(err, ErrUnsupportedMediaType):
		return Problem{Type: typeBase + "unsupported-media-type", Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType, Detail: err.Error()}
	case errors.Is(err, ErrTooLarge):
		return Problem{Type: typeBase + "too-large", Title: "Request body too large", Status: http.StatusRequestEntityTooLarge, Detail: err.Error()}
	case errors.Is(err, ErrKeyReused):
		return Problem{Type: typeBase + "idempotency-key-reused", Title: "Idempotency key reused", Status: http.StatusUnprocessableEntity, Detail: err.Error()}
	case errors.Is(err, ErrOverloaded):
		return Problem{Type: typeBase + "overloaded", Title: "Service overloaded", Status: http.StatusServiceUnavailable, Detail: err.Error(), RetryAfter: 1}
	case errors.Is(err, ErrNotYetConsistent):
		return Problem{Type: typeBase + "not-yet-consistent", Title: "Not yet consistent", Status: http.StatusServiceUnavailable, Detail: err.Error(), RetryAfter: 1}
	default:
		return Problem{Type: typeBase + "internal", Title: "Internal error", Status: http.StatusInternalServerError,
			Detail: "the server failed to handle the request; it has been logged"}
	}
}

// Write writes p as the response, with its Retry-After header if it has one.
func Write(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.Path
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p) // the client went away if this fails; nothing to add
}
