package bench_test

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/bench"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, bench.Percentile(ds, 50))
	require.Equal(t, 99*time.Millisecond, bench.Percentile(ds, 99))
	require.Equal(t, 100*time.Millisecond, bench.Percentile(ds, 99.9))
	require.Equal(t, time.Millisecond, bench.Percentile(ds, 0.1))
	l := bench.Summarise([]time.Duration{3, 1, 2})
	require.Equal(t, bench.Latencies{N: 3, P50: 2, P90: 3, P99: 3, P999: 3, Max: 3}, l)
	require.Zero(t, bench.Summarise(nil))
}

// fake answers like strata's command and query services: commands after commandDelay, reads after
// readDelay with readStatus.
type fake struct {
	commandDelay, readDelay time.Duration
	readStatus              atomic.Int64
	commands, reads         atomic.Int64
	tokens                  atomic.Int64 // reads that carried a token
}

func (f *fake) start(t *testing.T) *bench.Target {
	next := atomic.Int64{}
	cmd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.commands.Add(1)
		time.Sleep(f.commandDelay)
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", next.Add(1))
		if parts := strings.Split(r.URL.Path, "/"); len(parts) == 5 {
			id = parts[3] // /v1/products/{id}/verb
		}
		w.Header().Set(bench.HeaderConsistencyToken, "token-"+id)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%q,"version":1}`, id)
	}))
	query := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.reads.Add(1)
		if r.Header.Get(bench.HeaderConsistencyToken) != "" {
			f.tokens.Add(1)
		}
		time.Sleep(f.readDelay)
		w.WriteHeader(int(f.readStatus.Load()))
	}))
	t.Cleanup(cmd.Close)
	t.Cleanup(query.Close)
	return &bench.Target{CommandURL: cmd.URL, QueryURL: query.URL}
}

func TestRunIsOpenLoop(t *testing.T) {
	t.Parallel()
	f := &fake{commandDelay: 40 * time.Millisecond, readDelay: 5 * time.Millisecond}
	f.readStatus.Store(http.StatusOK)
	target := f.start(t)
	cat, err := target.CreateProducts(t.Context(), 10)
	require.NoError(t, err)
	require.Len(t, cat.Products, 10)
	f.commands.Store(0)
	f.reads.Store(0)
	f.tokens.Store(0)

	// Commands take 40 ms and are due every 5 ms: a closed loop would send 25/s, an open loop 200/s.
	res, err := bench.Run(t.Context(), target, cat, bench.Config{Rate: 200, Duration: time.Second, Warmup: 200 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, 200, res.Scheduled)
	require.Equal(t, 200, res.Commands)
	require.Zero(t, res.Errors, "%v", res.ErrorKinds)
	require.Greater(t, res.Achieved, 150.0, "a closed loop would achieve 25/s")
	require.Equal(t, 200, res.Command.N)
	require.Equal(t, 200, res.Visible.N)
	require.GreaterOrEqual(t, res.Command.P50, 40*time.Millisecond)
	require.GreaterOrEqual(t, res.Visible.P50, 5*time.Millisecond)
	require.EqualValues(t, 240, f.commands.Load(), "warm-up commands are sent too")
	require.EqualValues(t, 240, f.tokens.Load(), "every read carries its command's token")
	require.Contains(t, res.String(), "write-to-visible")
	require.Len(t, res.Seconds, 1)
	require.Equal(t, 200, res.Seconds[0].Commands)
	require.Equal(t, 200, res.Seconds[0].Visible.N)
	require.Contains(t, res.Timeline(), "commands   200")
}

func TestSearch(t *testing.T) {
	t.Parallel()
	f := &fake{}
	f.readStatus.Store(http.StatusOK)
	target := f.start(t)
	cat, err := target.CreateProducts(t.Context(), 5)
	require.NoError(t, err)
	cfg := bench.SearchConfig{Rates: []float64{50, 100}, Step: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Pause: time.Millisecond,
		MaxVisibleP99: time.Second, MinAchieved: 0.5} // lenient: this machine may be busy, and -race is slow
	res, err := bench.Search(t.Context(), target, cat, cfg)
	require.NoError(t, err)
	require.Len(t, res.Steps, 2)
	require.Equal(t, float64(100), res.Sustainable, "%s", res)

	// Reads that time out (503) do not hold: the search stops at the first rate.
	f.readStatus.Store(http.StatusServiceUnavailable)
	res, err = bench.Search(t.Context(), target, cat, cfg)
	require.NoError(t, err)
	require.Len(t, res.Steps, 1)
	require.False(t, res.Steps[0].Held)
	require.Zero(t, res.Sustainable)
	for kind := range res.Steps[0].ErrorKinds {
		require.Contains(t, kind, " read: status 503")
	}
	require.Contains(t, res.String(), "did not hold")
}

func TestScrapeHistograms(t *testing.T) {
	reg := prometheus.NewRegistry()
	delay := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "delay_seconds", Buckets: []float64{0.001, 0.01, 0.1}},
		[]string{"projection"})
	reg.MustRegister(delay)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrape := func() map[string]bench.Histogram {
		h, err := bench.ScrapeHistograms(t.Context(), srv.Client(), srv.URL, "delay_seconds", "projection")
		require.NoError(t, err)
		return h
	}

	delay.WithLabelValues("orders").Observe(0.5) // before: not counted
	before := scrape()
	for range 98 {
		delay.WithLabelValues("orders").Observe(0.0005)
	}
	delay.WithLabelValues("orders").Observe(0.05)
	delay.WithLabelValues("orders").Observe(0.2)
	h := scrape()["orders"].Since(before["orders"])
	require.Equal(t, uint64(100), h.Count())
	require.Equal(t, time.Millisecond, h.Quantile(0.5))
	require.Equal(t, time.Millisecond, h.Quantile(0.98))
	require.Equal(t, 100*time.Millisecond, h.Quantile(0.99))
	require.Equal(t, time.Duration(math.MaxInt64), h.Quantile(1), "beyond the last bound")
	require.Empty(t, scrape()["products"].Counts)
	require.Zero(t, scrape()["products"].Quantile(0.5))
}
