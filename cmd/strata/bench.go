package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dev/strata/bench"
)

// benchCommand is `strata bench`: paced, open-loop command load against a running strata (package
// bench), every command read back with its consistency token. It needs no configuration of its own
// beyond its flags: it talks to the services over HTTP only.
func benchCommand(ctx context.Context, stdout io.Writer) *cobra.Command {
	var (
		commandURL, queryURL string
		rate                 float64
		duration, warmup     time.Duration
		products             int
		search               bool
		rates                []float64
		step                 time.Duration
		maxVisibleP99        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Drive a running strata with paced commands, read each back with its token, report latencies",
		Long: `bench creates a set of products, then schedules commands (stock adjustments, renames, order
placements) at a fixed rate, open-loop: commands are sent when they are due whether or not earlier
ones have finished, and command latency is measured from the time each was due. Every command is
followed by a read with its Consistency-Token; write-to-visible is the time from the command's
acknowledgement until that read answers.

With --search it instead steps through --rates, --step each, and reports the highest rate at which
no operation failed, write-to-visible p99 stayed within --max-visible-p99, and the achieved rate
kept up with the schedule.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			target := &bench.Target{CommandURL: commandURL, QueryURL: queryURL, Client: bench.NewClient(1024)}
			if load, ok := bench.LoadAverage(); ok {
				fmt.Fprintf(stdout, "load average before the run: %.2f\n", load)
			}
			fmt.Fprintf(stdout, "creating %d products...\n", products)
			cat, err := target.CreateProducts(ctx, products)
			if err != nil {
				return err
			}
			if search {
				res, err := bench.Search(ctx, target, cat, bench.SearchConfig{Rates: rates, Step: step, MaxVisibleP99: maxVisibleP99})
				fmt.Fprint(stdout, res)
				return err
			}
			res, err := bench.Run(ctx, target, cat, bench.Config{Rate: rate, Duration: duration, Warmup: warmup})
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, res)
			fmt.Fprintf(stdout, "second by second:\n%s", res.Timeline())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&commandURL, "command-url", "http://127.0.0.1:8080", "base URL of the command service")
	f.StringVar(&queryURL, "query-url", "http://127.0.0.1:8081", "base URL of the query service")
	f.Float64Var(&rate, "rate", 1000, "commands per second")
	f.DurationVar(&duration, "duration", 30*time.Second, "measured duration")
	f.DurationVar(&warmup, "warmup", 2*time.Second, "unrecorded load at the same rate before the measured part")
	f.IntVar(&products, "products", 1000, "products to create and work on")
	f.BoolVar(&search, "search", false, "search for the highest sustainable rate instead")
	f.Float64SliceVar(&rates, "rates", bench.DefaultRates, "rates --search tries, in order")
	f.DurationVar(&step, "step", 5*time.Second, "how long --search measures each rate")
	f.DurationVar(&maxVisibleP99, "max-visible-p99", 50*time.Millisecond, "highest write-to-visible p99 a sustainable rate may have")
	return cmd
}
