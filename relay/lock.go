package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// errLostLock ends a leadership whose lock connection failed: the lock may be someone else's now.
var errLostLock = errors.New("lost the leader lock")

// leadership is a held session-level advisory lock on a dedicated connection. Its ctx ends when the
// connection fails, because PostgreSQL releases the lock with the session.
type leadership struct {
	conn   *pgxpool.Conn
	id     int64 // the advisory lock's key
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
}

// acquire blocks until this relay holds the leader lock or ctx ends.
func (r *Relay) acquire(ctx context.Context) (*leadership, error) {
	key := "strata.relay:" + r.cfg.Name
	waiting := false
	for {
		conn, err := r.pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("leader lock: %w", err)
		}
		// Advisory locks belong to the whole database, but a relay's checkpoint and event store live in
		// the schema its search path names: relays of different schemas must not exclude each other.
		var (
			id  int64
			got bool
		)
		if err := conn.QueryRow(ctx, `SELECT id, pg_try_advisory_lock(id)
			FROM (SELECT hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0) AS id) AS k`, key).Scan(&id, &got); err != nil {
			conn.Release()
			return nil, fmt.Errorf("leader lock: %w", err)
		}
		if got {
			l := &leadership{conn: conn, id: id}
			l.ctx, l.cancel = context.WithCancelCause(ctx)
			l.wg.Go(l.watch)
			r.log.Info("became leader")
			return l, nil
		}
		conn.Release()
		if !waiting {
			waiting = true
			r.log.Info("standing by: another relay is the leader")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(r.cfg.StandbyPoll):
		}
	}
}

// watch ends the leadership when the lock's connection stops answering.
func (l *leadership) watch() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(l.ctx, 3*time.Second)
		err := l.conn.Ping(ctx)
		cancel()
		if err != nil && l.ctx.Err() == nil {
			l.cancel(fmt.Errorf("%w: %v", errLostLock, err))
			return
		}
	}
}

// release unlocks and returns the connection, or closes it if unlocking fails, which releases the
// lock too.
func (l *leadership) release() {
	l.cancel(nil)
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, l.id); err != nil {
		_ = l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
}
