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

	root.AddCommand(&cobra.Command{
		Use:   "dev",
		Short: "Run every service in one process on embedded defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup()
			if err != nil {
				return err
			}
			return runDev(ctx, cfg, log)
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "command",
		Short: "Run the REST command service",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup()
			if err != nil {
				return err
			}
			return runServices(ctx, cfg, log, commandService)
		},
	})

	root.AddCommand(&cobra.Command{
		Use:   "relay",
		Short: "Run the relay from the event store to NATS JetStream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup()
			if err != nil {
				return err
			}
			return runServices(ctx, cfg, log, relayService)
		},
	})

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
	return root.ExecuteContext(ctx)
}
