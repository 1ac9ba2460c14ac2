// Package domain holds what every aggregate under it shares: the kinds of error a decision returns.
// Aggregates live in subpackages (domain/product, domain/order); they are pure Go, perform no I/O and
// read no clock, so the same decision is made however often it is replayed.
//
// Every error a decision returns wraps one of [ErrNotFound], [ErrInvalid] or [ErrRule], so the HTTP
// layer can map it to a status with errors.Is, and reads the field problems of a [*ValidationError]
// with errors.As.
package domain

import (
	"errors"
	"strings"
)

// ErrNotFound means the aggregate a command addresses does not exist. It maps to 404.
var ErrNotFound = errors.New("not found")

// ErrInvalid means a command's input fails validation whatever the aggregate's state. It maps to 422;
// the details are in a [*ValidationError].
var ErrInvalid = errors.New("invalid input")

// ErrRule means a business rule refuses the command in the aggregate's current state, such as too
// little stock or a status transition that is not allowed. It maps to 422. Aggregates wrap it in their
// own sentinels so that callers can tell the rules apart.
var ErrRule = errors.New("domain rule violated")

// FieldProblem is one reason why a command's input is invalid.
type FieldProblem struct {
	// Field is the JSON name of the input field, with an index for list elements, such as
	// "price_cents" or "lines[2].quantity", so that a client can point at it.
	Field string `json:"field"`
	// Message says what is wrong, in lower case, such as "must be between 1 and 200 characters".
	Message string `json:"message"`
}

// ValidationError lists every problem found in a command's input, so that a client can fix them all in
// one round trip. It unwraps to [ErrInvalid]; decisions return it as a *ValidationError.
type ValidationError struct {
	Problems []FieldProblem
}

// Error lists the problems as "invalid input: field: message; field: message".
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	for i, p := range e.Problems {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(p.Field)
		b.WriteString(": ")
		b.WriteString(p.Message)
	}
	return b.String()
}

// Unwrap returns [ErrInvalid].
func (e *ValidationError) Unwrap() error { return ErrInvalid }
