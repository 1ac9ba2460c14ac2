package command

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/problem"
)

// HeaderIdempotencyKey names the request header that makes a command safe to retry.
const HeaderIdempotencyKey = "Idempotency-Key"

// Idempotency keeps the responses of commands sent with an Idempotency-Key in the idempotency_keys
// table (migrations/command), so that a retry, even to another process or after a restart, gets the
// first response and appends nothing.
//
// The stored response is the fast path. Correctness does not rest on it alone: a command whose
// response was never stored (a crash right after the append) finds its own events by key when it is
// retried, and its event ids are derived from the key, so the store refuses to append them twice.
type Idempotency struct {
	pool *pgxpool.Pool
}

// NewIdempotency returns idempotency records kept in the database behind pool.
func NewIdempotency(pool *pgxpool.Pool) *Idempotency { return &Idempotency{pool: pool} }

type storedResponse struct {
	hash    []byte
	status  int // statusPending while the first request with the key is in flight
	headers map[string]string
	body    []byte
}

// statusPending marks the record of a key whose first request has not finished. It holds the request's
// hash from the start, so that another request reusing the key while the first is in flight is
// refused instead of running beside it.
const statusPending = 0

func (s *Idempotency) get(ctx context.Context, key string) (storedResponse, bool, error) {
	var r storedResponse
	err := s.pool.QueryRow(ctx, `SELECT request_hash, status, headers, body FROM idempotency_keys WHERE key = $1`, key).
		Scan(&r.hash, &r.status, &r.headers, &r.body)
	if errors.Is(err, pgx.ErrNoRows) {
		return storedResponse{}, false, nil
	}
	if err != nil {
		return storedResponse{}, false, fmt.Errorf("look up idempotency key: %w", err)
	}
	return r, true, nil
}

// reserve records key as pending for the request hashed to hash, unless the key is recorded already,
// in which case it returns that record.
func (s *Idempotency) reserve(ctx context.Context, key string, hash []byte) (storedResponse, bool, error) {
	// The record can vanish between the insert and the read when a request with the key fails; a
	// second round settles it, and a third is only needed under a storm of failing retries.
	for range 3 {
		tag, err := s.pool.Exec(ctx,
			`INSERT INTO idempotency_keys (key, request_hash, status, headers, body) VALUES ($1, $2, $3, '{}', '')
			 ON CONFLICT (key) DO NOTHING`, key, hash, statusPending)
		if err != nil {
			return storedResponse{}, false, fmt.Errorf("reserve idempotency key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return storedResponse{}, false, nil
		}
		r, found, err := s.get(ctx, key)
		if err != nil || found {
			return r, found, err
		}
	}
	return storedResponse{}, false, fmt.Errorf("idempotency key %q is being used and released concurrently: %w", key, eventstore.ErrConflict)
}

// complete stores the response to the request that reserved key. Of concurrent requests with one key
// and one body, each decided the same events (their ids derive from the key) and the store appended
// them once: whichever response is stored first is the right one to keep.
func (s *Idempotency) complete(ctx context.Context, key string, r storedResponse) error {
	headers, err := json.Marshal(r.headers)
	if err != nil {
		return fmt.Errorf("store idempotency key: %w", err)
	}
	// An upsert, because a failing twin may have dropped the pending record meanwhile.
	_, err = s.pool.Exec(ctx,
		`INSERT INTO idempotency_keys (key, request_hash, status, headers, body) VALUES ($1, $2, $3, $4, $5)
		 ON CONFLICT (key) DO UPDATE SET status = excluded.status, headers = excluded.headers, body = excluded.body
		 WHERE idempotency_keys.status = $6 AND idempotency_keys.request_hash = excluded.request_hash`,
		key, r.hash, r.status, headers, r.body, statusPending)
	if err != nil {
		return fmt.Errorf("store idempotency key: %w", err)
	}
	return nil
}

// abandon drops the pending record of a request that failed, so that the client may fix the request
// and retry with the same key.
func (s *Idempotency) abandon(ctx context.Context, key string, hash []byte) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE key = $1 AND status = $2 AND request_hash = $3`, key, statusPending, hash)
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// Purge deletes records older than maxAge and returns how many it deleted. Clients must not retry
// with a key older than that.
func (s *Idempotency) Purge(ctx context.Context, maxAge time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval`, maxAge.String())
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// replayedHeaders are the response headers a replay repeats.
var replayedHeaders = []string{"Content-Type", "Cache-Control", "Location", "ETag", HeaderConsistencyToken}

// middleware replays stored responses and stores successful new ones. Only successes are stored: a
// failed command appended nothing, so running it again is safe, and a client may fix its request
// and retry with the same key.
func (s *Idempotency) middleware(maxBody int64, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(HeaderIdempotencyKey)
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if err := checkKey(key); err != nil {
			problem.Write(w, r, problem.FromError(err))
			return
		}
		body, err := readBody(w, r, maxBody)
		if err != nil {
			problem.Write(w, r, problem.FromError(err))
			return
		}
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00", r.Method, r.URL.Path)
		h.Write(body)
		hash := h.Sum(nil)

		stored, found, err := s.reserve(r.Context(), key, hash)
		if err != nil {
			problem.Write(w, r, problem.FromError(err))
			return
		}
		if found && !bytes.Equal(stored.hash, hash) {
			problem.Write(w, r, problem.FromError(fmt.Errorf("key %q was first used for another request: %w", key, problem.ErrKeyReused)))
			return
		}
		if found && stored.status != statusPending {
			for name, v := range stored.headers {
				w.Header().Set(name, v)
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(stored.status)
			_, _ = w.Write(stored.body)
			return
		}
		// Either this request reserved the key, or a twin with the same body is in flight or died
		// before finishing. Running it is safe either way: the service answers a command whose events
		// are stored already with those events, and derives event ids from the key, so the store
		// appends them once.

		// The client may have gone; recording the outcome must not depend on it.
		bg, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		rec := &responseCapture{ResponseWriter: w, status: http.StatusOK}
		succeeded := false
		defer func() { // deferred so that a panicking handler releases the key too
			if succeeded {
				return
			}
			if err := s.abandon(bg, key, hash); err != nil {
				log.Warn("idempotency key not released; retries with another body are refused until it is purged", "err", err)
			}
		}()

		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(rec, r)
		if rec.status < 200 || rec.status > 299 {
			return
		}
		succeeded = true
		resp := storedResponse{hash: hash, status: rec.status, headers: map[string]string{}, body: rec.body.Bytes()}
		for _, name := range replayedHeaders {
			if v := rec.Header().Get(name); v != "" {
				resp.headers[name] = v
			}
		}
		// The client already has its answer; failing to store it only costs the fast path.
		if err := s.complete(bg, key, resp); err != nil {
			log.Warn("idempotency response not stored; a retry will be answered from the event store", "err", err)
		}
	})
}

func checkKey(key string) error {
	if len(key) > 255 {
		return fmt.Errorf("%s is longer than 255 characters: %w", HeaderIdempotencyKey, problem.ErrMalformed)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return fmt.Errorf("%s must be printable ASCII without spaces: %w", HeaderIdempotencyKey, problem.ErrMalformed)
		}
	}
	return nil
}

type responseCapture struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	wrote  bool
}

func (c *responseCapture) WriteHeader(code int) {
	if !c.wrote {
		c.status, c.wrote = code, true
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *responseCapture) Write(b []byte) (int, error) {
	c.wrote = true
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}
