package events

// OrderAggregate is the aggregate type of order streams: [StreamName](OrderAggregate, id).
const OrderAggregate = "order"

// OrderPlacedV1 records a customer's order as placed, pending confirmation. Lines carry the SKU, name and
// price the products had when the order was placed, so the order reads the same after a product changes.
type OrderPlacedV1 struct {
	OrderID       string        `json:"order_id"`
	CustomerID    string        `json:"customer_id"`
	CustomerName  string        `json:"customer_name"`
	CustomerEmail string        `json:"customer_email"`
	Lines         []OrderLineV1 `json:"lines"`
	Currency      string        `json:"currency"`
	// TotalCents is the sum of quantity × unit price over Lines.
	TotalCents int64 `json:"total_cents"`
	// CallbackURL, when set, is where the customer's system wants to hear about status changes.
	CallbackURL string `json:"callback_url,omitempty"`
}

// EventType returns "order.placed.v1".
func (OrderPlacedV1) EventType() string { return "order.placed.v1" }

// OrderLineV1 is one product line of an [OrderPlacedV1], priced when the order was placed.
type OrderLineV1 struct {
	ProductID      string `json:"product_id"`
	SKU            string `json:"sku"`
	Name           string `json:"name"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// OrderConfirmedV1 records that stock was reserved for every line, so the order will be fulfilled.
type OrderConfirmedV1 struct {
	OrderID string `json:"order_id"`
}

// EventType returns "order.confirmed.v1".
func (OrderConfirmedV1) EventType() string { return "order.confirmed.v1" }

// OrderRejectedV1 records that a pending order cannot be fulfilled, for instance for lack of stock.
type OrderRejectedV1 struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// EventType returns "order.rejected.v1".
func (OrderRejectedV1) EventType() string { return "order.rejected.v1" }

// OrderCancelledV1 records that a pending or confirmed order was called off before shipping; any stock
// it reserved is to be released.
type OrderCancelledV1 struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// EventType returns "order.cancelled.v1".
func (OrderCancelledV1) EventType() string { return "order.cancelled.v1" }

// OrderShippedV1 records that a confirmed order left the warehouse. It is final.
type OrderShippedV1 struct {
	OrderID        string `json:"order_id"`
	Carrier        string `json:"carrier"`
	TrackingNumber string `json:"tracking_number"`
}

// EventType returns "order.shipped.v1".
func (OrderShippedV1) EventType() string { return "order.shipped.v1" }
