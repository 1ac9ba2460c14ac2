package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Histogram is a Prometheus histogram as scraped: cumulative counts per upper bound, in seconds.
type Histogram struct {
	Bounds []float64
	Counts []uint64
}

// ScrapeHistograms reads the histogram called name from the Prometheus text endpoint at url, per
// value of the label label.
func ScrapeHistograms(ctx context.Context, client *http.Client, url, name, label string) (map[string]Histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	out := map[string]Histogram{}
	f, ok := families[name]
	if !ok || f.GetType() != dto.MetricType_HISTOGRAM {
		return out, nil
	}
	for _, m := range f.GetMetric() {
		var key string
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				key = l.GetValue()
			}
		}
		var h Histogram
		for _, b := range m.GetHistogram().GetBucket() {
			h.Bounds = append(h.Bounds, b.GetUpperBound())
			h.Counts = append(h.Counts, b.GetCumulativeCount())
		}
		if len(h.Bounds) == 0 || !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) {
			h.Bounds = append(h.Bounds, math.Inf(1))
			h.Counts = append(h.Counts, m.GetHistogram().GetSampleCount())
		}
		out[key] = h
	}
	return out, nil
}

// Since returns what h observed after earlier, a scrape of the same histogram; all of h when the
// two do not match or the counts went down (the process restarted).
func (h Histogram) Since(earlier Histogram) Histogram {
	if !slices.Equal(h.Bounds, earlier.Bounds) {
		return h
	}
	for i := range h.Counts {
		if h.Counts[i] < earlier.Counts[i] {
			return h
		}
	}
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts)}
	for i := range out.Counts {
		out.Counts[i] -= earlier.Counts[i]
	}
	return out
}

// Count is how many observations h holds.
func (h Histogram) Count() uint64 {
	if len(h.Counts) == 0 {
		return 0
	}
	return h.Counts[len(h.Counts)-1]
}

// Quantile returns the upper bound of the bucket that holds quantile q: at most that much, at
// least the bound below. It is 0 for an empty histogram, and infinite beyond the last bound.
func (h Histogram) Quantile(q float64) time.Duration {
	rank := uint64(math.Ceil(q * float64(h.Count())))
	for i, c := range h.Counts {
		if c >= rank && c > 0 {
			if math.IsInf(h.Bounds[i], 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(h.Bounds[i] * float64(time.Second))
		}
	}
	return 0
}
