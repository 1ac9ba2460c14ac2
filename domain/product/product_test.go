package product_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/domain/product"
	"github.com/strata-dev/strata/events"
)

const id = "p-1"

var (
	created = events.ProductCreatedV1{
		ProductID: id, SKU: "MUG-350", Name: "Mug", Description: "A mug.", Category: "Kitchen",
		PriceCents: 1490, Currency: "EUR", Tags: []string{"mug"},
	}
	discontinued = events.ProductDiscontinuedV1{ProductID: id, Reason: "end of line"}
)

// stocked adds n to the stock, from level to level+n.
func stocked(level, n int64) events.Event {
	return events.ProductStockAdjustedV1{ProductID: id, Delta: n, Reason: "delivery", Stock: level + n}
}

func reserved(orderID string, quantity, stock int64) events.Event {
	return events.ProductStockReservedV1{ProductID: id, OrderID: orderID, Quantity: quantity, Stock: stock}
}

func released(orderID string, quantity, stock int64) events.Event {
	return events.ProductStockReleasedV1{ProductID: id, OrderID: orderID, Quantity: quantity, Reason: "order cancelled", Stock: stock}
}

func evs(es ...events.Event) []events.Event { return es }

type testCase struct {
	name  string
	given []events.Event
	when  func(p *product.Product) ([]events.Event, error)
	want  []events.Event
	// wantErr is the sentinel the error must wrap; wantProblems, when set, the exact validation problems.
	wantErr      error
	wantProblems []domain.FieldProblem
}

func run(t *testing.T, tests []testCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := product.Replay(id, tt.given)
			got, err := tt.when(p)
			switch {
			case tt.wantProblems != nil:
				var ve *domain.ValidationError
				require.ErrorAs(t, err, &ve)
				require.ErrorIs(t, err, domain.ErrInvalid)
				require.Equal(t, tt.wantProblems, ve.Problems)
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
			default:
				require.NoError(t, err)
			}
			require.Equal(t, tt.want, got)
			require.Equal(t, product.Replay(id, tt.given), p, "a decision must not change state")
		})
	}
}

func problem(field, message string) []domain.FieldProblem {
	return []domain.FieldProblem{{Field: field, Message: message}}
}

func validCreate() product.Create {
	return product.Create{
		SKU: "MUG-350", Name: "Mug", Description: "A mug.", Category: "Kitchen",
		PriceCents: 1490, Currency: "EUR", Tags: []string{"mug"},
	}
}

// create returns a when-function creating validCreate changed by edit.
func create(edit func(c *product.Create)) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) {
		c := validCreate()
		edit(&c)
		return p.Create(c)
	}
}

// createdWith returns the created event changed by edit.
func createdWith(edit func(e *events.ProductCreatedV1)) []events.Event {
	e := created
	e.Tags = []string{"mug"}
	edit(&e)
	return evs(e)
}

func distinctTags(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = "tag" + strings.Repeat("x", i)
	}
	return tags
}

