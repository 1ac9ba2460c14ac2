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

func TestProgressPayloadsSplitWhatDoesNotFit(t *testing.T) {
	p := consistency.Progress{Projection: "products", Streams: map[string]uint64{}}
	for i := range 1000 {
		p.Streams[fmt.Sprintf("product-%036d", i)] = uint64(i) * 1_000_003
	}
	payloads := p.Payloads()
	require.Greater(t, len(payloads), 1)
	got := map[string]uint64{}
	for _, payload := range payloads {
		require.LessOrEqual(t, len(payload), 7000)
		part := consistency.ParseProgress(payload)
		require.Equal(t, "products", part.Projection)
		require.NotEmpty(t, part.Streams, "a payload of the name alone")
		for s, v := range part.Streams {
			got[s] = v
		}
	}
	require.Equal(t, p.Streams, got)

	require.Equal(t, []string{"orders"}, consistency.Progress{Projection: "orders"}.Payloads())
	one := consistency.Progress{Projection: "orders", Streams: map[string]uint64{"order-1": 2}}
	require.Equal(t, []string{one.Encode()}, one.Payloads())
}
