package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/bench"
)

// BenchmarkEndToEnd runs `strata dev` in-process (PostgreSQL event store, embedded NATS, the default
// number of partitions) and drives it over HTTP with the load generator of package bench, in the same
// process: paced, open-loop commands (half stock adjustments, a quarter renames, a quarter order
// placements on 1,000 products created first), each read back through the query service with its
// consistency token.
//
//   - rate=1000: STRATA_BENCH_RATE commands/s (default 1000) for STRATA_BENCH_DURATION (default 30s)
//     after a warm-up at that rate of STRATA_BENCH_WARMUP (default 2s). Reports p50 and p99 of the
//     command latency (from the time the command was due) and of write-to-visible (from its
//     acknowledgement until the read with its token answered), the achieved rate and the errors,
//     and how busy this machine's CPU was meanwhile (host-cpu-busy-%, all cores: everything runs
//     here, PostgreSQL included) with its busy CPU time per command (host-cpu-us/cmd). Latency tails
//     grow steeply as the CPU nears saturation, and the CPU per command is the figure that a change
//     to the system moves and the machine's noise moves far less: compare it over a few runs, not p99s.
//   - sustainable: steps through bench.DefaultRates (250, 500, 750, 1000, 1500, 2000, 3000 … 16000
//     commands/s), STRATA_BENCH_STEP each (default 5s, after 1 s of warm-up), and reports the highest
//     rate at which nothing failed, write-to-visible p99 stayed within 50 ms and the achieved rate
//     kept up (95%); it stops at the first rate that does not hold.
//
// The targets are absolute, so there is no baseline; the machine's load average before the run is
// reported as load1 instead: the generator, strata and PostgreSQL share the machine. One operation is
// the whole scenario, so each sub-benchmark runs once whatever -benchtime says: about 35 s for the
// paced run, and 7 s per rate of the search (under a minute where the search stops near 1,000/s, a
// minute and a half where it reaches 16,000/s).
func BenchmarkEndToEnd(b *testing.B) {
	rate := benchEnvFloat(b, "STRATA_BENCH_RATE", 1000)
	duration := benchEnvDuration(b, "STRATA_BENCH_DURATION", 30*time.Second)
	step := benchEnvDuration(b, "STRATA_BENCH_STEP", 5*time.Second)
	warmup := benchEnvDuration(b, "STRATA_BENCH_WARMUP", 2*time.Second)
	load, _ := bench.LoadAverage()

	target, admin := startDevForBench(b)
	cat, err := target.CreateProducts(b.Context(), 1000)
	require.NoError(b, err)

	b.Run(fmt.Sprintf("rate=%.0f", rate), func(b *testing.B) {
		var res bench.Result
		var delays map[string]bench.Histogram
		for range b.N {
			before := pipelineDelays(b, target)
			res, err = bench.Run(b.Context(), target, cat, bench.Config{Rate: rate, Duration: duration, Warmup: warmup})
			require.NoError(b, err)
			delays = pipelineDelays(b, target)
			for p, h := range delays {
				delays[p] = h.Since(before[p])
			}
		}
		b.Logf("\n%s", res)
		// Where write-to-visible goes: from each event's commit to JetStream's acknowledgement of its
		// publish (relay), and to the commit applying it (projector ...). Warm-up included; bucket
		// bounds, not exact figures.
		for _, p := range slices.Sorted(maps.Keys(delays)) {
			h := delays[p]
			b.Logf("%-18s delay p50 <= %s  p99 <= %s  (n=%d)", p, h.Quantile(0.5), h.Quantile(0.99), h.Count())
		}
		if testing.Verbose() { // benchmark logs are cut to a few lines otherwise
			b.Logf("second by second:\n%s", res.Timeline())
		}
		b.ReportMetric(msOf(res.Command.P50), "cmd-p50-ms")
		b.ReportMetric(msOf(res.Command.P99), "cmd-p99-ms")
		b.ReportMetric(msOf(res.Visible.P50), "visible-p50-ms")
		b.ReportMetric(msOf(res.Visible.P99), "visible-p99-ms")
		b.ReportMetric(res.Achieved, "achieved-cmd/s")
		if res.HostCPU.Total > 0 {
			b.ReportMetric(100*res.HostCPU.Utilisation(), "host-cpu-busy-%")
			b.ReportMetric(float64(res.CPUPerCommand().Microseconds()), "host-cpu-us/cmd")
		}
		b.ReportMetric(float64(res.Errors), "errors")
		b.ReportMetric(load, "load1")
	})
	b.Run("sustainable", func(b *testing.B) {
		waitCaughtUp(b, admin) // the paced run's tail must not count against the first step
		var res bench.SearchResult
		for range b.N {
			res, err = bench.Search(b.Context(), target, cat, bench.SearchConfig{Step: step})
			require.NoError(b, err)
		}
		b.Logf("\n%s", res)
		b.ReportMetric(res.Sustainable, "sustainable-cmd/s")
		b.ReportMetric(load, "load1")
	})
}

// startDevForBench starts `strata dev` on free ports and a fresh schema, and returns it once ready,
// with the URL of its admin API.
func startDevForBench(b *testing.B) (target *bench.Target, admin string) {
	vars := startDev(b, nil)
	target = &bench.Target{CommandURL: "http://" + vars["COMMAND_ADDR"], QueryURL: "http://" + vars["QUERY_ADDR"], Client: bench.NewClient(1024)}
	return target, "http://" + vars["ADMIN_ADDR"]
}

// waitCaughtUp waits until every projection reports no lag on the admin API at admin.
func waitCaughtUp(b *testing.B, admin string) {
	require.Eventually(b, func() bool {
		resp, err := http.Get(admin + "/v1/projections")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Items []struct {
				LagEvents int64 `json:"lag_events"`
			} `json:"items"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Items) == 0 {
			return false
		}
		for _, p := range st.Items {
			if p.LagEvents > 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "the projections should catch up")
}

// pipelineDelays scrapes the relay's and the projectors' delay histograms from the query service's
// metrics (strata dev serves all from one registry), keyed "relay" and "projector <projection>".
func pipelineDelays(b *testing.B, target *bench.Target) map[string]bench.Histogram {
	url := target.QueryURL + "/metrics"
	projectors, err := bench.ScrapeHistograms(b.Context(), http.DefaultClient, url, "strata_projector_delay_seconds", "projection")
	require.NoError(b, err)
	relay, err := bench.ScrapeHistograms(b.Context(), http.DefaultClient, url, "strata_relay_delay_seconds", "")
	require.NoError(b, err)
	out := map[string]bench.Histogram{"relay": relay[""]}
	for p, h := range projectors {
		out["projector "+p] = h
	}
	return out
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func benchEnvFloat(b *testing.B, name string, def float64) float64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(b, err, name)
	return v
}

func benchEnvDuration(b *testing.B, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := time.ParseDuration(s)
	require.NoError(b, err, name)
	return v
}