func TestCreate(t *testing.T) {
	run(t, []testCase{
		{name: "valid", when: create(func(*product.Create) {}), want: evs(created)},
		{
			name: "normalizes sku, currency and text",
			when: create(func(c *product.Create) {
				c.SKU, c.Currency, c.Name, c.Category, c.Description = "  mug-350\t", "eur", "  Mug ", " Kitchen ", " A mug.\n"
			}),
			want: evs(created),
		},
		{
			name: "de-duplicates tags keeping order",
			when: create(func(c *product.Create) { c.Tags = []string{"mug", "gift", " mug ", "kitchen", "gift"} }),
			want: createdWith(func(e *events.ProductCreatedV1) { e.Tags = []string{"mug", "gift", "kitchen"} }),
		},
		{
			name: "no tags become an empty list",
			when: create(func(c *product.Create) { c.Tags = nil }),
			want: createdWith(func(e *events.ProductCreatedV1) { e.Tags = []string{} }),
		},
		{
			name: "empty description",
			when: create(func(c *product.Create) { c.Description = "" }),
			want: createdWith(func(e *events.ProductCreatedV1) { e.Description = "" }),
		},
		{
			name: "multi-line description",
			when: create(func(c *product.Create) { c.Description = "Line one.\r\n\tLine two." }),
			want: createdWith(func(e *events.ProductCreatedV1) { e.Description = "Line one.\r\n\tLine two." }),
		},
		{
			name: "limits are inclusive",
			when: create(func(c *product.Create) {
				c.SKU = "9" + strings.Repeat("a", 63)
				c.Name = strings.Repeat("é", 200)
				c.Description = strings.Repeat("é", 5000)
				c.Category = strings.Repeat("é", 100)
				c.PriceCents = 1_000_000_000_00
				c.Tags = append(distinctTags(20), strings.Repeat("é", 50))[1:]
			}),
			want: createdWith(func(e *events.ProductCreatedV1) {
				e.SKU = "9" + strings.Repeat("A", 63)
				e.Name = strings.Repeat("é", 200)
				e.Description = strings.Repeat("é", 5000)
				e.Category = strings.Repeat("é", 100)
				e.PriceCents = 1_000_000_000_00
				e.Tags = append(distinctTags(20), strings.Repeat("é", 50))[1:]
			}),
		},
		{
			name: "sku allows dots and underscores",
			when: create(func(c *product.Create) { c.SKU = "a.b_c-1" }),
			want: createdWith(func(e *events.ProductCreatedV1) { e.SKU = "A.B_C-1" }),
		},
		{
			name: "twenty distinct tags after de-duplication",
			when: create(func(c *product.Create) { c.Tags = append(distinctTags(20), distinctTags(5)...) }),
			want: createdWith(func(e *events.ProductCreatedV1) { e.Tags = distinctTags(20) }),
		},
		{name: "already exists", given: evs(created), when: create(func(*product.Create) {}), wantErr: product.ErrAlreadyExists},
		{name: "already exists is a rule", given: evs(created), when: create(func(*product.Create) {}), wantErr: domain.ErrRule},
		{
			name: "already exists even if discontinued", given: evs(created, discontinued),
			when: create(func(*product.Create) {}), wantErr: product.ErrAlreadyExists,
		},

		{name: "sku empty", when: create(func(c *product.Create) { c.SKU = "" }), wantProblems: problem("sku", "is required")},
		{name: "sku blank", when: create(func(c *product.Create) { c.SKU = "  " }), wantProblems: problem("sku", "is required")},
		{
			name: "sku too long", when: create(func(c *product.Create) { c.SKU = strings.Repeat("A", 65) }),
			wantProblems: problem("sku", "must be at most 64 characters"),
		},
		{
			name: "sku with a space", when: create(func(c *product.Create) { c.SKU = "MUG 350" }),
			wantProblems: problem("sku", "must contain only letters, digits, '.', '_' and '-'"),
		},
		{
			name: "sku with a slash", when: create(func(c *product.Create) { c.SKU = "MUG/350" }),
			wantProblems: problem("sku", "must contain only letters, digits, '.', '_' and '-'"),
		},
		{
			name: "sku with a non-ASCII letter", when: create(func(c *product.Create) { c.SKU = "müg" }),
			wantProblems: problem("sku", "must contain only letters, digits, '.', '_' and '-'"),
		},
		{
			name: "sku starting with a dash", when: create(func(c *product.Create) { c.SKU = "-MUG" }),
			wantProblems: problem("sku", "must start with a letter or digit"),
		},
		{
			name: "sku starting with a dot", when: create(func(c *product.Create) { c.SKU = ".MUG" }),
			wantProblems: problem("sku", "must start with a letter or digit"),
		},
		{
			name: "sku starting with an underscore", when: create(func(c *product.Create) { c.SKU = "_MUG" }),
			wantProblems: problem("sku", "must start with a letter or digit"),
		},

		{name: "name empty", when: create(func(c *product.Create) { c.Name = "" }), wantProblems: problem("name", "is required")},
		{name: "name blank", when: create(func(c *product.Create) { c.Name = " \t " }), wantProblems: problem("name", "is required")},
		{
			name: "name too long", when: create(func(c *product.Create) { c.Name = strings.Repeat("é", 201) }),
			wantProblems: problem("name", "must be between 1 and 200 characters"),
		},
		{
			name: "name with a control character", when: create(func(c *product.Create) { c.Name = "Mug\x00" }),
			wantProblems: problem("name", "must not contain control characters"),
		},
		{
			name: "name with a line break", when: create(func(c *product.Create) { c.Name = "Big\nMug" }),
			wantProblems: problem("name", "must not contain control characters"),
		},
		{
			name: "name not UTF-8", when: create(func(c *product.Create) { c.Name = "Mug\xff" }),
			wantProblems: problem("name", "must be valid UTF-8"),
		},

		{
			name: "description too long", when: create(func(c *product.Create) { c.Description = strings.Repeat("é", 5001) }),
			wantProblems: problem("description", "must be at most 5000 characters"),
		},
		{
			name: "description with a control character", when: create(func(c *product.Create) { c.Description = "Ding\a" }),
			wantProblems: problem("description", "must not contain control characters"),
		},

		{name: "category empty", when: create(func(c *product.Create) { c.Category = "" }), wantProblems: problem("category", "is required")},
		{
			name: "category too long", when: create(func(c *product.Create) { c.Category = strings.Repeat("é", 101) }),
			wantProblems: problem("category", "must be between 1 and 100 characters"),
		},
		{
			name: "category with a control character", when: create(func(c *product.Create) { c.Category = "Kit\x1bchen" }),
			wantProblems: problem("category", "must not contain control characters"),
		},

		{
			name: "price zero", when: create(func(c *product.Create) { c.PriceCents = 0 }),
			wantProblems: problem("price_cents", "must be between 1 and 100000000000"),
		},
		{
			name: "price negative", when: create(func(c *product.Create) { c.PriceCents = -1 }),
			wantProblems: problem("price_cents", "must be between 1 and 100000000000"),
		},
		{
			name: "price too high", when: create(func(c *product.Create) { c.PriceCents = 1_000_000_000_01 }),
			wantProblems: problem("price_cents", "must be between 1 and 100000000000"),
		},

		{name: "currency empty", when: create(func(c *product.Create) { c.Currency = "" }), wantProblems: problem("currency", "must be a three-letter currency code")},
		{name: "currency too short", when: create(func(c *product.Create) { c.Currency = "EU" }), wantProblems: problem("currency", "must be a three-letter currency code")},
		{name: "currency too long", when: create(func(c *product.Create) { c.Currency = "EURO" }), wantProblems: problem("currency", "must be a three-letter currency code")},
		{name: "currency with a digit", when: create(func(c *product.Create) { c.Currency = "E1R" }), wantProblems: problem("currency", "must be a three-letter currency code")},
		{name: "currency not ASCII", when: create(func(c *product.Create) { c.Currency = "ÉUR" }), wantProblems: problem("currency", "must be a three-letter currency code")},

		{
			name: "too many tags", when: create(func(c *product.Create) { c.Tags = distinctTags(21) }),
			wantProblems: problem("tags", "must hold at most 20 distinct tags"),
		},
		{
			name: "empty tag", when: create(func(c *product.Create) { c.Tags = []string{"mug", " "} }),
			wantProblems: problem("tags[1]", "is required"),
		},
		{
			name: "tag too long", when: create(func(c *product.Create) { c.Tags = []string{strings.Repeat("é", 51)} }),
			wantProblems: problem("tags[0]", "must be between 1 and 50 characters"),
		},
		{
			name: "tag with a control character", when: create(func(c *product.Create) { c.Tags = []string{"mug", "gi\tft"} }),
			wantProblems: problem("tags[1]", "must not contain control characters"),
		},

		{
			name: "every problem at once",
			when: func(p *product.Product) ([]events.Event, error) {
				return p.Create(product.Create{SKU: "-x", Description: strings.Repeat("d", 5001), PriceCents: -3, Currency: "e", Tags: []string{""}})
			},
			wantProblems: []domain.FieldProblem{
				{Field: "sku", Message: "must start with a letter or digit"},
				{Field: "name", Message: "is required"},
				{Field: "description", Message: "must be at most 5000 characters"},
				{Field: "category", Message: "is required"},
				{Field: "price_cents", Message: "must be between 1 and 100000000000"},
				{Field: "currency", Message: "must be a three-letter currency code"},
				{Field: "tags[0]", Message: "is required"},
			},
		},
	})
}

