// Package bench is strata's load generator. It drives a running command service and query service
// over HTTP, the way clients do: every command is followed by a read carrying the command's
// consistency token, so each operation measures two things:
//
//   - command latency: from the moment the command was due to be sent until its acknowledgement;
//   - write-to-visible: from the acknowledgement until the query service answered the read with the
//     token (the projection has applied the write; the read itself is included).
//
// The load is open-loop: [Run] schedules commands by the clock at a fixed rate and does not wait for
// one to finish before sending the next, so a slow system cannot slow the load down and hide its own
// slowness (coordinated omission). Command latency is measured from the scheduled time, not from
// the actual send, so any delay in the generator itself counts against the system too.
//
// The commands are a mix of stock adjustments, renames and order placements on a set of products
// created beforehand ([Target.CreateProducts]). [Search] steps the rate up to find the highest one the
// system sustains. The same API serves the Go benchmarks (cmd/strata's BenchmarkEndToEnd) and
// `strata bench`.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-dev/strata/internal/consistency"
)

// HeaderConsistencyToken is the header commands answer with and reads carry.
const HeaderConsistencyToken = consistency.Header

// Target is a running strata: the base URLs of its command and query services, and the client that
// reaches them.
type Target struct {
	CommandURL string // such as http://127.0.0.1:8080
	QueryURL   string // such as http://127.0.0.1:8081
	// Client sends every request; nil uses [NewClient]. Set it before first use.
	Client *http.Client

	once sync.Once
}

// NewClient returns an HTTP client for load: connections are kept and reused (one per request in
// flight, up to maxConns idle ones per host), no compression, a 30 s overall timeout.
func NewClient(maxConns int) *http.Client {
	if maxConns <= 0 {
		maxConns = 1024
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        2 * maxConns,
			MaxIdleConnsPerHost: maxConns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

func (t *Target) client() *http.Client {
	t.once.Do(func() {
		if t.Client == nil {
			t.Client = NewClient(0)
		}
	})
	return t.Client
}

// Catalog is the set of products the load works on.
type Catalog struct {
	Products []string
}

// CreateProducts creates n products through the command service, 16 at a time, and reads each back
// with its token, so that all of them are visible when it returns.
func (t *Target) CreateProducts(ctx context.Context, n int) (*Catalog, error) {
	run := fmt.Sprintf("%08x", rand.Uint32())
	ids := make([]string, n)
	next := atomic.Int64{}
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errs <- nil
					return
				}
				body := fmt.Sprintf(`{"sku":"BENCH-%s-%d","name":"Bench product %d","description":"made by strata's load generator",`+
					`"category":%q,"price_cents":%d,"currency":"EUR","tags":["bench"]}`,
					run, i, i, []string{"kitchen", "garden", "books", "toys"}[i%4], 100+i%5000)
				id, token, status, err := t.post(ctx, "/v1/products", body)
				if err == nil && status != http.StatusCreated && status != http.StatusOK {
					err = fmt.Errorf("create product: status %d", status)
				}
				if err == nil {
					if status, err = t.get(ctx, "/v1/products/"+id, token); err == nil && status != http.StatusOK {
						err = fmt.Errorf("read created product: status %d", status)
					}
				}
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		}()
	}
	var first error
	for range 16 {
		if err := <-errs; err != nil && first == nil {
			first = err
			next.Store(int64(n)) // stop the others
		}
	}
	if first != nil {
		return nil, first
	}
	return &Catalog{Products: ids}, nil
}

// Mix weighs the kinds of command. The zero Mix is [DefaultMix].
type Mix struct {
	Stock  int // POST /v1/products/{id}/stock, read back with GET /v1/products/{id}
	Rename int // POST /v1/products/{id}/rename, read back with GET /v1/products/{id}
	Order  int // POST /v1/orders with 1 to 3 lines, read back with GET /v1/orders/{id}
}

// DefaultMix is half stock adjustments, a quarter renames and a quarter order placements.
var DefaultMix = Mix{Stock: 2, Rename: 1, Order: 1}

func (m Mix) total() int { return m.Stock + m.Rename + m.Order }

