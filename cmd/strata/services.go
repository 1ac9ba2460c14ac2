package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/strata-dev/strata/admin"
	"github.com/strata-dev/strata/command"
	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/esdb"
	"github.com/strata-dev/strata/eventstore/postgres"
	"github.com/strata-dev/strata/internal/broker"
	"github.com/strata-dev/strata/internal/platform"
	"github.com/strata-dev/strata/migrations"
	"github.com/strata-dev/strata/projector"
	readmodel "github.com/strata-dev/strata/projector/postgres"
	"github.com/strata-dev/strata/query"
	"github.com/strata-dev/strata/relay"
	"github.com/strata-dev/strata/search"
	"github.com/strata-dev/strata/search/elasticsearch"
	searchpg "github.com/strata-dev/strata/search/postgres"
)

// deps are the resources services share within one process.
type deps struct {
	cfg      config
	log      *slog.Logger
	pool     *pgxpool.Pool
	store    eventstore.Store // nil unless a service needs the event store
	codec    *events.Codec
	registry *prometheus.Registry
	nc       *nats.Conn // nil unless a service needs NATS
	search   search.Index
	// projections are every read model this deployment keeps, search models included.
	projections []projector.Projection
}

// service is one of strata's services: start runs its loops on g and returns once it is listening.
type service struct {
	name       string
	needsStore bool
	needsNATS  bool
	start      func(ctx context.Context, g *errgroup.Group, d deps) error
}

var (
	commandService   = service{name: "command", needsStore: true, start: startCommand}
	relayService     = service{name: "relay", needsStore: true, needsNATS: true, start: startRelay}
	projectorService = service{name: "projector", needsNATS: true, start: startProjectors}
	adminService     = service{name: "admin", needsNATS: true, start: startAdmin}
	queryService     = service{name: "query", start: startQuery}
)

// searchEngine opens the search engine ELASTICSEARCH_URL chooses (PostgreSQL full-text search when it
// is empty) and returns it with every projection this deployment keeps: the PostgreSQL read models
// and the search models. It performs no I/O: Elasticsearch's indices are set up by setupSearch.
//
// PostgreSQL's search models live in the read models' database, so the products and orders
// projections keep them in their own transactions: one commit per batch instead of two, and a
// search is exactly as fresh as the read model.
func searchEngine(cfg config, pool *pgxpool.Pool) (search.Index, []projector.Projection, error) {
	projections := []projector.Projection{readmodel.Products{}, readmodel.Orders{}}
	if len(cfg.ElasticsearchURLs) == 0 {
		products, err := projector.Combine(readmodel.Products{}.Name(), readmodel.Products{}, searchpg.Products{})
		if err != nil {
			return nil, nil, err
		}
		orders, err := projector.Combine(readmodel.Orders{}.Name(), readmodel.Orders{}, searchpg.Orders{})
		if err != nil {
			return nil, nil, err
		}
		return searchpg.New(pool).KeptBy(products.Name(), orders.Name()), []projector.Projection{products, orders}, nil
	}
	idx, err := elasticsearch.New(elasticsearch.Options{URLs: cfg.ElasticsearchURLs, Prefix: cfg.ElasticsearchPrefix})
	if err != nil {
		return nil, nil, err
	}
	return idx, append(projections, idx.Products(), idx.Orders()), nil
}

// setupSearch creates what the search engine needs before the first write or search: Elasticsearch's
// index templates, indices and aliases (PostgreSQL's tables come with the migrations). The services
// that write or search call it; it is idempotent, so in strata dev the second call costs a request.
func setupSearch(ctx context.Context, idx search.Index) error {
	if es, ok := idx.(*elasticsearch.Index); ok {
		if err := es.Setup(ctx); err != nil {
			return fmt.Errorf("set up Elasticsearch: %w", err)
		}
	}
	return nil
}