func rename(name string) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) { return p.Rename(name) }
}

func TestRename(t *testing.T) {
	renamed := events.ProductRenamedV1{ProductID: id, Name: "Big mug"}
	run(t, []testCase{
		{name: "valid", given: evs(created), when: rename("Big mug"), want: evs(renamed)},
		{name: "trimmed", given: evs(created), when: rename("  Big mug  "), want: evs(renamed)},
		{name: "same name is a no-op", given: evs(created), when: rename("Mug")},
		{name: "same name after trimming is a no-op", given: evs(created), when: rename(" Mug ")},
		{name: "same as the last rename is a no-op", given: evs(created, renamed), when: rename("Big mug")},
		{name: "back to the first name", given: evs(created, renamed), when: rename("Mug"),
			want: evs(events.ProductRenamedV1{ProductID: id, Name: "Mug"})},
		{name: "not found", when: rename("Big mug"), wantErr: domain.ErrNotFound},
		{name: "discontinued", given: evs(created, discontinued), when: rename("Big mug"), wantErr: product.ErrDiscontinued},
		{name: "discontinued even to the same name", given: evs(created, discontinued), when: rename("Mug"), wantErr: product.ErrDiscontinued},
		{name: "discontinued is a rule", given: evs(created, discontinued), when: rename("Big mug"), wantErr: domain.ErrRule},
		{name: "empty", given: evs(created), when: rename(" "), wantProblems: problem("name", "is required")},
		{name: "too long", given: evs(created), when: rename(strings.Repeat("n", 201)), wantProblems: problem("name", "must be between 1 and 200 characters")},
		{name: "control character", given: evs(created), when: rename("Big\u0085mug"), wantProblems: problem("name", "must not contain control characters")},
	})
}

