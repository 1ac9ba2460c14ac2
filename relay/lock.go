package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/internal/pglock"
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
		id, got, err := pglock.TryLock(ctx, conn, key)
		if err != nil {
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
	if err := pglock.Watch(l.ctx, l.conn.Ping); err != nil {
		l.cancel(fmt.Errorf("%w: %v", errLostLock, err))
	}
}

// release unlocks and returns the connection, or closes it if unlocking fails, which releases the
// lock too.
func (l *leadership) release() {
	l.cancel(nil)
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := pglock.Unlock(ctx, l.conn, l.id); err != nil {
		_ = l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
}
