package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// SearchConfig is a search for the highest sustainable rate.
type SearchConfig struct {
	// Rates to try, in increasing order. Default [DefaultRates].
	Rates []float64
	// Step is how long each rate is measured (default 5 s), after Warmup (default 1 s).
	Step, Warmup time.Duration
	// Pause between steps, so that one step's tail does not load the next (default 1 s).
	Pause time.Duration
	// A rate holds when no operation failed, write-to-visible p99 is at most MaxVisibleP99 (default
	// 50 ms), and the achieved rate is at least MinAchieved (default 0.95) of the rate.
	MaxVisibleP99 time.Duration
	MinAchieved   float64
	// Mix and MaxInFlight are as in [Config].
	Mix         Mix
	MaxInFlight int
}

// DefaultRates are the rates [Search] tries unless told otherwise: about 1.5x apart, so that the
// answer is within a third of the true limit.
var DefaultRates = []float64{250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000}

// Step is one rate tried by [Search].
type Step struct {
	Result
	Held bool
	Why  string // why it did not hold
}

// SearchResult is what [Search] found.
type SearchResult struct {
	// Sustainable is the highest rate that held, every lower rate tried having held too; 0 if the
	// first did not.
	Sustainable float64
	Steps       []Step
}

func (s SearchResult) String() string {
	var b strings.Builder
	for _, st := range s.Steps {
		verdict := "held"
		if !st.Held {
			verdict = "did not hold: " + st.Why
		}
		cpu := "CPU  ?"
		if st.HostCPU.Total > 0 {
			cpu = fmt.Sprintf("CPU %3.0f%% busy", 100*st.HostCPU.Utilisation())
		}
		fmt.Fprintf(&b, "%8.0f/s  achieved %8.0f/s  command p50 %9s p99 %9s  visible p50 %9s p99 %9s  errors %d  %s  %s\n",
			st.Rate, st.Achieved, ms(st.Command.P50), ms(st.Command.P99), ms(st.Visible.P50), ms(st.Visible.P99), st.Errors, cpu, verdict)
	}
	fmt.Fprintf(&b, "highest sustainable rate: %.0f commands/s\n", s.Sustainable)
	return b.String()
}

// Search runs short paced runs at increasing rates and stops at the first that does not hold.
func Search(ctx context.Context, t *Target, cat *Catalog, cfg SearchConfig) (SearchResult, error) {
	if len(cfg.Rates) == 0 {
		cfg.Rates = DefaultRates
	}
	if cfg.Step <= 0 {
		cfg.Step = 5 * time.Second
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = time.Second
	}
	if cfg.Pause <= 0 {
		cfg.Pause = time.Second
	}
	if cfg.MaxVisibleP99 <= 0 {
		cfg.MaxVisibleP99 = 50 * time.Millisecond
	}
	if cfg.MinAchieved <= 0 {
		cfg.MinAchieved = 0.95
	}
	var out SearchResult
	for i, rate := range cfg.Rates {
		if i > 0 {
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(cfg.Pause):
			}
		}
		res, err := Run(ctx, t, cat, Config{Rate: rate, Duration: cfg.Step, Warmup: cfg.Warmup, Mix: cfg.Mix, MaxInFlight: cfg.MaxInFlight})
		if err != nil {
			return out, err
		}
		st := Step{Result: res, Held: true}
		switch {
		case res.Errors > 0:
			st.Held, st.Why = false, fmt.Sprintf("%d errors", res.Errors)
		case res.Visible.P99 > cfg.MaxVisibleP99:
			st.Held, st.Why = false, fmt.Sprintf("write-to-visible p99 %s > %s", ms(res.Visible.P99), ms(cfg.MaxVisibleP99))
		case res.Achieved < cfg.MinAchieved*rate:
			st.Held, st.Why = false, fmt.Sprintf("achieved %.0f/s < %.0f%% of the rate", res.Achieved, 100*cfg.MinAchieved)
		}
		out.Steps = append(out.Steps, st)
		if !st.Held {
			break
		}
		out.Sustainable = rate
	}
	return out, nil
}
