// Package order holds the Order aggregate: a customer's order for priced product lines and the status it
// moves through until it ships or ends. It performs no I/O; lines are priced by the caller from the
// product aggregates, and stock is reserved by the fulfilment process manager, not here.
//
// Decisions (Place, Confirm, …) return the events that record them and change nothing; [Order.Apply]
// changes state from events only, so the same code rebuilds an order from its stream.
package order

import (
	"fmt"
	"math"
	"net/mail"
	"net/url"
	"slices"
	"strings"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/domain/internal/check"
	"github.com/strata-dev/strata/events"
)

// ErrAlreadyExists is returned by [Order.Place] for an order that was already placed. It wraps
// [domain.ErrRule].
var ErrAlreadyExists = fmt.Errorf("order: already exists: %w", domain.ErrRule)

// ErrInvalidTransition is returned when a command would move an order between two statuses the
// lifecycle does not connect, such as shipping a pending order. The error message names both statuses.
// It wraps [domain.ErrRule].
var ErrInvalidTransition = fmt.Errorf("order: invalid status transition: %w", domain.ErrRule)

// Status is where an order is in its lifecycle:
//
//	pending -> confirmed -> shipped
//	pending -> rejected
//	pending, confirmed -> cancelled
//
// Rejected, cancelled and shipped are final.
type Status string

// The statuses of an order. An order that does not exist has the empty status.
const (
	// Pending orders wait for stock to be reserved.
	Pending Status = "pending"
	// Confirmed orders have stock reserved for every line and wait to ship.
	Confirmed Status = "confirmed"
	// Rejected orders could not be fulfilled.
	Rejected Status = "rejected"
	// Cancelled orders were called off before shipping.
	Cancelled Status = "cancelled"
	// Shipped orders left the warehouse.
	Shipped Status = "shipped"
)

// transitions lists, for each status a command leads to, the statuses it may start from.
var transitions = map[Status][]Status{
	Confirmed: {Pending},
	Rejected:  {Pending},
	Cancelled: {Pending, Confirmed},
	Shipped:   {Confirmed},
}

// Limits on an order's input. They bound what projections must store and keep totals far from overflow.
const (
	maxCustomerIDLen  = 100
	maxNameLen        = 200
	maxEmailLen       = 254
	maxLines          = 100
	maxQuantity       = 10_000
	maxProductIDLen   = 100
	maxCallbackURLLen = 2048
	maxReasonLen      = 200
	maxCarrierLen     = 100
	maxTrackingLen    = 100
)

// Line is one product line of an order, priced by the caller from the product aggregate when the order
// is placed; the order keeps that price whatever the product's later price.
type Line struct {
	ProductID      string
	SKU            string
	Name           string
	Quantity       int64
	UnitPriceCents int64
}

// Order is the state of one order, rebuilt from its events. Start from [New] or [Replay]; the zero value
// has no id.
type Order struct {
	id            string
	exists        bool
	status        Status
	customerID    string
	customerName  string
	customerEmail string
	lines         []Line
	currency      string
	totalCents    int64
	callbackURL   string
}

// New returns an order with the given id that does not exist yet, ready for [Order.Place].
func New(id string) *Order {
	return &Order{id: id}
}

// Replay rebuilds the order id from its history, oldest event first.
func Replay(id string, history []events.Event) *Order {
	o := New(id)
	for _, e := range history {
		o.Apply(e)
	}
	return o
}

// Clone returns a copy of the order that shares no state with it, so that applying events to one
// leaves the other as it was.
func (o *Order) Clone() *Order {
	c := *o
	c.lines = slices.Clone(o.lines)
	return &c
}

// Apply changes the order's state to record e, which must be an event of this order. It accepts every
// order event version ever stored and ignores events of other aggregates, so a caller can feed it any
// stream without filtering.
func (o *Order) Apply(e events.Event) {
	switch e := e.(type) {
	case events.OrderPlacedV1:
		o.exists = true
		o.status = Pending
		o.customerID = e.CustomerID
		o.customerName = e.CustomerName
		o.customerEmail = e.CustomerEmail
		o.lines = make([]Line, len(e.Lines))
		for i, l := range e.Lines {
			o.lines[i] = Line(l)
		}
		o.currency = e.Currency
		o.totalCents = e.TotalCents
		o.callbackURL = e.CallbackURL
	case events.OrderConfirmedV1:
		o.status = Confirmed
	case events.OrderRejectedV1:
		o.status = Rejected
	case events.OrderCancelledV1:
		o.status = Cancelled
	case events.OrderShippedV1:
		o.status = Shipped
	}
}