func reprice(cents int64) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) { return p.Reprice(cents) }
}

func TestReprice(t *testing.T) {
	repriced := events.ProductRepricedV1{ProductID: id, PriceCents: 1290}
	run(t, []testCase{
		{name: "valid", given: evs(created), when: reprice(1290), want: evs(repriced)},
		{name: "lowest", given: evs(created), when: reprice(1), want: evs(events.ProductRepricedV1{ProductID: id, PriceCents: 1})},
		{name: "highest", given: evs(created), when: reprice(1_000_000_000_00),
			want: evs(events.ProductRepricedV1{ProductID: id, PriceCents: 1_000_000_000_00})},
		{name: "same price is a no-op", given: evs(created), when: reprice(1490)},
		{name: "same as the last reprice is a no-op", given: evs(created, repriced), when: reprice(1290)},
		{name: "not found", when: reprice(1290), wantErr: domain.ErrNotFound},
		{name: "discontinued", given: evs(created, discontinued), when: reprice(1290), wantErr: product.ErrDiscontinued},
		{name: "zero", given: evs(created), when: reprice(0), wantProblems: problem("price_cents", "must be between 1 and 100000000000")},
		{name: "negative", given: evs(created), when: reprice(-1490), wantProblems: problem("price_cents", "must be between 1 and 100000000000")},
		{name: "too high", given: evs(created), when: reprice(1_000_000_000_01), wantProblems: problem("price_cents", "must be between 1 and 100000000000")},
	})
}

func adjust(delta int64, reason string) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) { return p.AdjustStock(delta, reason) }
}

func adjusted(delta int64, reason string, stock int64) events.Event {
	return events.ProductStockAdjustedV1{ProductID: id, Delta: delta, Reason: reason, Stock: stock}
}