// Config is one paced run.
type Config struct {
	// Rate is the commands per second to schedule.
	Rate float64
	// Duration is how long the measured part of the run schedules commands.
	Duration time.Duration
	// Warmup schedules commands at the same rate before the measured part, without recording them.
	Warmup time.Duration
	// Mix of commands; zero is DefaultMix.
	Mix Mix
	// MaxInFlight bounds the operations under way at once (default 8192). When it is reached the
	// schedule is late; the lateness is counted in the command latency, which is measured from the
	// scheduled time.
	MaxInFlight int
}

// Latencies summarises a set of durations.
type Latencies struct {
	N                        int
	P50, P90, P99, P999, Max time.Duration
}

func (l Latencies) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), l.N)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// Result is what a run measured. Only operations scheduled after the warm-up count.
type Result struct {
	Rate     float64       // scheduled commands per second
	Duration time.Duration // measured part of the schedule
	// Scheduled is how many commands were due in the measured part; Commands how many of them were
	// acknowledged with a 2xx.
	Scheduled, Commands int
	// Achieved is acknowledged commands per second over the measured part, or over the time until the
	// last acknowledgement when that came later: a system that falls behind achieves less than Rate.
	Achieved float64
	// Command is the latency from each command's scheduled time to its acknowledgement.
	Command Latencies
	// Visible is write-to-visible: from the acknowledgement until the read with the token answered
	// 200.
	Visible Latencies
	// MaxLateness is the most a command was sent after its scheduled time (generator or in-flight
	// limit falling behind).
	MaxLateness time.Duration
	// Errors counts failed operations: a command or read that failed or answered otherwise than
	// expected (including 503 for a consistency wait that ran out). ErrorKinds breaks them down.
	Errors     int
	ErrorKinds map[string]int
	// Seconds is the run second by second (by scheduled time): a system that degrades as the run
	// goes on looks different from one that is slow throughout.
	Seconds []Second
	// HostCPU is the CPU time this machine spent from the start of the measured part until the last
	// operation finished; zero where unknown. With the system under test on this machine, its
	// utilisation tells how near saturation the latencies were measured, and Busy per command what
	// a command costs, a figure that a shared machine's noise disturbs much less than latencies.
	HostCPU HostCPU
}

// CPUPerCommand is the busy CPU time of HostCPU per acknowledged command; zero where unknown.
func (r Result) CPUPerCommand() time.Duration {
	if r.Commands == 0 {
		return 0
	}
	return r.HostCPU.Busy / time.Duration(r.Commands)
}

// Second is one second of a run: the commands due in it that were acknowledged, the operations that
// failed, and their write-to-visible.
type Second struct {
	Commands, Errors int
	Visible          Latencies
}

// Timeline formats Seconds, one line per second.
func (r Result) Timeline() string {
	var b strings.Builder
	for i, s := range r.Seconds {
		fmt.Fprintf(&b, "  %4ds  commands %5d  errors %5d  visible p50 %9s p99 %9s\n", i, s.Commands, s.Errors, ms(s.Visible.P50), ms(s.Visible.P99))
	}
	return b.String()
}

func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rate %.0f/s for %s: %d of %d commands acknowledged, achieved %.0f/s, %d errors\n",
		r.Rate, r.Duration, r.Commands, r.Scheduled, r.Achieved, r.Errors)
	fmt.Fprintf(&b, "  command          %s\n", r.Command)
	fmt.Fprintf(&b, "  write-to-visible %s\n", r.Visible)
	if r.HostCPU.Total > 0 {
		fmt.Fprintf(&b, "  this machine's CPU %.0f%% busy, %s per command\n", 100*r.HostCPU.Utilisation(), ms(r.CPUPerCommand()))
	}
	if r.MaxLateness > time.Millisecond {
		fmt.Fprintf(&b, "  generator was up to %s late\n", ms(r.MaxLateness))
	}
	for _, k := range slices.Sorted(maps.Keys(r.ErrorKinds)) {
		fmt.Fprintf(&b, "  error %s: %d\n", k, r.ErrorKinds[k])
	}
	return b.String()
}