// runServices opens the shared resources, starts every service, and waits until ctx ends or one of
// them fails.
func runServices(ctx context.Context, cfg config, log *slog.Logger, services ...service) error {
	// pgx defaults to four connections on a small machine; one process here runs several services.
	pool, storePool, closePools, err := openPools(ctx, cfg, "strata", 32)
	if err != nil {
		return err
	}
	defer closePools()
	if cfg.AutoMigrate {
		if err := applyMigrations(ctx, pool, storePool); err != nil {
			return err
		}
	}
	codec, err := events.NewCommerceCodec()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	idx, projections, err := searchEngine(cfg, pool)
	if err != nil {
		return err
	}
	d := deps{cfg: cfg, log: log, pool: pool, codec: codec, registry: reg, search: idx, projections: projections}
	// Only the command service and the relay use the event store: the read side starts, and keeps
	// serving, while EventStoreDB is down.
	if slices.ContainsFunc(services, func(s service) bool { return s.needsStore }) {
		store, err := openStore(ctx, cfg, storePool, log)
		if err != nil {
			return err
		}
		defer store.Close()
		d.store = store
	}
	if slices.ContainsFunc(services, func(s service) bool { return s.needsNATS }) {
		nc, shutdown, err := openNATS(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer shutdown()
		d.nc = nc
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range services {
		if err := s.start(gctx, g, d); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return g.Wait()
}

// openNATS connects to NATS_URL, or starts the embedded server when it is empty, and provisions
// the events stream. shutdown closes the connection, then stops the embedded server.
func openNATS(ctx context.Context, cfg config, log *slog.Logger) (nc *nats.Conn, shutdown func(), err error) {
	urls := cfg.NATSURLs
	stopServer := func() {}
	var inProcess nats.InProcessConnProvider
	if len(urls) == 0 {
		ns, err := broker.StartEmbedded(broker.EmbeddedConfig{
			StoreDir:     filepath.Join(cfg.DataDir, "nats"),
			Port:         cfg.NATSEmbeddedPort,
			ServerName:   "strata-embedded",
			SyncInterval: cfg.NATSSyncInterval,
			SyncAlways:   cfg.NATSSyncAlways,
		}, log)
		if err != nil {
			return nil, nil, err
		}
		stopServer = ns.Shutdown
		urls = []string{ns.ClientURL()} // for other processes; this one connects in memory
		inProcess = ns.Server
		log.Info("listening", "service", "nats (embedded)", "addr", ns.ClientURL(), "store", filepath.Join(cfg.DataDir, "nats"))
	}
	nc, err = broker.Connect(ctx, broker.ConnectConfig{
		URLs: urls, Name: "strata", CredsFile: cfg.NATSCreds,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey, InProcess: inProcess,
	}, log.With("component", "nats"))
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = broker.EnsureStream(ctx, js, broker.StreamConfig{
			Name: cfg.NATSStream, SubjectPrefix: cfg.NATSSubjectPrefix, Replicas: cfg.NATSReplicas,
			Duplicates: cfg.NATSDuplicates, MaxAge: cfg.NATSMaxAge, MaxBytes: cfg.NATSMaxBytes,
			Partitions: cfg.NATSPartitions,
		})
	}
	if err != nil {
		nc.Close()
		stopServer()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); stopServer() }, nil
}

// cacheSize is the command service's CacheSize for COMMAND_CACHE_SIZE, where 0 disables the cache.
func cacheSize(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// startCommand runs the REST command service and the purge of old idempotency keys.
func startCommand(ctx context.Context, g *errgroup.Group, d deps) error {
	svc := command.NewService(d.store, d.codec, command.NewPostgresSKUs(d.pool), command.Options{
		Logger: d.log.With("service", "command"), Registerer: d.registry, CacheSize: cacheSize(d.cfg.CommandCache),
	})
	idem := command.NewIdempotency(d.pool)
	h := command.NewHandler(svc, idem, command.HandlerOptions{
		MaxBodyBytes: d.cfg.MaxBodyBytes,
		Logger:       d.log.With("service", "command"),
		Registry:     d.registry,
		Ready:        []platform.Check{{Name: "database", Run: d.pool.Ping}},
	})
	if err := listen(ctx, g, d, "command", d.cfg.CommandAddr, h); err != nil {
		return err
	}
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

// startRelay runs the relay, and a listener for its health and metrics.
func startRelay(ctx context.Context, g *errgroup.Group, d deps) error {
	r, err := relay.New(d.store, d.pool, d.nc, relay.Config{
		Stream: d.cfg.NATSStream, SubjectPrefix: d.cfg.NATSSubjectPrefix, MaxInFlight: d.cfg.RelayMaxInFlight,
	}, d.log, d.registry)
	if err != nil {
		return err
	}
	router := mux.NewRouter()
	platform.HandleHealth(router, d.registry,
		platform.Check{Name: "database", Run: d.pool.Ping},
		platform.Check{Name: "nats", Run: func(context.Context) error {
			if !d.nc.IsConnected() {
				return fmt.Errorf("nats %s", d.nc.Status())
			}
			return nil
		}})
	if err := listen(ctx, g, d, "relay", d.cfg.RelayAddr, router); err != nil {
		return err
	}
	g.Go(func() error { return r.Run(ctx) })
	return nil
}

// eventsStream is the projector configuration of the events stream: its name, subjects and partitions.
func eventsStream(cfg config) projector.Config {
	return projector.Config{Stream: cfg.NATSStream, SubjectPrefix: cfg.NATSSubjectPrefix, Partitions: cfg.NATSPartitions}
}

// startProjectors runs every projection.
func startProjectors(ctx context.Context, g *errgroup.Group, d deps) error {
	if err := setupSearch(ctx, d.search); err != nil {
		return err
	}
	for _, p := range d.projections {
		cfg := eventsStream(d.cfg)
		cfg.MaxPartitions = d.cfg.ProjectorMaxPartitions
		r, err := projector.NewRunner(d.pool, d.nc, d.codec, p, cfg, d.log, d.registry)
		if err != nil {
			return err
		}
		g.Go(func() error { return r.Run(ctx) })
	}
	d.log.Info("projecting", "service", "projector", "projections", len(d.projections), "search", d.search.Engine(), "partitions", d.cfg.NATSPartitions)
	return nil
}

// startQuery runs the query service and its listener for projector progress.
func startQuery(ctx context.Context, g *errgroup.Group, d deps) error {
	if err := setupSearch(ctx, d.search); err != nil {
		return err
	}
	waiter := query.NewWaiter(d.pool, d.log.With("service", "query"))
	g.Go(func() error { return waiter.Run(ctx) })
	h := query.NewHandler(d.pool, waiter, query.HandlerOptions{Logger: d.log.With("service", "query"), Registry: d.registry, Search: d.search})
	return listen(ctx, g, d, "query", d.cfg.QueryAddr, h)
}

// startAdmin runs the admin API.
func startAdmin(ctx context.Context, g *errgroup.Group, d deps) error {
	js, err := jetstream.New(d.nc)
	if err != nil {
		return err
	}
	h := admin.NewHandler(d.pool, js, projector.NewDeadLetters(d.pool, d.codec, d.projections...), admin.Options{
		Projections: d.projections, Events: eventsStream(d.cfg),
		Logger: d.log.With("service", "admin"), Registry: d.registry,
		Ready: []platform.Check{{Name: "database", Run: d.pool.Ping}},
	})
	return listen(ctx, g, d, "admin", d.cfg.AdminAddr, h)
}

// listen serves h on addr until ctx ends, logging one line when it is ready.
func listen(ctx context.Context, g *errgroup.Group, d deps, name, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	d.log.Info("listening", "service", name, "addr", ln.Addr().String())
	g.Go(func() error { return platform.Serve(ctx, platform.NewServer(h, d.log), ln, d.cfg.ShutdownGrace) })
	return nil
}

// runDev runs every service in one process, with the embedded NATS server unless NATS_URL is set.
func runDev(ctx context.Context, cfg config, log *slog.Logger) error {
	return runServices(ctx, cfg, log, devServices...)
}

// devServices are every service, in the order strata dev starts them.
var devServices = []service{commandService, relayService, projectorService, queryService, adminService}

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

// openPools opens DATABASE_URL's pool and the PostgreSQL event store's, which is the same pool
// unless EVENTSTORE_URL names another database, and nil when the event store is EventStoreDB.
func openPools(ctx context.Context, cfg config, name string, maxConns int32) (pool, storePool *pgxpool.Pool, closeAll func(), err error) {
	pool, err = platform.OpenPool(ctx, cfg.DatabaseURL, name, maxConns)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg.eventStoreIsESDB() {
		return pool, nil, pool.Close, nil
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

// openStore opens the event store EVENTSTORE_URL names: EventStoreDB, or PostgreSQL on storePool.
func openStore(ctx context.Context, cfg config, storePool *pgxpool.Pool, log *slog.Logger) (eventstore.Store, error) {
	if !cfg.eventStoreIsESDB() {
		return postgres.New(storePool, postgres.Options{Logger: log}), nil
	}
	// Open waits for the server; give it a bound so that a wrong URL fails the start-up clearly.
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := esdb.Open(octx, cfg.EventStoreURL, esdb.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	return s, nil
}

// applyMigrations brings the event store schema (in the event store's database) and the command
// service's tables (in DATABASE_URL's) up to date.
func applyMigrations(ctx context.Context, pool, storePool *pgxpool.Pool) error {
	if storePool != nil {
		if err := postgres.Migrate(ctx, storePool); err != nil {
			return err
		}
	}
	return migrations.Apply(ctx, pool, migrations.Command, migrations.Relay, migrations.ReadModel)
}
