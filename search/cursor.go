package search

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// A cursor is the sort key of a page's last item, bound to the query that produced it: a cursor used
// with other text, filters or sort would silently skip or repeat results, so it is refused instead.
// Clients see an opaque string (base64url of JSON).
type cursor struct {
	Query string            `json:"q"`
	After []json.RawMessage `json:"a"`
}

// EncodeCursor returns the cursor after a result whose sort key is after, for the query with the
// given fingerprint ([ProductQuery.Fingerprint], [OrderQuery.Fingerprint]).
func EncodeCursor(fingerprint string, after ...any) (string, error) {
	c := cursor{Query: fingerprint}
	for _, v := range after {
		raw, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("encode cursor: %w", err)
		}
		c.After = append(c.After, raw)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// DecodeCursor returns the sort key in s, which must hold n values and belong to the query with the
// given fingerprint; anything else is [ErrBadCursor]. The caller unmarshals each value.
func DecodeCursor(s, fingerprint string, n int) ([]json.RawMessage, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadCursor
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.Query != fingerprint || len(c.After) != n {
		return nil, ErrBadCursor
	}
	return c.After, nil
}

// Fingerprint identifies everything about q that decides the order of its results: text, filters
// and sort, not the cursor or the page size. Call it after Validate.
func (q ProductQuery) Fingerprint() string {
	return fingerprint("products", q.Text, q.Category, optInt(q.MinPriceCents), optInt(q.MaxPriceCents),
		optBool(q.InStock), string(q.Sort))
}

// Fingerprint is as for [ProductQuery.Fingerprint].
func (q OrderQuery) Fingerprint() string {
	return fingerprint("orders", q.Text, q.Status, optTime(q.From), optTime(q.To))
}

func fingerprint(parts ...string) string {
	b, _ := json.Marshal(parts) // strings always marshal
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

func optInt(v *int64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(*v, 10)
}

func optBool(v *bool) string {
	if v == nil {
		return ""
	}
	return strconv.FormatBool(*v)
}

func optTime(v *time.Time) string {
	if v == nil {
		return ""
	}
	return v.UTC().Format(time.RFC3339Nano)
}
