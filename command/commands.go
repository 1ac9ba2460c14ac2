package command

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/domain/order"
	"github.com/strata-dev/strata/domain/product"
	"github.com/strata-dev/strata/events"
)

// ErrSKUTaken is returned when a product is created with a SKU another product holds. It is a
// business rule, so it maps to 422.
var ErrSKUTaken = fmt.Errorf("sku already in use: %w", domain.ErrRule)

// product runs a command on the product id; creates says whether it may create the product.
func (s *Service) product(ctx context.Context, id string, req Request, creates bool, decide func(*product.Product) ([]events.Event, error)) (Result, error) {
	return execute(ctx, s, events.ProductAggregate, id, product.New, req, creates, decide)
}

// order runs a command on the order id; creates says whether it may place the order.
func (s *Service) order(ctx context.Context, id string, req Request, creates bool, decide func(*order.Order) ([]events.Event, error)) (Result, error) {
	return execute(ctx, s, events.OrderAggregate, id, order.New, req, creates, decide)
}

// CreateProduct creates a product with a SKU no other product holds. The SKU is claimed before the
// product.created event is appended and released if the append fails.
func (s *Service) CreateProduct(ctx context.Context, c product.Create, req Request) (Result, error) {
	id := newAggregateID(events.ProductAggregate, req.Metadata)
	var claimed string
	res, err := s.product(ctx, id, req, true, func(p *product.Product) ([]events.Event, error) {
		evs, err := p.Create(c)
		if err != nil || len(evs) == 0 {
			return evs, err
		}
		created, ok := evs[0].(events.ProductCreatedV1)
		if !ok {
			return nil, fmt.Errorf("create product %s: decided %T first, want product.created", id, evs[0])
		}
		if err := s.skus.Claim(ctx, created.SKU, id, s.streamExists); err != nil {
			return nil, err
		}
		claimed = created.SKU
		return evs, nil
	})
	if err != nil && claimed != "" {
		// The claim must not outlive a product that was never created. A crash right here leaves it
		// behind; Claim takes such orphans over after a grace period.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if exists, xerr := s.streamExists(ctx, id); xerr == nil && !exists {
			if rerr := s.skus.Release(ctx, claimed, id); rerr != nil {
				s.log.Warn("release sku claim", "sku", claimed, "err", rerr)
			}
		}
	}
	return res, err
}

// streamExists reports whether a product stream has events; a SKU claim whose product never came to
// exist may be taken over.
func (s *Service) streamExists(ctx context.Context, productID string) (bool, error) {
	evs, err := s.store.ReadStream(ctx, events.StreamName(events.ProductAggregate, productID), 1, 1)
	return len(evs) > 0, err
}

// RenameProduct renames a product.
func (s *Service) RenameProduct(ctx context.Context, id, name string, req Request) (Result, error) {
	return s.product(ctx, id, req, false, func(p *product.Product) ([]events.Event, error) { return p.Rename(name) })
}

// RepriceProduct changes a product's price.
func (s *Service) RepriceProduct(ctx context.Context, id string, priceCents int64, req Request) (Result, error) {
	return s.product(ctx, id, req, false, func(p *product.Product) ([]events.Event, error) { return p.Reprice(priceCents) })
}

// AdjustStock adds delta (negative to remove) to a product's stock.
func (s *Service) AdjustStock(ctx context.Context, id string, delta int64, reason string, req Request) (Result, error) {
	return s.product(ctx, id, req, false, func(p *product.Product) ([]events.Event, error) { return p.AdjustStock(delta, reason) })
}

// DiscontinueProduct takes a product off sale.
func (s *Service) DiscontinueProduct(ctx context.Context, id, reason string, req Request) (Result, error) {
	return s.product(ctx, id, req, false, func(p *product.Product) ([]events.Event, error) { return p.Discontinue(reason) })
}

// OrderLine is a line of an order as the client sends it; the service prices it.
type OrderLine struct {
	ProductID string
	Quantity  int64
}

// PlaceOrder is an order as the client sends it.
type PlaceOrder struct {
	CustomerID, CustomerName, CustomerEmail string
	Lines                                   []OrderLine
	CallbackURL                             string
}

// PlaceOrder prices the lines from the current products and appends order.placed. The order starts
// pending; the fulfilment process reserves stock and confirms or rejects it.
func (s *Service) PlaceOrder(ctx context.Context, po PlaceOrder, req Request) (Result, error) {
	id := newAggregateID(events.OrderAggregate, req.Metadata)
	// Pricing is part of the decision, not done before it: a retry of an order that was placed (its
	// reply lost) must be answered with that order even if a product changed since, and execute only
	// recognises the retry once it has loaded the order's stream.
	return s.order(ctx, id, req, true, func(o *order.Order) ([]events.Event, error) {
		place, err := s.priceLines(ctx, po)
		if err != nil {
			return nil, err
		}
		return o.Place(place)
	})
}

