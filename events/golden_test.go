package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the samples")

// samples holds one filled-in value of every commerce payload version, keyed by EventType. Every field
// is set, so that a renamed or dropped JSON field changes the golden file.
func samples() map[string]events.Event {
	list := []events.Event{
		events.ProductCreatedV1{
			ProductID:   "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d",
			SKU:         "MUG-CER-350",
			Name:        "Ceramic mug, 350 ml",
			Description: "Stoneware mug with a matte glaze.\nDishwasher safe.",
			Category:    "Kitchen",
			PriceCents:  1490,
			Currency:    "EUR",
			Tags:        []string{"mug", "ceramic", "gift"},
		},
		events.ProductRenamedV1{ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", Name: "Stoneware mug, 350 ml"},
		events.ProductRepricedV1{ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", PriceCents: 1290},
		events.ProductStockAdjustedV1{
			ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", Delta: -3, Reason: "stock-take correction", Stock: 47,
		},
		events.ProductDiscontinuedV1{ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", Reason: "supplier stopped production"},
		events.ProductStockReservedV1{
			ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", OrderID: "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d",
			Quantity: 2, Stock: 45,
		},
		events.ProductStockReleasedV1{
			ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", OrderID: "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d",
			Quantity: 2, Reason: "order cancelled", Stock: 47,
		},
		events.OrderPlacedV1{
			OrderID:       "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d",
			CustomerID:    "cust-1042",
			CustomerName:  "Ada Lovelace",
			CustomerEmail: "ada@example.com",
			Lines: []events.OrderLineV1{
				{ProductID: "0190a5b2-7c9e-7f1a-8d2b-1c3e5f7a9b0d", SKU: "MUG-CER-350", Name: "Ceramic mug, 350 ml",
					Quantity: 2, UnitPriceCents: 1490},
				{ProductID: "0190a5b2-8e1f-7b2c-9d3e-4f5a6b7c8d9e", SKU: "TEA-EARL-100", Name: "Earl Grey, 100 g",
					Quantity: 1, UnitPriceCents: 650},
			},
			Currency:    "EUR",
			TotalCents:  3630,
			CallbackURL: "https://shop.example.com/hooks/orders",
		},
		events.OrderConfirmedV1{OrderID: "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d"},
		events.OrderRejectedV1{OrderID: "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d", Reason: "insufficient stock for MUG-CER-350"},
		events.OrderCancelledV1{OrderID: "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d", Reason: "customer changed their mind"},
		events.OrderShippedV1{OrderID: "0190a5b3-1d2e-7a3b-9c4d-5e6f7a8b9c0d", Carrier: "DHL", TrackingNumber: "JD014600006281234567"},
	}
	m := make(map[string]events.Event, len(list))
	for _, e := range list {
		m[e.EventType()] = e
	}
	return m
}

func TestCommerceTypesMakeACodec(t *testing.T) {
	c, err := events.NewCodec(events.CommerceTypes(), events.CommerceUpcasters())
	require.NoError(t, err)
	require.NotNil(t, c)
	c, err = events.NewCommerceCodec()
	require.NoError(t, err)
	require.Len(t, c.Types(), len(events.CommerceTypes()))
}

// TestGolden freezes the JSON of every commerce payload version. A failure means a shipped payload
// changed: add a new version instead. Run go test ./events -update only for a newly added version.
func TestGolden(t *testing.T) {
	c, err := events.NewCommerceCodec()
	require.NoError(t, err)
	samples := samples()
	registered := make(map[string]bool)
	for _, ty := range events.CommerceTypes() {
		registered[ty.String()] = true
		t.Run(ty.String(), func(t *testing.T) {
			sample, ok := samples[ty.String()]
			require.Truef(t, ok, "no sample for registered type %s: add one to samples()", ty)

			name, version, data, err := c.Encode(sample)
			require.NoError(t, err)
			require.Equal(t, ty.Name(), name)
			require.Equal(t, ty.Version(), version)
			var indented bytes.Buffer
			require.NoError(t, json.Indent(&indented, data, "", "  "))
			indented.WriteByte('\n')

			path := filepath.Join("testdata", ty.String()+".golden.json")
			if *update {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(path, indented.Bytes(), 0o644))
			}
			golden, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("no golden file %s for registered type %s: run go test ./events -update", path, ty)
			}
			require.NoError(t, err)
			require.Equal(t, string(golden), indented.String(), "the JSON of a shipped payload changed")

			got, err := c.Decode(ty.Name(), ty.Version(), golden)
			require.NoError(t, err)
			require.Equal(t, sample, got, "golden file does not decode back into the sample")
		})
	}
	for key := range samples {
		require.Truef(t, registered[key], "sample %s is not in CommerceTypes", key)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden.json"))
	require.NoError(t, err)
	for _, f := range files {
		key := strings.TrimSuffix(filepath.Base(f), ".golden.json")
		require.Truef(t, registered[key], "golden file %s has no registered type: a shipped version was removed", f)
	}
}
