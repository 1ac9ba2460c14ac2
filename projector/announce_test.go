package projector

import (
	"fmt"
	"maps"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAnnouncementsBeyondTheCapAreTheNameAlone: a notification carries the versions of up to
// maxAnnounced streams; past that it is the name alone, and versions committed before it is sent
// are not collected (the name alone makes readers look them up).
func TestAnnouncementsBeyondTheCapAreTheNameAlone(t *testing.T) {
	t.Parallel()
	versions := func(from, n int) map[string]uint64 {
		m := map[string]uint64{}
		for i := range n {
			m[fmt.Sprintf("product-%d", from+i)] = uint64(i + 1)
		}
		return m
	}
	r := &Runner{}
	r.announce(maps.All(versions(0, maxAnnounced)))
	r.announce(maps.All(map[string]uint64{"product-0": 7}))
	require.Len(t, r.announced, maxAnnounced, "up to the cap, versions are collected")
	require.Equal(t, uint64(7), r.announced["product-0"], "a stream's highest version")
	require.False(t, r.reset)

	r.announce(maps.All(versions(maxAnnounced, 1)))
	require.True(t, r.reset, "one more stream makes the notification the name alone")
	require.Empty(t, r.announced)
	r.announce(maps.All(versions(0, 3)))
	require.Empty(t, r.announced, "nothing is collected while the name alone is pending")
}
