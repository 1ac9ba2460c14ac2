package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/strata-dev/strata/internal/platform"
)

// run builds the command tree and executes args. Everything a subcommand needs from the OS comes in
// through the parameters, so tests can call run.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// setup loads the configuration and logger for the subcommands that need them.
	setup := func() (config, *slog.Logger, error) {
		cfg, err := loadConfig(getenv)
		if err != nil {
			return config{}, nil, fmt.Errorf("configuration:\n%w", err)
		}
		log, err := platform.NewLogger(stdout, cfg.LogLevel)
		if err != nil {
			return config{}, nil, err
		}
		return cfg, log, nil
	}

	root := &cobra.Command{
		Use:           "strata",
		Short:         "strata: a CQRS and event-sourcing backend",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)

	// The services: each subcommand runs some of them until the process is told to stop.
	for _, sc := range []struct {
		use, short string
		services   []service
	}{
		{"dev", "Run every service in one process on embedded defaults", devServices},
		{"command", "Run the REST command service", []service{commandService}},
		{"relay", "Run the relay from the event store to NATS JetStream", []service{relayService}},
		{"projector", "Run the projectors that keep the read models", []service{projectorService}},
		{"query", "Run the REST query service", []service{queryService}},
		{"admin", "Run the admin API", []service{adminService}},
	} {
		root.AddCommand(&cobra.Command{
			Use: sc.use, Short: sc.short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, log, err := setup()
				if err != nil {
					return err
				}
				return runServices(ctx, cfg, log, sc.services...)
			},
		})
	}

	dlq := &cobra.Command{Use: "dlq", Short: "List, retry and skip events parked in the dead-letter store"}
	dlq.AddCommand(&cobra.Command{
		Use: "list", Short: "List parked events", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := setup()
			if err != nil {
				return err
			}
			return dlqList(ctx, cfg, stdout)
		},
	})
	for _, skip := range []bool{false, true} {
		use, short := "retry ID", "Apply a parked event and those waiting behind it again"
		if skip {
			use, short = "skip ID", "Drop a parked event and apply those waiting behind it"
		}
		dlq.AddCommand(&cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cfg, _, err := setup()
				if err != nil {
					return err
				}
				return dlqRelease(ctx, cfg, stdout, args[0], skip)
			},
		})
	}
	root.AddCommand(dlq)

	projectionsCmd := &cobra.Command{Use: "projections", Short: "Projection status"}
	projectionsCmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List projections with their checkpoint, lag and dead letters", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup()
			if err != nil {
				return err
			}
			return projectionsList(ctx, cfg, log, stdout)
		},
	})
	root.AddCommand(projectionsCmd)

	migrate := &cobra.Command{Use: "migrate", Short: "Schema and event migrations"}
	migrate.AddCommand(&cobra.Command{
		Use:   "schema",
		Short: "Create or update the PostgreSQL schemas, then exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup()
			if err != nil {
				return err
			}
			return migrateSchema(ctx, cfg, log)
		},
	})
	root.AddCommand(migrate)
	root.AddCommand(benchCommand(ctx, stdout))
	return root.ExecuteContext(ctx)
}