func TestAdjustStock(t *testing.T) {
	const deltaProblem = "must be non-zero and between -1000000 and 1000000"
	run(t, []testCase{
		{name: "delivery", given: evs(created), when: adjust(5, "delivery"), want: evs(adjusted(5, "delivery", 5))},
		{name: "write-off", given: evs(created, stocked(0, 10)), when: adjust(-3, "broken"), want: evs(adjusted(-3, "broken", 7))},
		{name: "write off everything", given: evs(created, stocked(0, 10)), when: adjust(-10, "flood"), want: evs(adjusted(-10, "flood", 0))},
		{name: "largest delivery", given: evs(created), when: adjust(1_000_000, "delivery"), want: evs(adjusted(1_000_000, "delivery", 1_000_000))},
		{name: "largest write-off", given: evs(created, stocked(0, 1_000_000)), when: adjust(-1_000_000, "flood"),
			want: evs(adjusted(-1_000_000, "flood", 0))},
		{name: "reason trimmed", given: evs(created), when: adjust(5, " delivery "), want: evs(adjusted(5, "delivery", 5))},
		{name: "allowed when discontinued", given: evs(created, stocked(0, 10), discontinued), when: adjust(-10, "clearance"),
			want: evs(adjusted(-10, "clearance", 0))},
		{name: "not found", when: adjust(5, "delivery"), wantErr: domain.ErrNotFound},
		{name: "below zero", given: evs(created, stocked(0, 10)), when: adjust(-11, "flood"), wantErr: product.ErrInsufficientStock},
		{name: "below zero is a rule", given: evs(created), when: adjust(-1, "flood"), wantErr: domain.ErrRule},
		{name: "reserved stock cannot be written off", given: evs(created, stocked(0, 10), reserved("o-1", 4, 6)),
			when: adjust(-7, "flood"), wantErr: product.ErrInsufficientStock},
		{name: "unreserved stock can be written off", given: evs(created, stocked(0, 10), reserved("o-1", 4, 6)),
			when: adjust(-6, "flood"), want: evs(adjusted(-6, "flood", 0))},
		{name: "zero delta", given: evs(created), when: adjust(0, "nothing"), wantProblems: problem("delta", deltaProblem)},
		{name: "delta too high", given: evs(created), when: adjust(1_000_001, "delivery"), wantProblems: problem("delta", deltaProblem)},
		{name: "delta too low", given: evs(created), when: adjust(-1_000_001, "flood"), wantProblems: problem("delta", deltaProblem)},
		{name: "overflow", given: evs(created, stocked(0, math.MaxInt64-5)), when: adjust(6, "delivery"),
			wantProblems: problem("delta", "would overflow the stock level")},
		{name: "reason empty", given: evs(created), when: adjust(5, ""), wantProblems: problem("reason", "is required")},
		{name: "reason too long", given: evs(created), when: adjust(5, strings.Repeat("r", 201)),
			wantProblems: problem("reason", "must be between 1 and 200 characters")},
		{name: "reason with a control character", given: evs(created), when: adjust(5, "de\x7flivery"),
			wantProblems: problem("reason", "must not contain control characters")},
		{name: "both problems", given: evs(created), when: adjust(0, ""), wantProblems: []domain.FieldProblem{
			{Field: "delta", Message: deltaProblem}, {Field: "reason", Message: "is required"},
		}},
	})
}

func discontinue(reason string) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) { return p.Discontinue(reason) }
}

func TestDiscontinue(t *testing.T) {
	run(t, []testCase{
		{name: "valid", given: evs(created), when: discontinue("end of line"), want: evs(discontinued)},
		{name: "with stock", given: evs(created, stocked(0, 3)), when: discontinue(" end of line "), want: evs(discontinued)},
		{name: "not found", when: discontinue("end of line"), wantErr: domain.ErrNotFound},
		{name: "already discontinued", given: evs(created, discontinued), when: discontinue("again"), wantErr: product.ErrDiscontinued},
		{name: "reason empty", given: evs(created), when: discontinue(""), wantProblems: problem("reason", "is required")},
		{name: "reason too long", given: evs(created), when: discontinue(strings.Repeat("r", 201)),
			wantProblems: problem("reason", "must be between 1 and 200 characters")},
	})
}

func reserve(orderID string, quantity int64) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) { return p.ReserveStock(orderID, quantity) }
}

