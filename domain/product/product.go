// Package product holds the Product aggregate: a catalogue entry with a price and the stock available
// to sell, part of which may be reserved for orders being fulfilled. It performs no I/O.
//
// Decisions (Create, Rename, …) return the events that record them and change nothing; [Product.Apply]
// changes state from events only, so the same code rebuilds a product from its stream.
package product

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/domain/internal/check"
	"github.com/strata-dev/strata/events"
)

// ErrAlreadyExists is returned by [Product.Create] for a product that was already created. It wraps
// [domain.ErrRule].
var ErrAlreadyExists = fmt.Errorf("product: already exists: %w", domain.ErrRule)

// ErrDiscontinued is returned when a command would sell, reprice or rename a discontinued product. It
// wraps [domain.ErrRule].
var ErrDiscontinued = fmt.Errorf("product: discontinued: %w", domain.ErrRule)

// ErrInsufficientStock is returned when a stock adjustment or reservation would take available stock
// below zero. It wraps [domain.ErrRule].
var ErrInsufficientStock = fmt.Errorf("product: insufficient stock: %w", domain.ErrRule)

// Limits on a product's input. They bound what projections and search indexes must store.
const (
	maxSKULen         = 64
	maxNameLen        = 200
	maxDescriptionLen = 5000
	maxCategoryLen    = 100
	maxTags           = 20
	maxTagLen         = 50
	maxReasonLen      = 200
	maxOrderIDLen     = 100
	// maxPriceCents is one billion in the currency's major unit.
	maxPriceCents int64 = 1_000_000_000_00
	// maxStockChange bounds a single adjustment or reservation, which catches typos such as an extra
	// row of zeros.
	maxStockChange = 1_000_000
)

// Product is the state of one product, rebuilt from its events. Start from [New] or [Replay]; the zero
// value has no id.
type Product struct {
	id           string
	exists       bool
	sku          string
	name         string
	description  string
	category     string
	priceCents   int64
	currency     string
	tags         []string
	stock        int64
	discontinued bool
	reserved     map[string]int64
}

// New returns a product with the given id that does not exist yet, ready for [Product.Create].
func New(id string) *Product {
	return &Product{id: id, reserved: make(map[string]int64)}
}

// Replay rebuilds the product id from its history, oldest event first.
func Replay(id string, history []events.Event) *Product {
	p := New(id)
	for _, e := range history {
		p.Apply(e)
	}
	return p
}

// Clone returns a copy of the product that shares no state with it, so that applying events to
// one leaves the other as it was.
func (p *Product) Clone() *Product {
	c := *p
	c.tags = slices.Clone(p.tags)
	c.reserved = maps.Clone(p.reserved)
	return &c
}

// Apply changes the product's state to record e, which must be an event of this product. It accepts
// every product event version ever stored and ignores events of other aggregates, so a caller can feed
// it any stream without filtering.
func (p *Product) Apply(e events.Event) {
	switch e := e.(type) {
	case events.ProductCreatedV1:
		p.exists = true
		p.sku = e.SKU
		p.name = e.Name
		p.description = e.Description
		p.category = e.Category
		p.priceCents = e.PriceCents
		p.currency = e.Currency
		p.tags = slices.Clone(e.Tags)
	case events.ProductRenamedV1:
		p.name = e.Name
	case events.ProductRepricedV1:
		p.priceCents = e.PriceCents
	case events.ProductStockAdjustedV1:
		p.stock = e.Stock
	case events.ProductDiscontinuedV1:
		p.discontinued = true
	case events.ProductStockReservedV1:
		if p.reserved == nil {
			p.reserved = make(map[string]int64)
		}
		p.reserved[e.OrderID] = e.Quantity
		p.stock = e.Stock
	case events.ProductStockReleasedV1:
		delete(p.reserved, e.OrderID)
		p.stock = e.Stock
	}
}

// ID returns the product's id.
func (p *Product) ID() string { return p.id }

// Exists reports whether the product was created.
func (p *Product) Exists() bool { return p.exists }

// SKU returns the product's stock-keeping unit, normalized by [NormalizeSKU].
func (p *Product) SKU() string { return p.sku }

// Name returns the product's display name.
func (p *Product) Name() string { return p.name }

// Description returns the product's description, possibly empty.
func (p *Product) Description() string { return p.description }

// Category returns the product's category.
func (p *Product) Category() string { return p.category }

// PriceCents returns the unit price in the currency's minor unit.
func (p *Product) PriceCents() int64 { return p.priceCents }

// Currency returns the ISO 4217 code of the price.
func (p *Product) Currency() string { return p.currency }

// Tags returns a copy of the product's tags, without duplicates, in the order they were given.
func (p *Product) Tags() []string { return slices.Clone(p.tags) }