// maxPricedLines bounds the product streams one order reads; the order aggregate refuses more lines
// anyway.
const maxPricedLines = 100

// priceLines looks every line's product up. Unknown and discontinued products are input problems of
// the order (422), not missing resources (404). Product ids are UUIDs, kept in canonical form so that
// any spelling the client uses names the product's stream.
func (s *Service) priceLines(ctx context.Context, po PlaceOrder) (order.Place, error) {
	place := order.Place{CustomerID: po.CustomerID, CustomerName: po.CustomerName, CustomerEmail: po.CustomerEmail, CallbackURL: po.CallbackURL}
	// Each line's product stream; "" for lines the order aggregate reports, and for ids that name no
	// product.
	streams := make([]string, len(po.Lines))
	var lookup []string
	for i, l := range po.Lines {
		place.Lines = append(place.Lines, order.Line{ProductID: l.ProductID, Quantity: l.Quantity})
		id := strings.TrimSpace(l.ProductID)
		if u, err := uuid.Parse(id); err == nil && len(po.Lines) <= maxPricedLines {
			place.Lines[i].ProductID = u.String()
			streams[i] = events.StreamName(events.ProductAggregate, u.String())
			lookup = append(lookup, streams[i])
		}
	}
	// The products' latest states, not merely the cached ones: nothing appended to the products'
	// streams checks the prices the order was decided with.
	products, err := latest(ctx, s, lookup, func(stream string) *product.Product {
		_, id, _ := events.SplitStream(stream)
		return product.New(id)
	})
	if err != nil {
		return order.Place{}, err
	}

	var problems []domain.FieldProblem
	for i, l := range po.Lines {
		field := fmt.Sprintf("lines[%d].product_id", i)
		if streams[i] == "" {
			if strings.TrimSpace(l.ProductID) != "" && len(po.Lines) <= maxPricedLines {
				problems = append(problems, domain.FieldProblem{Field: field, Message: "no such product"})
			}
			continue
		}
		p := products[streams[i]].state
		switch {
		case !p.Exists():
			problems = append(problems, domain.FieldProblem{Field: field, Message: "no such product"})
		case p.Discontinued():
			problems = append(problems, domain.FieldProblem{Field: field, Message: "product is discontinued"})
		default:
			line := &place.Lines[i]
			line.SKU, line.Name, line.UnitPriceCents = p.SKU(), p.Name(), p.PriceCents()
			if place.Currency == "" {
				place.Currency = p.Currency()
			} else if place.Currency != p.Currency() {
				problems = append(problems, domain.FieldProblem{Field: field, Message: "priced in " + p.Currency() + ", the order is in " + place.Currency})
			}
		}
	}

	// Validate the rest of the order as the aggregate will, so that every problem is reported at once.
	// Lines left unpriced get a placeholder price, and the order a placeholder currency, because the
	// client sends neither: a problem with them is one of the product lines, reported above.
	probe := place
	probe.Lines = slices.Clone(place.Lines)
	for i := range probe.Lines {
		if probe.Lines[i].UnitPriceCents == 0 {
			probe.Lines[i].UnitPriceCents = 1
		}
	}
	if probe.Currency == "" {
		probe.Currency = "XXX"
	}
	var invalid *domain.ValidationError
	if _, err := order.New("").Place(probe); errors.As(err, &invalid) {
		problems = append(problems, invalid.Problems...)
	}
	if len(problems) > 0 {
		return order.Place{}, &domain.ValidationError{Problems: problems}
	}
	return place, nil
}

// CancelOrder cancels a pending or confirmed order. Releasing its reserved stock is the fulfilment
// process's job, triggered by order.cancelled.
func (s *Service) CancelOrder(ctx context.Context, id, reason string, req Request) (Result, error) {
	return s.order(ctx, id, req, false, func(o *order.Order) ([]events.Event, error) { return o.Cancel(reason) })
}

// ShipOrder records that a confirmed order left the warehouse.
func (s *Service) ShipOrder(ctx context.Context, id, carrier, trackingNumber string, req Request) (Result, error) {
	return s.order(ctx, id, req, false, func(o *order.Order) ([]events.Event, error) { return o.Ship(carrier, trackingNumber) })
}
