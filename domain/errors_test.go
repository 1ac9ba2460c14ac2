package domain_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/domain"
)

func TestValidationError(t *testing.T) {
	err := fmt.Errorf("create product p-1: %w", &domain.ValidationError{Problems: []domain.FieldProblem{
		{Field: "sku", Message: "is required"},
		{Field: "lines[2].quantity", Message: "must be between 1 and 10000"},
	}})
	require.EqualError(t, err,
		"create product p-1: invalid input: sku: is required; lines[2].quantity: must be between 1 and 10000")
	require.ErrorIs(t, err, domain.ErrInvalid)
	require.NotErrorIs(t, err, domain.ErrRule)

	var ve *domain.ValidationError
	require.True(t, errors.As(err, &ve))
	require.Len(t, ve.Problems, 2)
}

func TestValidationErrorWithoutProblems(t *testing.T) {
	require.EqualError(t, &domain.ValidationError{}, "invalid input")
}
