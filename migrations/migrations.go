// Package migrations embeds strata's PostgreSQL schemas in tern format ("---- create above / drop below
// ----") and applies them. Each [Set] has its own version table, so the event store, the command
// service's tables and the read models can live in one database or in separate ones. Never edit a
// shipped migration: add a new file.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed eventstore/*.sql command/*.sql relay/*.sql readmodel/*.sql
var files embed.FS

// Set is one independently versioned group of migrations.
type Set struct {
	// Name is the folder the set's files live in.
	Name string
	// VersionTable records how far the set has been applied. It is unqualified on purpose: it lives in
	// the first schema of the connection's search_path, beside the tables it versions.
	VersionTable string
}

// EventStore is the schema of the PostgreSQL event store (eventstore/postgres).
var EventStore = Set{Name: "eventstore", VersionTable: "strata_eventstore_version"}

// Command is the schema of the command service's own tables: idempotency keys and unique SKUs.
var Command = Set{Name: "command", VersionTable: "strata_command_version"}

// Relay is the schema of the relay's checkpoint.
var Relay = Set{Name: "relay", VersionTable: "strata_relay_version"}

// ReadModel is the schema of the PostgreSQL read models, the projections' bookkeeping (version
// guard, checkpoints, dead letters), which projectors write and the query service reads.
var ReadModel = Set{Name: "readmodel", VersionTable: "strata_readmodel_version"}

// Apply migrates the database behind pool to the newest version of each set. It is safe to call from
// several processes at once: tern serialises migrators with an advisory lock.
func Apply(ctx context.Context, pool *pgxpool.Pool, sets ...Set) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()
	for _, set := range sets {
		sub, err := fs.Sub(files, set.Name)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", set.Name, err)
		}
		m, err := migrate.NewMigrator(ctx, conn.Conn(), set.VersionTable)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", set.Name, err)
		}
		if err := m.LoadMigrations(sub); err != nil {
			return fmt.Errorf("migrate %s: load: %w", set.Name, err)
		}
		if err := m.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate %s: %w", set.Name, err)
		}
	}
	return nil
}
