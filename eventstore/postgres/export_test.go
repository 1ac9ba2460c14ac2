package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/eventstore"
)

// AppendInTx runs the append statement inside tx, which the caller commits or rolls back, so that
// tests can hold appends open and choose their commit order. It must be tx's first statement.
func AppendInTx(ctx context.Context, tx pgx.Tx, stream string, evs []eventstore.EventData) error {
	args, err := appendArgs(stream, eventstore.Any, evs)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, appendStatement(evs), args...)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}
