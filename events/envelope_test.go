package events_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
)

func TestPositionLess(t *testing.T) {
	tests := []struct {
		name string
		p, q events.Position
		want bool
	}{
		{name: "equal", p: events.Position{Commit: 5, Prepare: 5}, q: events.Position{Commit: 5, Prepare: 5}, want: false},
		{name: "lower commit", p: events.Position{Commit: 4, Prepare: 9}, q: events.Position{Commit: 5, Prepare: 1}, want: true},
		{name: "higher commit", p: events.Position{Commit: 6, Prepare: 1}, q: events.Position{Commit: 5, Prepare: 9}, want: false},
		{name: "same commit lower prepare", p: events.Position{Commit: 5, Prepare: 1}, q: events.Position{Commit: 5, Prepare: 2}, want: true},
		{name: "same commit higher prepare", p: events.Position{Commit: 5, Prepare: 3}, q: events.Position{Commit: 5, Prepare: 2}, want: false},
		{name: "start before everything", p: events.Start, q: events.Position{Prepare: 1}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.p.Less(tt.q))
		})
	}
}

func TestPositionStringRoundTrip(t *testing.T) {
	for _, p := range []events.Position{
		events.Start,
		{Commit: 1, Prepare: 2},
		{Commit: 42, Prepare: 0},
		{Commit: math.MaxUint64, Prepare: math.MaxUint64},
	} {
		t.Run(p.String(), func(t *testing.T) {
			got, err := events.ParsePosition(p.String())
			require.NoError(t, err)
			require.Equal(t, p, got)
		})
	}
	require.Equal(t, "7/8", events.Position{Commit: 7, Prepare: 8}.String())
}

func TestParsePositionRejects(t *testing.T) {
	for _, s := range []string{
		"", "1", "1/", "/1", "a/1", "1/b", "-1/2", "+1/2", "1/2/3", " 1/2", "1/2 ", "1.0/2",
		"18446744073709551616/0",
	} {
		t.Run(s, func(t *testing.T) {
			_, err := events.ParsePosition(s)
			require.Error(t, err)
		})
	}
}

func TestSplitStream(t *testing.T) {
	tests := []struct {
		stream, wantType, wantID string
		wantOK                   bool
	}{
		{stream: "product-p1", wantType: "product", wantID: "p1", wantOK: true},
		{stream: "order-7c9e-4f1a", wantType: "order", wantID: "7c9e-4f1a", wantOK: true},
		{stream: "product", wantType: "product", wantOK: false},
		{stream: "-p1", wantID: "p1", wantOK: false},
		{stream: "product-", wantType: "product", wantOK: false},
		{stream: "", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.stream, func(t *testing.T) {
			typ, id, ok := events.SplitStream(tt.stream)
			require.Equal(t, tt.wantOK, ok)
			if ok {
				require.Equal(t, tt.wantType, typ)
				require.Equal(t, tt.wantID, id)
			}
		})
	}
}

func TestStreamNameRoundTrip(t *testing.T) {
	for _, id := range []string{"p1", "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d"} {
		typ, got, ok := events.SplitStream(events.StreamName(events.OrderAggregate, id))
		require.True(t, ok)
		require.Equal(t, events.OrderAggregate, typ)
		require.Equal(t, id, got)
	}
}
