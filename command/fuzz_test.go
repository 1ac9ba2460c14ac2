package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/strata-dev/strata/internal/problem"
)

// bodyTypes makes a fresh value of every request body the handlers decode.
var bodyTypes = []func() any{
	func() any { return new(createProductBody) },
	func() any { return new(renameBody) },
	func() any { return new(repriceBody) },
	func() any { return new(stockBody) },
	func() any { return new(reasonBody) },
	func() any { return new(placeOrderBody) },
	func() any { return new(shipBody) },
}

// FuzzDecodeCommand decodes arbitrary bodies into every body struct. Whatever the input, decoding must
// not panic, must refuse with an error that maps to 400, and must accept only a single JSON object.
func FuzzDecodeCommand(f *testing.F) {
	for _, seed := range []string{
		`{"sku":"MUG-1","name":"Mug","description":"d","category":"kitchen","price_cents":1250,"currency":"EUR","tags":["a","b"]}`,
		`{"sku":"MUG-1","name":"Mug","category":"kitchen","price_cents":1250,"currency":"EUR","tags":[]}`,
		`{"name":"Big mug"}`,
		`{"price_cents":1400}`,
		`{"delta":-3,"reason":"breakage"}`,
		`{"reason":"end of line"}`,
		`{"customer_id":"c","customer_name":"n","customer_email":"a@example.com","lines":[{"product_id":"0190a8f4-3f5e-7c4b-9a51-3a4f6c1d2b7e","quantity":2}],"callback_url":"https://example.com/cb"}`,
		`{"carrier":"DHL","tracking_number":"JD0001"}`,
		`{}`,
		``,
		` `,
		`null`,
		`[]`,
		`"x"`,
		`{"name":`,
		`{"name" "x"}`,
		`{"name":"x"}{"name":"y"}`,
		`{"name":"x"} x`,
		`{"name":"x","name":"y"}`,
		`{"Name":"x"}`,
		`{"name":null}`,
		`{"tags":[null]}`,
		`{"lines":[{"product_id":"p","quantity":1,"x":1}]}`,
		`{"lines":[{"PRODUCT_ID":"p"}]}`,
		`{"lines":{"product_id":"p"}}`,
		`{"lines":[[]]}`,
		`{"price_cents":"12"}`,
		`{"price_cents":1.5}`,
		`{"price_cents":1e3}`,
		`{"price_cents":99999999999999999999}`,
		`{"delta":-0}`,
		"{\"name\":\"\xff\"}",
		"{\"name\":\"\\ud800\"}",
		`{"name":"\u0000"}`,
		"\ufeff{}",
		`{"name":"x"}` + "\n",
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, newBody := range bodyTypes {
			v := newBody()
			err := decodeJSON(body, v)
			if err != nil {
				if !errors.Is(err, problem.ErrMalformed) {
					t.Fatalf("decode %T of %q: error %v does not wrap problem.ErrMalformed", v, body, err)
				}
				if p := problem.FromError(err); p.Status != 400 {
					t.Fatalf("decode %T of %q: error %v maps to %d", v, body, err, p.Status)
				}
				continue
			}
			trimmed := bytes.TrimSpace(body)
			if !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
				t.Fatalf("decode %T accepted %q, which is not one JSON object", v, body)
			}
		}
	})
}