// Run schedules commands at cfg.Rate for cfg.Warmup plus cfg.Duration, each followed by a read with
// its token, waits for the last one to finish, and returns what the measured part saw. It fails
// only on a configuration problem or when ctx ends.
func Run(ctx context.Context, t *Target, cat *Catalog, cfg Config) (Result, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return Result{}, errors.New("bench: rate and duration must be positive")
	}
	if cat == nil || len(cat.Products) == 0 {
		return Result{}, errors.New("bench: the catalog has no products")
	}
	if cfg.Mix.total() <= 0 {
		cfg.Mix = DefaultMix
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 8192
	}
	interval := float64(time.Second) / cfg.Rate
	warm := int(cfg.Warmup.Seconds() * cfg.Rate)
	total := warm + int(cfg.Duration.Seconds()*cfg.Rate)

	sem := make(chan struct{}, cfg.MaxInFlight)
	var wg sync.WaitGroup
	var lateness time.Duration
	start := time.Now().Add(5 * time.Millisecond)
	measured := start.Add(time.Duration(float64(warm) * interval))
	rec := &recorder{measured: measured, kinds: map[string]int{}, seconds: map[int]*second{}}
	var cpuStart HostCPU
	var cpuKnown bool
	for i := 0; i < total && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(float64(i) * interval))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if i == warm {
			cpuStart, cpuKnown = ReadHostCPU()
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if late := time.Since(due); late > lateness && i >= warm {
			lateness = late
		}
		record := i >= warm
		wg.Go(func() {
			defer func() { <-sem }()
			t.operation(ctx, cat, cfg.Mix, due, record, rec)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	res := rec.result(cfg, total-warm, lateness)
	if cpuEnd, ok := ReadHostCPU(); ok && cpuKnown {
		res.HostCPU = cpuEnd.Since(cpuStart)
	}
	return res, nil
}

// operation sends one command due at due and reads it back with its token.
func (t *Target) operation(ctx context.Context, cat *Catalog, mix Mix, due time.Time, record bool, rec *recorder) {
	p := cat.Products[rand.IntN(len(cat.Products))]
	var kind, path, body, read string
	switch n := rand.IntN(mix.total()); {
	case n < mix.Stock:
		kind, path, read = "stock", "/v1/products/"+p+"/stock", "/v1/products/"+p
		body = fmt.Sprintf(`{"delta":%d,"reason":"bench delivery"}`, 1+rand.IntN(10))
	case n < mix.Stock+mix.Rename:
		kind, path, read = "rename", "/v1/products/"+p+"/rename", "/v1/products/"+p
		body = fmt.Sprintf(`{"name":"Bench product %d"}`, rand.Uint32())
	default:
		kind, path = "order", "/v1/orders"
		var lines []string
		seen := map[string]bool{}
		for range 1 + rand.IntN(3) {
			q := cat.Products[rand.IntN(len(cat.Products))]
			if seen[q] {
				continue // an order names each product once
			}
			seen[q] = true
			lines = append(lines, fmt.Sprintf(`{"product_id":%q,"quantity":%d}`, q, 1+rand.IntN(3)))
		}
		body = fmt.Sprintf(`{"customer_id":"bench-%d","customer_name":"Ada","customer_email":"ada@example.com","lines":[%s]}`,
			rand.IntN(1000), strings.Join(lines, ","))
	}
	id, token, status, err := t.post(ctx, path, body)
	acked := time.Now()
	if err == nil && (status < 200 || status > 299) {
		err = fmt.Errorf("status %d", status)
	}
	if err != nil {
		if record {
			rec.fail(due, kind+" command", err)
		}
		return
	}
	if kind == "order" {
		read = "/v1/orders/" + id
	}
	status, err = t.get(ctx, read, token)
	visible := time.Now()
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	if !record {
		return
	}
	rec.command(due, acked)
	if err != nil {
		rec.fail(due, kind+" read", err)
		return
	}
	rec.visible(due, visible.Sub(acked))
}

// post sends a JSON command and returns the id it answers with and its consistency token.
func (t *Target) post(ctx context.Context, path, body string) (id, token string, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.CommandURL+path, strings.NewReader(body))
	if err != nil {
		return "", "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client().Do(req)
	if err != nil {
		return "", "", 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", resp.StatusCode, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		var out struct {
			ID string `json:"id"`
		}
		if err := json.NewDecoder(bytes.NewReader(data)).Decode(&out); err != nil {
			return "", "", resp.StatusCode, fmt.Errorf("decode answer: %w", err)
		}
		id = out.ID
	}
	return id, resp.Header.Get(HeaderConsistencyToken), resp.StatusCode, nil
}

// get reads path with the token and returns the status; the body is read and dropped.
func (t *Target) get(ctx context.Context, path, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.QueryURL+path, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set(HeaderConsistencyToken, token)
	}
	resp, err := t.client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}