// Stock returns the available stock: on hand and not reserved for an order.
func (p *Product) Stock() int64 { return p.stock }

// Discontinued reports whether the product was discontinued.
func (p *Product) Discontinued() bool { return p.discontinued }

// Reserved returns the quantity reserved for orderID, 0 when it holds no reservation.
func (p *Product) Reserved(orderID string) int64 { return p.reserved[orderID] }

// NormalizeSKU trims s and upper-cases it, so that "mug-350 " and "MUG-350" name the same SKU.
func NormalizeSKU(s string) string {
	return strings.ToUpper(strings.TrimSpace(s))
}

// Create is the input of [Product.Create]. Text fields are trimmed, the SKU and currency upper-cased.
type Create struct {
	SKU         string
	Name        string
	Description string
	Category    string
	PriceCents  int64
	Currency    string
	Tags        []string
}

// Create decides to add the product to the catalogue, with no stock. It fails with a
// [*domain.ValidationError] listing every invalid field, and with [ErrAlreadyExists] when the product was
// already created.
func (p *Product) Create(c Create) ([]events.Event, error) {
	if p.exists {
		return nil, fmt.Errorf("create product %s: %w", p.id, ErrAlreadyExists)
	}
	var pr check.Problems
	sku := checkSKU(&pr, c.SKU)
	name := pr.Line("name", c.Name, 1, maxNameLen)
	description := pr.Text("description", c.Description, 0, maxDescriptionLen)
	category := pr.Line("category", c.Category, 1, maxCategoryLen)
	checkPrice(&pr, c.PriceCents)
	currency := pr.Currency("currency", c.Currency)
	tags := checkTags(&pr, c.Tags)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("create product %s: %w", p.id, err)
	}
	return []events.Event{events.ProductCreatedV1{
		ProductID:   p.id,
		SKU:         sku,
		Name:        name,
		Description: description,
		Category:    category,
		PriceCents:  c.PriceCents,
		Currency:    currency,
		Tags:        tags,
	}}, nil
}

// Rename decides to give the product a new display name. Renaming to the current name is a no-op that
// returns no events, so a retried request succeeds. It fails with [domain.ErrNotFound], a
// [*domain.ValidationError], or [ErrDiscontinued].
func (p *Product) Rename(name string) ([]events.Event, error) {
	if err := p.mustExist("rename"); err != nil {
		return nil, err
	}
	var pr check.Problems
	name = pr.Line("name", name, 1, maxNameLen)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("rename product %s: %w", p.id, err)
	}
	if p.discontinued {
		return nil, fmt.Errorf("rename product %s: %w", p.id, ErrDiscontinued)
	}
	if name == p.name {
		return nil, nil
	}
	return []events.Event{events.ProductRenamedV1{ProductID: p.id, Name: name}}, nil
}

// Reprice decides to change the unit price. Repricing to the current price is a no-op that returns no
// events. It fails with [domain.ErrNotFound], a [*domain.ValidationError], or [ErrDiscontinued].
func (p *Product) Reprice(priceCents int64) ([]events.Event, error) {
	if err := p.mustExist("reprice"); err != nil {
		return nil, err
	}
	var pr check.Problems
	checkPrice(&pr, priceCents)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("reprice product %s: %w", p.id, err)
	}
	if p.discontinued {
		return nil, fmt.Errorf("reprice product %s: %w", p.id, ErrDiscontinued)
	}
	if priceCents == p.priceCents {
		return nil, nil
	}
	return []events.Event{events.ProductRepricedV1{ProductID: p.id, PriceCents: priceCents}}, nil
}

// AdjustStock decides to change the stock on hand by delta, for a delivery (positive) or a write-off
// (negative). It stays allowed on a discontinued product so that the remaining inventory can be cleared.
// It fails with [domain.ErrNotFound], a [*domain.ValidationError], or [ErrInsufficientStock] when the
// available stock would go negative: reserved stock cannot be written off.
func (p *Product) AdjustStock(delta int64, reason string) ([]events.Event, error) {
	if err := p.mustExist("adjust stock of"); err != nil {
		return nil, err
	}
	var pr check.Problems
	if delta == 0 || delta < -maxStockChange || delta > maxStockChange {
		pr.Add("delta", "must be non-zero and between %d and %d", -maxStockChange, maxStockChange)
	} else if delta > 0 && p.stock > math.MaxInt64-delta {
		pr.Add("delta", "would overflow the stock level")
	}
	reason = pr.Line("reason", reason, 1, maxReasonLen)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("adjust stock of product %s: %w", p.id, err)
	}
	if p.stock+delta < 0 {
		return nil, fmt.Errorf("adjust stock of product %s by %d with %d available: %w", p.id, delta, p.stock, ErrInsufficientStock)
	}
	return []events.Event{events.ProductStockAdjustedV1{
		ProductID: p.id, Delta: delta, Reason: reason, Stock: p.stock + delta,
	}}, nil
}

