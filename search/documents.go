package search

import (
	"fmt"
	"slices"

	"github.com/strata-dev/strata/events"
)

// ApplyProduct folds a product event into p, the product's search document so far (the zero Product
// before its first event). Events must come in stream order; an event at or below p.Version changes
// nothing, so a redelivery is harmless. Engines that keep whole documents (Elasticsearch) build them
// with it; the contract suite uses it to know what a search must return.
func ApplyProduct(p *Product, e events.Envelope) error {
	if e.Version <= p.Version {
		return nil
	}
	switch ev := e.Event.(type) {
	case events.ProductCreatedV1:
		_, id, _ := events.SplitStream(e.Stream)
		*p = Product{ID: id, SKU: ev.SKU, Name: ev.Name, Description: ev.Description, Category: ev.Category,
			PriceCents: ev.PriceCents, Currency: ev.Currency, Tags: slices.Clone(ev.Tags), CreatedAt: e.OccurredAt.UTC()}
		if p.Tags == nil {
			p.Tags = []string{}
		}
	case events.ProductRenamedV1:
		p.Name = ev.Name
	case events.ProductRepricedV1:
		p.PriceCents = ev.PriceCents
	case events.ProductStockAdjustedV1:
		p.Stock = ev.Stock
	case events.ProductStockReservedV1:
		p.Stock = ev.Stock
	case events.ProductStockReleasedV1:
		p.Stock = ev.Stock
	case events.ProductDiscontinuedV1:
		p.Discontinued = true
	default:
		return fmt.Errorf("product search: no handler for %T", e.Event)
	}
	if p.ID == "" {
		return fmt.Errorf("product search: %s@%d (%s) before the product was created", e.Stream, e.Version, e.Type)
	}
	p.Version = e.Version
	return nil
}

// ApplyOrder folds an order event into o, as [ApplyProduct] does for products.
func ApplyOrder(o *Order, e events.Envelope) error {
	if e.Version <= o.Version {
		return nil
	}
	switch ev := e.Event.(type) {
	case events.OrderPlacedV1:
		_, id, _ := events.SplitStream(e.Stream)
		*o = Order{ID: id, CustomerID: ev.CustomerID, CustomerName: ev.CustomerName, CustomerEmail: ev.CustomerEmail,
			Status: "pending", TotalCents: ev.TotalCents, Currency: ev.Currency, PlacedAt: e.OccurredAt.UTC(),
			SKUs: make([]string, 0, len(ev.Lines)), ProductNames: make([]string, 0, len(ev.Lines))}
		for _, l := range ev.Lines {
			o.SKUs = append(o.SKUs, l.SKU)
			o.ProductNames = append(o.ProductNames, l.Name)
		}
	case events.OrderConfirmedV1:
		o.Status = "confirmed"
	case events.OrderRejectedV1:
		o.Status = "rejected"
	case events.OrderCancelledV1:
		o.Status = "cancelled"
	case events.OrderShippedV1:
		o.Status = "shipped"
	default:
		return fmt.Errorf("order search: no handler for %T", e.Event)
	}
	if o.ID == "" {
		return fmt.Errorf("order search: %s@%d (%s) before the order was placed", e.Stream, e.Version, e.Type)
	}
	o.Version = e.Version
	return nil
}