func TestReserveStock(t *testing.T) {
	const quantityProblem = "must be between 1 and 1000000"
	inStock := evs(created, stocked(0, 10))
	run(t, []testCase{
		{name: "valid", given: inStock, when: reserve("o-1", 4), want: evs(reserved("o-1", 4, 6))},
		{name: "everything available", given: inStock, when: reserve("o-1", 10), want: evs(reserved("o-1", 10, 0))},
		{name: "a second order", given: append(inStock, reserved("o-1", 4, 6)), when: reserve("o-2", 6), want: evs(reserved("o-2", 6, 0))},
		{name: "largest quantity", given: evs(created, stocked(0, 1_000_000)), when: reserve("o-1", 1_000_000),
			want: evs(reserved("o-1", 1_000_000, 0))},
		{name: "again after release", given: append(inStock, reserved("o-1", 4, 6), released("o-1", 4, 10)),
			when: reserve("o-1", 4), want: evs(reserved("o-1", 4, 6))},
		{name: "same order again is a no-op", given: append(inStock, reserved("o-1", 4, 6)), when: reserve("o-1", 4)},
		{name: "same order with another quantity is a no-op", given: append(inStock, reserved("o-1", 4, 6)), when: reserve("o-1", 9)},
		{name: "same order again after discontinuing is a no-op", given: append(inStock, reserved("o-1", 4, 6), discontinued),
			when: reserve("o-1", 4)},
		{name: "not found", when: reserve("o-1", 4), wantErr: domain.ErrNotFound},
		{name: "discontinued", given: append(inStock, discontinued), when: reserve("o-1", 4), wantErr: product.ErrDiscontinued},
		{name: "insufficient", given: inStock, when: reserve("o-1", 11), wantErr: product.ErrInsufficientStock},
		{name: "insufficient after another reservation", given: append(inStock, reserved("o-1", 4, 6)), when: reserve("o-2", 7),
			wantErr: product.ErrInsufficientStock},
		{name: "no stock", given: evs(created), when: reserve("o-1", 1), wantErr: product.ErrInsufficientStock},
		{name: "quantity zero", given: inStock, when: reserve("o-1", 0), wantProblems: problem("quantity", quantityProblem)},
		{name: "quantity negative", given: inStock, when: reserve("o-1", -1), wantProblems: problem("quantity", quantityProblem)},
		{name: "quantity too high", given: inStock, when: reserve("o-1", 1_000_001), wantProblems: problem("quantity", quantityProblem)},
		{name: "order id empty", given: inStock, when: reserve("", 1), wantProblems: problem("order_id", "is required")},
		{name: "order id too long", given: inStock, when: reserve(strings.Repeat("o", 101), 1),
			wantProblems: problem("order_id", "must be between 1 and 100 characters")},
	})
}

func release(orderID, reason string) func(p *product.Product) ([]events.Event, error) {
	return func(p *product.Product) ([]events.Event, error) { return p.ReleaseStock(orderID, reason) }
}

func TestReleaseStock(t *testing.T) {
	held := evs(created, stocked(0, 10), reserved("o-1", 4, 6))
	run(t, []testCase{
		{name: "valid", given: held, when: release("o-1", "order cancelled"), want: evs(released("o-1", 4, 10))},
		{name: "leaves other reservations", given: append(held, reserved("o-2", 5, 1)), when: release("o-2", "order cancelled"),
			want: evs(released("o-2", 5, 6))},
		{name: "counts stock adjusted since", given: append(held, adjusted(-6, "flood", 0)), when: release("o-1", "order cancelled"),
			want: evs(released("o-1", 4, 4))},
		{name: "allowed when discontinued", given: append(held, discontinued), when: release("o-1", "order cancelled"),
			want: evs(released("o-1", 4, 10))},
		{name: "no reservation is a no-op", given: held, when: release("o-2", "order cancelled")},
		{name: "already released is a no-op", given: append(held, released("o-1", 4, 10)), when: release("o-1", "order cancelled")},
		{name: "not found", when: release("o-1", "order cancelled"), wantErr: domain.ErrNotFound},
		{name: "order id empty", given: held, when: release("", "order cancelled"), wantProblems: problem("order_id", "is required")},
		{name: "reason empty", given: held, when: release("o-1", ""), wantProblems: problem("reason", "is required")},
		{name: "reason too long", given: held, when: release("o-1", strings.Repeat("r", 201)),
			wantProblems: problem("reason", "must be between 1 and 200 characters")},
	})
}

