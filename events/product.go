package events

// ProductAggregate is the aggregate type of product streams: [StreamName](ProductAggregate, id).
const ProductAggregate = "product"

// ProductCreatedV1 records that a product entered the catalogue. Stock starts at zero; it only changes
// through [ProductStockAdjustedV1], [ProductStockReservedV1] and [ProductStockReleasedV1].
type ProductCreatedV1 struct {
	ProductID   string `json:"product_id"`
	SKU         string `json:"sku"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Category    string `json:"category"`
	PriceCents  int64  `json:"price_cents"`
	Currency    string `json:"currency"`
	// Tags are de-duplicated, in the order they were given.
	Tags []string `json:"tags"`
}

// EventType returns "product.created.v1".
func (ProductCreatedV1) EventType() string { return "product.created.v1" }

// ProductRenamedV1 records a product's new display name; its SKU never changes.
type ProductRenamedV1 struct {
	ProductID string `json:"product_id"`
	Name      string `json:"name"`
}

// EventType returns "product.renamed.v1".
func (ProductRenamedV1) EventType() string { return "product.renamed.v1" }

// ProductRepricedV1 records a product's new unit price. Orders already placed keep the price they were
// placed at, so consumers must not reprice them.
type ProductRepricedV1 struct {
	ProductID  string `json:"product_id"`
	PriceCents int64  `json:"price_cents"`
}

// EventType returns "product.repriced.v1".
func (ProductRepricedV1) EventType() string { return "product.repriced.v1" }

// ProductStockAdjustedV1 records a manual change of stock on hand, such as a delivery or a stock-take
// correction. Stock is carried as well as Delta so that consumers can set the level without summing.
type ProductStockAdjustedV1 struct {
	ProductID string `json:"product_id"`
	// Delta is the change: positive adds stock, negative removes it; never zero.
	Delta  int64  `json:"delta"`
	Reason string `json:"reason"`
	// Stock is the available level after the adjustment.
	Stock int64 `json:"stock"`
}

// EventType returns "product.stock-adjusted.v1".
func (ProductStockAdjustedV1) EventType() string { return "product.stock-adjusted.v1" }

// ProductDiscontinuedV1 records that a product may no longer be sold. It is final: nothing restores a
// discontinued product, though its remaining stock may still be adjusted away.
type ProductDiscontinuedV1 struct {
	ProductID string `json:"product_id"`
	Reason    string `json:"reason"`
}

// EventType returns "product.discontinued.v1".
func (ProductDiscontinuedV1) EventType() string { return "product.discontinued.v1" }

// ProductStockReservedV1 records that stock was set aside for an order during fulfilment, so that it
// cannot be promised twice. Each order holds at most one reservation per product.
type ProductStockReservedV1 struct {
	ProductID string `json:"product_id"`
	OrderID   string `json:"order_id"`
	Quantity  int64  `json:"quantity"`
	// Stock is the available level after the reservation.
	Stock int64 `json:"stock"`
}

// EventType returns "product.stock-reserved.v1".
func (ProductStockReservedV1) EventType() string { return "product.stock-reserved.v1" }

// ProductStockReleasedV1 records that an order's reservation was returned to available stock, because
// the order was cancelled or its fulfilment was compensated. Quantity is what the order had reserved.
type ProductStockReleasedV1 struct {
	ProductID string `json:"product_id"`
	OrderID   string `json:"order_id"`
	Quantity  int64  `json:"quantity"`
	Reason    string `json:"reason"`
	// Stock is the available level after the release.
	Stock int64 `json:"stock"`
}

// EventType returns "product.stock-released.v1".
func (ProductStockReleasedV1) EventType() string { return "product.stock-released.v1" }
