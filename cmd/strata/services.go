package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/strata-dev/strata/command"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/migrations"
)

// deps are the resources services share within one process.
type deps struct {
	cfg      config
	log      *slog.Logger
	pool     *pgxpool.Pool
	store    eventstore.Store
	codec    *events.Codec
	registry *prometheus.Registry
}

// service starts one service's loops on g. It returns once the service is listening.
type service func(ctx context.Context, g *errgroup.Group, d deps) error

// runServices opens the shared resources, starts every service, and waits until ctx ends or one of
// them fails.
func runServices(ctx context.Context, cfg config, log *slog.Logger, services ...service) error {
	pool, storePool, closePools, err := openPools(ctx, cfg, "strata", 0)
	if err != nil {
		return err
	}
	defer closePools()
	if cfg.AutoMigrate {
		if err := applyMigrations(ctx, pool, storePool); err != nil {
			return err
		}
	}
	store := postgres.New(storePool, postgres.Options{Logger: log})
	defer store.Close()
	codec, err := events.NewCommerceCodec()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	d := deps{cfg: cfg, log: log, pool: pool, store: store, codec: codec, registry: reg}
	g, gctx := errgroup.WithContext(ctx)
	for _, start := range services {
		if err := start(gctx, g, d); err != nil {
			return err
		}
	}
	return g.Wait()
}

// commandService runs the REST command service and the purge of old idempotency keys.
func commandService(ctx context.Context, g *errgroup.Group, d deps) error {
	svc := command.NewService(d.store, d.codec, command.NewPostgresSKUs(d.pool), command.Options{
		Logger: d.log.With("service", "command"), Registerer: d.registry,
	})
	idem := command.NewIdempotency(d.pool)
	h := command.NewHandler(svc, idem, command.HandlerOptions{
		MaxBodyBytes: d.cfg.MaxBodyBytes,
		Logger:       d.log.With("service", "command"),
		Registry:     d.registry,
		Ready:        []platform.Check{{Name: "database", Run: d.pool.Ping}},
	})
	ln, err := net.Listen("tcp", d.cfg.CommandAddr)
	if err != nil {
		return fmt.Errorf("command service: %w", err)
	}
	d.log.Info("listening", "service", "command", "addr", ln.Addr().String())
	g.Go(func() error {
		return platform.Serve(ctx, platform.NewServer(h, d.log), ln, d.cfg.ShutdownGrace)
	})
	g.Go(func() error {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if n, err := idem.Purge(ctx, d.cfg.IdempotencyTTL); err != nil && ctx.Err() == nil {
				d.log.Warn("purge idempotency keys", "err", err)
			} else if n > 0 {
				d.log.Info("purged idempotency keys", "count", n)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return nil
}

// runDev runs every service in one process. Later services (relay, projectors, query, admin) join
// here as they are built.
func runDev(ctx context.Context, cfg config, log *slog.Logger) error {
	return runServices(ctx, cfg, log, commandService)
}

// migrateSchema applies every schema migration and exits.
func migrateSchema(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, storePool, closePools, err := openPools(ctx, cfg, "strata-migrate", 2)
	if err != nil {
		return err
	}
	defer closePools()
	if err := applyMigrations(ctx, pool, storePool); err != nil {
		return err
	}
	log.Info("schema up to date")
	return nil
}

// openPools opens DATABASE_URL's pool and the event store's, which is the same pool unless
// EVENTSTORE_URL names another database.
func openPools(ctx context.Context, cfg config, name string, maxConns int32) (pool, storePool *pgxpool.Pool, closeAll func(), err error) {
	pool, err = platform.OpenPool(ctx, cfg.DatabaseURL, name, maxConns)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg.EventStoreURL == cfg.DatabaseURL {
		return pool, pool, pool.Close, nil
	}
	storePool, err = platform.OpenPool(ctx, cfg.EventStoreURL, name+"-eventstore", maxConns)
	if err != nil {
		pool.Close()
		return nil, nil, nil, fmt.Errorf("event store: %w", err)
	}
	return pool, storePool, func() { storePool.Close(); pool.Close() }, nil
}

// applyMigrations brings the event store schema (in the event store's database) and the command
// service's tables (in DATABASE_URL's) up to date.
func applyMigrations(ctx context.Context, pool, storePool *pgxpool.Pool) error {
	if err := postgres.Migrate(ctx, storePool); err != nil {
		return err
	}
	return migrations.Apply(ctx, pool, migrations.Command)
}
