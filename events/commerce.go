package events

import "fmt"

// CommerceTypes returns every commerce payload version ever shipped. Each version stays listed after a
// newer one is added, because stored history still holds it.
func CommerceTypes() []Type {
	return []Type{
		Def[ProductCreatedV1](),
		Def[ProductRenamedV1](),
		Def[ProductRepricedV1](),
		Def[ProductStockAdjustedV1](),
		Def[ProductDiscontinuedV1](),
		Def[ProductStockReservedV1](),
		Def[ProductStockReleasedV1](),
		Def[OrderPlacedV1](),
		Def[OrderConfirmedV1](),
		Def[OrderRejectedV1](),
		Def[OrderCancelledV1](),
		Def[OrderShippedV1](),
	}
}

// CommerceUpcasters returns the upcasters between the versions in [CommerceTypes]. It is empty while
// every commerce payload is at v1.
func CommerceUpcasters() []Upcaster {
	return nil
}

// NewCommerceCodec returns the [Codec] for [CommerceTypes] and [CommerceUpcasters]. Its error can only
// come from a programming mistake in those lists, which the package's tests catch; it is returned rather
// than panicking so that run can report it like any other wiring error.
func NewCommerceCodec() (*Codec, error) {
	c, err := NewCodec(CommerceTypes(), CommerceUpcasters())
	if err != nil {
		return nil, fmt.Errorf("commerce: %w", err)
	}
	return c, nil
}
