// Package pglock holds the session-level PostgreSQL advisory locks strata uses to elect one owner:
// the relay's leader, each projection partition's consumer. A lock lives as long as the session that
// took it, so its holder keeps that session to itself and watches that it stays up.
package pglock

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Session is the connection a lock is taken on.
type Session interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// TryLock takes the lock named key in s's session without waiting, and returns its id for Unlock.
// Advisory locks belong to the whole database, but what they guard (a relay's checkpoint, a
// projection's read model) lives in the schema the search path names: the id is derived from the
// schema and key, so deployments in different schemas of one database do not exclude each other.
func TryLock(ctx context.Context, s Session, key string) (id int64, ok bool, err error) {
	err = s.QueryRow(ctx, `SELECT id, pg_try_advisory_lock(id)
		FROM (SELECT hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0) AS id) AS k`, key).Scan(&id, &ok)
	if err != nil {
		return 0, false, fmt.Errorf("advisory lock %s: %w", key, err)
	}
	return id, ok, nil
}

// Unlock releases the lock id taken with TryLock in s's session.
func Unlock(ctx context.Context, s Session, id int64) error {
	_, err := s.Exec(ctx, `SELECT pg_advisory_unlock($1)`, id)
	return err
}

// Watch pings the lock's session every second (each ping bounded by 3 s) until ctx ends, when it
// returns nil, or a ping fails: then the session, and with it every lock it held, may be gone, and
// Watch returns the ping's error.
func Watch(ctx context.Context, ping func(context.Context) error) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
}
