// Package consistency implements the tokens that let a client read its own writes. A token names
// streams and the version each had reached when the token was issued; a read model that has applied
// every named version reflects the write. Tokens are opaque to clients: base64url of a small JSON
// document, versioned so the format can evolve.
package consistency

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
)

// Header is the HTTP header that carries a token: commands answer with it, reads carry it and answer
// with what they reflect.
const Header = "Consistency-Token"

// ErrMalformed is returned by [Parse] for anything that is not a token this package wrote.
var ErrMalformed = errors.New("malformed consistency token")

// MaxStreams bounds how many streams a token may name, so that a hostile token cannot make a reader
// wait on thousands of streams.
const MaxStreams = 64

// Token maps stream names to versions. The zero value is an empty token that every read model
// satisfies.
type Token struct {
	streams map[string]uint64
}

// For returns a token naming one stream at version.
func For(stream string, version uint64) Token {
	return Token{streams: map[string]uint64{stream: version}}
}

// Streams returns a copy of the named streams and versions.
func (t Token) Streams() map[string]uint64 { return maps.Clone(t.streams) }

// IsZero reports whether t names no stream.
func (t Token) IsZero() bool { return len(t.streams) == 0 }

// Merge returns a token naming every stream of t and u, each at the higher of its two versions, so
// that a client can chain reads and writes. Beyond [MaxStreams] streams it keeps those of u.
func (t Token) Merge(u Token) Token {
	out := make(map[string]uint64, len(t.streams)+len(u.streams))
	maps.Copy(out, u.streams)
	for s, v := range t.streams {
		if len(out) >= MaxStreams {
			break
		}
		if v > out[s] {
			out[s] = v
		}
	}
	return Token{streams: out}
}

type wire struct {
	V int               `json:"v"`
	S map[string]uint64 `json:"s"`
}

// String encodes t. The empty token encodes as "".
func (t Token) String() string {
	if t.IsZero() {
		return ""
	}
	b, _ := json.Marshal(wire{V: 1, S: t.streams}) // a map of strings to integers always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

// Parse decodes a token written by [Token.String]. It fails with [ErrMalformed] on anything else.
func Parse(s string) (Token, error) {
	if s == "" {
		return Token{}, nil
	}
	if len(s) > 8192 {
		return Token{}, fmt.Errorf("%w: too long", ErrMalformed)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if w.V != 1 {
		return Token{}, fmt.Errorf("%w: unknown format version %d", ErrMalformed, w.V)
	}
	if len(w.S) > MaxStreams {
		return Token{}, fmt.Errorf("%w: names %d streams, at most %d", ErrMalformed, len(w.S), MaxStreams)
	}
	for stream, v := range w.S {
		if stream == "" || v == 0 {
			return Token{}, fmt.Errorf("%w: empty stream or zero version", ErrMalformed)
		}
	}
	return Token{streams: w.S}, nil
}
