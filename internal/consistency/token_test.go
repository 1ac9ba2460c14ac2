package consistency_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/consistency"
)

func TestRoundTrip(t *testing.T) {
	tok := consistency.For("product-1", 3).Merge(consistency.For("order-9", 2))
	got, err := consistency.Parse(tok.String())
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"product-1": 3, "order-9": 2}, got.Streams())
}

func TestMergeKeepsHigherVersion(t *testing.T) {
	tok := consistency.For("product-1", 3).Merge(consistency.For("product-1", 5)).Merge(consistency.For("product-1", 4))
	require.Equal(t, map[string]uint64{"product-1": 5}, tok.Streams())
}

func TestEmpty(t *testing.T) {
	tok, err := consistency.Parse("")
	require.NoError(t, err)
	require.True(t, tok.IsZero())
	require.Empty(t, tok.String())
}

func TestMalformed(t *testing.T) {
	for _, s := range []string{
		"!!!",
		"e30",                          // {}
		"eyJ2IjoyLCJzIjp7fX0",          // {"v":2,"s":{}}
		"eyJ2IjoxLCJzIjp7IiI6MX19",     // empty stream name
		"eyJ2IjoxLCJzIjp7ImEiOjB9fQ",   // version 0
		"eyJ2IjoxLCJzIjp7ImEiOi0xfX0",  // negative version
		"eyJ2IjoxLCJzIjp7ImEiOiJ4In19", // version not a number
	} {
		_, err := consistency.Parse(s)
		require.ErrorIs(t, err, consistency.ErrMalformed, s)
	}
}