// Discontinue decides to stop selling the product, for good. It fails with [domain.ErrNotFound], a
// [*domain.ValidationError], or [ErrDiscontinued] when the product already is.
func (p *Product) Discontinue(reason string) ([]events.Event, error) {
	if err := p.mustExist("discontinue"); err != nil {
		return nil, err
	}
	var pr check.Problems
	reason = pr.Line("reason", reason, 1, maxReasonLen)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("discontinue product %s: %w", p.id, err)
	}
	if p.discontinued {
		return nil, fmt.Errorf("discontinue product %s: %w", p.id, ErrDiscontinued)
	}
	return []events.Event{events.ProductDiscontinuedV1{ProductID: p.id, Reason: reason}}, nil
}

// ReserveStock decides to set quantity aside for orderID, as the fulfilment process manager does for
// each line of a placed order. It is idempotent per order: when orderID already holds a reservation on
// this product it returns no events, whatever the quantity, so a redelivered message does nothing. It
// fails with [domain.ErrNotFound], a [*domain.ValidationError], [ErrDiscontinued], or
// [ErrInsufficientStock].
func (p *Product) ReserveStock(orderID string, quantity int64) ([]events.Event, error) {
	if err := p.mustExist("reserve stock of"); err != nil {
		return nil, err
	}
	var pr check.Problems
	orderID = pr.Line("order_id", orderID, 1, maxOrderIDLen)
	if quantity < 1 || quantity > maxStockChange {
		pr.Add("quantity", "must be between 1 and %d", maxStockChange)
	}
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("reserve stock of product %s: %w", p.id, err)
	}
	if _, ok := p.reserved[orderID]; ok {
		return nil, nil
	}
	if p.discontinued {
		return nil, fmt.Errorf("reserve stock of product %s for order %s: %w", p.id, orderID, ErrDiscontinued)
	}
	if quantity > p.stock {
		return nil, fmt.Errorf("reserve %d of product %s for order %s with %d available: %w",
			quantity, p.id, orderID, p.stock, ErrInsufficientStock)
	}
	return []events.Event{events.ProductStockReservedV1{
		ProductID: p.id, OrderID: orderID, Quantity: quantity, Stock: p.stock - quantity,
	}}, nil
}

// ReleaseStock decides to return what orderID reserved to available stock, when the order is cancelled
// or its fulfilment is compensated. It works on discontinued products too, and returns no events when
// the order holds no reservation, so that compensation can be retried. It fails with
// [domain.ErrNotFound] or a [*domain.ValidationError].
func (p *Product) ReleaseStock(orderID, reason string) ([]events.Event, error) {
	if err := p.mustExist("release stock of"); err != nil {
		return nil, err
	}
	var pr check.Problems
	orderID = pr.Line("order_id", orderID, 1, maxOrderIDLen)
	reason = pr.Line("reason", reason, 1, maxReasonLen)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("release stock of product %s: %w", p.id, err)
	}
	quantity, ok := p.reserved[orderID]
	if !ok {
		return nil, nil
	}
	return []events.Event{events.ProductStockReleasedV1{
		ProductID: p.id, OrderID: orderID, Quantity: quantity, Reason: reason, Stock: p.stock + quantity,
	}}, nil
}

func (p *Product) mustExist(op string) error {
	if !p.exists {
		return fmt.Errorf("%s product %s: %w", op, p.id, domain.ErrNotFound)
	}
	return nil
}

func checkSKU(pr *check.Problems, s string) string {
	s = NormalizeSKU(s)
	switch {
	case s == "":
		pr.Add("sku", "is required")
	case len(s) > maxSKULen:
		pr.Add("sku", "must be at most %d characters", maxSKULen)
	case strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "":
		pr.Add("sku", "must contain only letters, digits, '.', '_' and '-'")
	case strings.IndexByte("._-", s[0]) >= 0:
		pr.Add("sku", "must start with a letter or digit")
	}
	return s
}

func checkPrice(pr *check.Problems, cents int64) {
	if cents <= 0 || cents > maxPriceCents {
		pr.Add("price_cents", "must be between 1 and %d", maxPriceCents)
	}
}

// checkTags trims the tags and drops repeats, keeping the first. It returns a non-nil slice so that the
// event's JSON holds [] rather than null.
func checkTags(pr *check.Problems, tags []string) []string {
	out := make([]string, 0, len(tags))
	seen := make(map[string]bool, len(tags))
	for i, t := range tags {
		t = pr.Line(fmt.Sprintf("tags[%d]", i), t, 1, maxTagLen)
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	if len(out) > maxTags {
		pr.Add("tags", "must hold at most %d distinct tags", maxTags)
	}
	return out
}
