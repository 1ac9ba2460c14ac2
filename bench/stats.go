package bench

import (
	"errors"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// recorder collects one run's measurements. It keeps every sample (a 30 s run at 1,000/s is 30,000
// of each), so percentiles are exact.
type recorder struct {
	measured  time.Time // start of the measured part
	mu        sync.Mutex
	commands  []time.Duration
	visibles  []time.Duration
	lastAck   time.Time
	errors    int
	kinds     map[string]int
	succeeded int
	seconds   map[int]*second
}

// second is what the operations due in one second of the measured part saw.
type second struct {
	commands, errors int
	visibles         []time.Duration
}

func (r *recorder) at(due time.Time) *second {
	i := int(due.Sub(r.measured) / time.Second)
	s, ok := r.seconds[i]
	if !ok {
		s = &second{}
		r.seconds[i] = s
	}
	return s
}

func (r *recorder) command(due time.Time, acked time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commands = append(r.commands, acked.Sub(due))
	r.succeeded++
	r.at(due).commands++
	if acked.After(r.lastAck) {
		r.lastAck = acked
	}
}

func (r *recorder) visible(due time.Time, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.visibles = append(r.visibles, d)
	s := r.at(due)
	s.visibles = append(s.visibles, d)
}

func (r *recorder) fail(due time.Time, what string, err error) {
	// A url.Error names the URL, which names an entity: keep only the cause, so kinds stay few.
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors++
	r.kinds[what+": "+err.Error()]++
	r.at(due).errors++
}

func (r *recorder) result(cfg Config, scheduled int, lateness time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	window := cfg.Duration
	if d := r.lastAck.Sub(r.measured); d > window {
		window = d
	}
	res := Result{
		Rate: cfg.Rate, Duration: cfg.Duration,
		Scheduled: scheduled, Commands: r.succeeded,
		Achieved:    float64(r.succeeded) / window.Seconds(),
		Command:     Summarise(r.commands),
		Visible:     Summarise(r.visibles),
		MaxLateness: lateness,
		Errors:      r.errors, ErrorKinds: r.kinds,
	}
	for i := range int(cfg.Duration.Seconds() + 0.5) {
		s := r.seconds[i]
		if s == nil {
			s = &second{}
		}
		res.Seconds = append(res.Seconds, Second{Commands: s.commands, Errors: s.errors, Visible: Summarise(s.visibles)})
	}
	return res
}

// Summarise returns the percentiles of ds (nearest rank). It sorts ds.
func Summarise(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	slices.Sort(ds)
	return Latencies{N: len(ds), P50: Percentile(ds, 50), P90: Percentile(ds, 90), P99: Percentile(ds, 99),
		P999: Percentile(ds, 99.9), Max: ds[len(ds)-1]}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the nearest-rank method: the
// smallest sample that at least p percent of the samples do not exceed.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(sorted))/100 - 1e-9)) // the epsilon absorbs float error
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// LoadAverage returns the machine's one-minute load average (Linux /proc/loadavg), to report beside
// figures measured on a shared machine; ok is false where it cannot be read.
func LoadAverage() (load float64, ok bool) {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0, false
	}
	load, err = strconv.ParseFloat(fields[0], 64)
	return load, err == nil
}
