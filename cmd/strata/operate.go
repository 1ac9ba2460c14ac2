package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-dev/strata/admin"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/projector"
)

// deadLetters opens the dead-letter store for the dlq verbs.
func deadLetters(ctx context.Context, cfg config) (*projector.DeadLetters, func(), error) {
	pool, err := platform.OpenPool(ctx, cfg.DatabaseURL, "strata-dlq", 2)
	if err != nil {
		return nil, nil, err
	}
	codec, err := events.NewCommerceCodec()
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	_, projections, err := searchEngine(cfg, pool)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return projector.NewDeadLetters(pool, codec, projections...), pool.Close, nil
}

func dlqList(ctx context.Context, cfg config, out io.Writer) error {
	dl, done, err := deadLetters(ctx, cfg)
	if err != nil {
		return err
	}
	defer done()
	list, err := dl.List(ctx, 1000)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROJECTION\tSTREAM\tVERSION\tTYPE\tSTATUS\tPARKED\tERROR")
	for _, d := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.ID, d.Projection, d.Stream, d.Version, d.EventType, d.Status,
			d.ParkedAt.Format("2006-01-02 15:04:05"), d.Error)
	}
	return tw.Flush()
}

func dlqRelease(ctx context.Context, cfg config, out io.Writer, arg string, skip bool) error {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return fmt.Errorf("dead letter id %q: want a number from `strata dlq list`", arg)
	}
	dl, done, err := deadLetters(ctx, cfg)
	if err != nil {
		return err
	}
	defer done()
	verb, do := "retried", dl.Retry
	if skip {
		verb, do = "skipped", dl.Skip
	}
	rel, err := do(ctx, id)
	if err != nil {
		return err
	}
	if rel.Parked != 0 {
		fmt.Fprintf(out, "dead letter %d %s (events applied: %d); dead letter %d, which waited behind it, cannot be decoded and now blocks the stream\n",
			id, verb, rel.Applied, rel.Parked)
		return nil
	}
	fmt.Fprintf(out, "dead letter %d %s (events applied: %d); its stream is released\n", id, verb, rel.Applied)
	return nil
}

// projectionsList prints every projection's status. With no NATS_URL it reads the embedded server
// of a running `strata dev` on NATS_EMBEDDED_PORT.
func projectionsList(ctx context.Context, cfg config, log *slog.Logger, out io.Writer) error {
	pool, err := platform.OpenPool(ctx, cfg.DatabaseURL, "strata-cli", 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	urls := cfg.NATSURLs
	if len(urls) == 0 {
		urls = []string{fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATSEmbeddedPort)}
	}
	nc, err := broker.Connect(ctx, broker.ConnectConfig{URLs: urls, Name: "strata-cli", CredsFile: cfg.NATSCreds,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey}, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, projections, err := searchEngine(cfg, pool)
	if err != nil {
		return err
	}
	st, err := admin.Status(ctx, pool, js, eventsStream(cfg), projections)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBACKEND\tSTATUS\tCHECKPOINT\tLAG EVENTS\tLAG SECONDS\tDEAD LETTERS\tVERSION")
	for _, s := range st {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.1f\t%d\t%d\n", s.Name, s.Backend, s.Status, s.Checkpoint, s.LagEvents, s.LagSeconds, s.DeadLetters, s.ActiveVersion)
	}
	return tw.Flush()
}