// ID returns the order's id.
func (o *Order) ID() string { return o.id }

// Exists reports whether the order was placed.
func (o *Order) Exists() bool { return o.exists }

// Status returns where the order is in its lifecycle, empty when it does not exist.
func (o *Order) Status() Status { return o.status }

// CustomerID returns the id of the customer who placed the order.
func (o *Order) CustomerID() string { return o.customerID }

// CustomerName returns the customer's name as given with the order.
func (o *Order) CustomerName() string { return o.customerName }

// CustomerEmail returns the customer's e-mail address as given with the order.
func (o *Order) CustomerEmail() string { return o.customerEmail }

// Lines returns a copy of the order's lines, in the order they were given.
func (o *Order) Lines() []Line { return slices.Clone(o.lines) }

// Currency returns the ISO 4217 code every price of the order is in.
func (o *Order) Currency() string { return o.currency }

// TotalCents returns the sum of quantity × unit price over the lines.
func (o *Order) TotalCents() int64 { return o.totalCents }

// CallbackURL returns where the customer's system wants to hear about status changes, empty for nowhere.
func (o *Order) CallbackURL() string { return o.callbackURL }

// Place is the input of [Order.Place]. Text fields are trimmed and the currency upper-cased.
type Place struct {
	CustomerID    string
	CustomerName  string
	CustomerEmail string
	Lines         []Line
	Currency      string
	// CallbackURL is empty, or an absolute http or https URL.
	CallbackURL string
}

// Place decides to place the order, pending until stock is reserved, and computes its total. It fails
// with a [*domain.ValidationError] listing every invalid field (field names such as
// "lines[2].quantity"), and with [ErrAlreadyExists] when the order was already placed.
func (o *Order) Place(p Place) ([]events.Event, error) {
	if o.exists {
		return nil, fmt.Errorf("place order %s: %w", o.id, ErrAlreadyExists)
	}
	var pr check.Problems
	customerID := pr.Line("customer_id", p.CustomerID, 1, maxCustomerIDLen)
	customerName := pr.Line("customer_name", p.CustomerName, 1, maxNameLen)
	email := checkEmail(&pr, p.CustomerEmail)
	lines, total := checkLines(&pr, p.Lines)
	currency := pr.Currency("currency", p.Currency)
	callbackURL := checkCallbackURL(&pr, p.CallbackURL)
	if err := pr.Err(); err != nil {
		return nil, fmt.Errorf("place order %s: %w", o.id, err)
	}
	return []events.Event{events.OrderPlacedV1{
		OrderID:       o.id,
		CustomerID:    customerID,
		CustomerName:  customerName,
		CustomerEmail: email,
		Lines:         lines,
		Currency:      currency,
		TotalCents:    total,
		CallbackURL:   callbackURL,
	}}, nil
}

// Confirm decides that the order will be fulfilled, once stock is reserved for every line. It fails with
// [domain.ErrNotFound], or [ErrInvalidTransition] unless the order is pending.
func (o *Order) Confirm() ([]events.Event, error) {
	if err := o.decide("confirm", Confirmed, nil); err != nil {
		return nil, err
	}
	return []events.Event{events.OrderConfirmedV1{OrderID: o.id}}, nil
}

// Reject decides that a pending order cannot be fulfilled. It fails with [domain.ErrNotFound], a
// [*domain.ValidationError] for a missing or overlong reason, or [ErrInvalidTransition] unless the order
// is pending.
func (o *Order) Reject(reason string) ([]events.Event, error) {
	var pr check.Problems
	reason = pr.Line("reason", reason, 1, maxReasonLen)
	if err := o.decide("reject", Rejected, pr.Err()); err != nil {
		return nil, err
	}
	return []events.Event{events.OrderRejectedV1{OrderID: o.id, Reason: reason}}, nil
}

// Cancel decides to call the order off before it ships; the fulfilment process manager then releases
// its stock. It fails with [domain.ErrNotFound], a [*domain.ValidationError] for a missing or overlong
// reason, or [ErrInvalidTransition] unless the order is pending or confirmed.
func (o *Order) Cancel(reason string) ([]events.Event, error) {
	var pr check.Problems
	reason = pr.Line("reason", reason, 1, maxReasonLen)
	if err := o.decide("cancel", Cancelled, pr.Err()); err != nil {
		return nil, err
	}
	return []events.Event{events.OrderCancelledV1{OrderID: o.id, Reason: reason}}, nil
}

