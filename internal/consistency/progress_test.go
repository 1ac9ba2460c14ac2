package consistency_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/consistency"
)

func TestProgressRoundTrip(t *testing.T) {
	p := consistency.Progress{Projection: "products", Streams: map[string]uint64{"product-a": 3, "product-b": 1}}
	require.Equal(t, p, consistency.ParseProgress(p.Encode()))

	// A name alone: the format projectors used before, and what is sent when there is nothing to tell.
	require.Equal(t, consistency.Progress{Projection: "orders"}, consistency.ParseProgress("orders"))
	require.Equal(t, "orders", consistency.Progress{Projection: "orders"}.Encode())
	require.Equal(t, consistency.Progress{}, consistency.ParseProgress("{not json"))
}

func TestProgressTooLargeForANotificationIsTheNameAlone(t *testing.T) {
	p := consistency.Progress{Projection: "products", Streams: map[string]uint64{}}
	for i := range 1000 {
		p.Streams[fmt.Sprintf("product-%036d", i)] = uint64(i)
	}
	require.Equal(t, "products", p.Encode())
}