func TestErrorsWrapDomainKinds(t *testing.T) {
	for _, err := range []error{product.ErrAlreadyExists, product.ErrDiscontinued, product.ErrInsufficientStock} {
		require.ErrorIs(t, err, domain.ErrRule)
		require.NotErrorIs(t, err, domain.ErrInvalid)
	}
	_, err := product.New(id).Rename("x")
	require.ErrorIs(t, err, domain.ErrNotFound)
	require.False(t, errors.Is(err, domain.ErrRule))
}

func TestNormalizeSKU(t *testing.T) {
	require.Equal(t, "MUG-350", product.NormalizeSKU("  mug-350\n"))
	require.Equal(t, "", product.NormalizeSKU(" "))
}

// TestReplay decides a product's life command by command, applying each decision, and checks that the
// state reached and the state replayed from the recorded history agree.
func TestReplay(t *testing.T) {
	p := product.New(id)
	var history []events.Event
	decide := func(es []events.Event, err error) {
		t.Helper()
		require.NoError(t, err)
		for _, e := range es {
			p.Apply(e)
		}
		history = append(history, es...)
	}
	decide(p.Create(product.Create{
		SKU: "mug-350", Name: "Mug", Category: "Kitchen", PriceCents: 1490, Currency: "eur", Tags: []string{"mug", "gift", "mug"},
	}))
	decide(p.Rename("Big mug"))
	decide(p.Reprice(1290))
	decide(p.AdjustStock(20, "delivery"))
	decide(p.ReserveStock("o-1", 5))
	decide(p.ReserveStock("o-2", 3))
	decide(p.ReserveStock("o-1", 5))
	decide(p.ReleaseStock("o-2", "order cancelled"))
	decide(p.AdjustStock(-2, "broken"))
	decide(p.Discontinue("end of line"))
	require.Len(t, history, 9)

	// An order event in the same history is ignored.
	history = append(history, events.OrderConfirmedV1{OrderID: "o-1"})
	replayed := product.Replay(id, history)
	require.Equal(t, p, replayed)

	require.Equal(t, id, replayed.ID())
	require.True(t, replayed.Exists())
	require.Equal(t, "MUG-350", replayed.SKU())
	require.Equal(t, "Big mug", replayed.Name())
	require.Equal(t, "", replayed.Description())
	require.Equal(t, "Kitchen", replayed.Category())
	require.Equal(t, int64(1290), replayed.PriceCents())
	require.Equal(t, "EUR", replayed.Currency())
	require.Equal(t, []string{"mug", "gift"}, replayed.Tags())
	require.Equal(t, int64(13), replayed.Stock())
	require.True(t, replayed.Discontinued())
	require.Equal(t, int64(5), replayed.Reserved("o-1"))
	require.Equal(t, int64(0), replayed.Reserved("o-2"))

	tags := replayed.Tags()
	tags[0] = "changed"
	require.Equal(t, []string{"mug", "gift"}, replayed.Tags(), "Tags must return a copy")
}

func TestNewDoesNotExist(t *testing.T) {
	p := product.New(id)
	require.Equal(t, id, p.ID())
	require.False(t, p.Exists())
	require.False(t, p.Discontinued())
	require.Zero(t, p.Stock())
}

// The command service caches states and applies new events to clones: a clone must share nothing.
func TestCloneSharesNothing(t *testing.T) {
	p := product.Replay(id, evs(created, stocked(0, 10), reserved("o-1", 2, 8)))
	c := p.Clone()
	c.Apply(reserved("o-2", 3, 5))
	c.Apply(released("o-1", 2, 7))
	c.Apply(events.ProductRenamedV1{ProductID: id, Name: "Cup"})

	require.Equal(t, product.Replay(id, evs(created, stocked(0, 10), reserved("o-1", 2, 8))), p)
	require.EqualValues(t, 2, p.Reserved("o-1"))
	require.Zero(t, p.Reserved("o-2"))
	require.Equal(t, "Mug", p.Name())
	require.EqualValues(t, 3, c.Reserved("o-2"))
	require.Zero(t, c.Reserved("o-1"))
}