// Ship decides that a confirmed order left the warehouse with carrier under trackingNumber. It fails
// with [domain.ErrNotFound], a [*domain.ValidationError], or [ErrInvalidTransition] unless the order is
// confirmed.
func (o *Order) Ship(carrier, trackingNumber string) ([]events.Event, error) {
	var pr check.Problems
	carrier = pr.Line("carrier", carrier, 1, maxCarrierLen)
	trackingNumber = pr.Line("tracking_number", trackingNumber, 1, maxTrackingLen)
	if err := o.decide("ship", Shipped, pr.Err()); err != nil {
		return nil, err
	}
	return []events.Event{events.OrderShippedV1{OrderID: o.id, Carrier: carrier, TrackingNumber: trackingNumber}}, nil
}

// decide checks, in this order, that the order exists, that the command's input is valid (invalid is
// the result of validating it) and that the order may move from its status to "to".
func (o *Order) decide(verb string, to Status, invalid error) error {
	switch {
	case !o.exists:
		return fmt.Errorf("%s order %s: %w", verb, o.id, domain.ErrNotFound)
	case invalid != nil:
		return fmt.Errorf("%s order %s: %w", verb, o.id, invalid)
	case !slices.Contains(transitions[to], o.status):
		return fmt.Errorf("%s order %s: cannot go from %s to %s: %w", verb, o.id, o.status, to, ErrInvalidTransition)
	}
	return nil
}

// checkEmail accepts a bare address as net/mail parses it, and refuses a display name or angle
// brackets, because the address is stored and mailed to as given.
func checkEmail(pr *check.Problems, s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		pr.Add("customer_email", "is required")
		return s
	}
	if len(s) > maxEmailLen {
		pr.Add("customer_email", "must be at most %d characters", maxEmailLen)
		return s
	}
	a, err := mail.ParseAddress(s)
	switch {
	case err != nil:
		pr.Add("customer_email", "must be a valid e-mail address")
	case a.Name != "":
		pr.Add("customer_email", "must be a bare address without a display name")
	case a.Address != s:
		pr.Add("customer_email", "must be a bare address such as name@example.com")
	}
	return s
}

// checkLines validates the lines and returns them as event lines with the order's total. The total is
// only meaningful when no problem was added.
func checkLines(pr *check.Problems, lines []Line) ([]events.OrderLineV1, int64) {
	if len(lines) < 1 || len(lines) > maxLines {
		pr.Add("lines", "must hold between 1 and %d lines", maxLines)
	}
	out := make([]events.OrderLineV1, 0, len(lines))
	firstLine := make(map[string]int, len(lines))
	var total int64
	overflow := false
	for i, l := range lines {
		field := func(name string) string { return fmt.Sprintf("lines[%d].%s", i, name) }
		l.ProductID = pr.Line(field("product_id"), l.ProductID, 1, maxProductIDLen)
		if first, dup := firstLine[l.ProductID]; dup && l.ProductID != "" {
			pr.Add(field("product_id"), "repeats lines[%d].product_id: order each product on one line", first)
		} else {
			firstLine[l.ProductID] = i
		}
		l.SKU = strings.TrimSpace(l.SKU)
		l.Name = strings.TrimSpace(l.Name)
		quantityOK := l.Quantity >= 1 && l.Quantity <= maxQuantity
		if !quantityOK {
			pr.Add(field("quantity"), "must be between 1 and %d", maxQuantity)
		}
		priceOK := l.UnitPriceCents > 0
		if !priceOK {
			pr.Add(field("unit_price_cents"), "must be greater than 0")
		}
		if quantityOK && priceOK && !overflow {
			if l.UnitPriceCents > math.MaxInt64/l.Quantity || total > math.MaxInt64-l.Quantity*l.UnitPriceCents {
				overflow = true
				pr.Add("lines", "order total is too large")
			} else {
				total += l.Quantity * l.UnitPriceCents
			}
		}
		out = append(out, events.OrderLineV1(l))
	}
	return out, total
}

// checkCallbackURL accepts an empty string or an absolute http or https URL with a host, the only kind
// the notifier can call.
func checkCallbackURL(pr *check.Problems, s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	if len(s) > maxCallbackURLLen {
		pr.Add("callback_url", "must be at most %d characters", maxCallbackURLLen)
		return s
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		pr.Add("callback_url", "must be an absolute http or https URL")
	}
	return s
}
