package projector

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestLostDatabaseTellsOutagesFromPoison: a failure of PostgreSQL itself must not count as an
// attempt of the event (that would park healthy events during a restart or a failover), and a
// failure of the event must. (Runner.outage also pings the database before excusing an attempt.)
func TestLostDatabaseTellsOutagesFromPoison(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("apply 12 events: %w", err) }
	outages := map[string]error{
		"connection lost":    wrap(io.ErrUnexpectedEOF),
		"connection reset":   wrap(&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}),
		"backend terminated": wrap(&pgconn.PgError{Code: "57P01"}),
		"server crashed":     wrap(&pgconn.PgError{Code: "57P02"}),
		"server starting":    wrap(&pgconn.PgError{Code: "57P03"}),
		"standby after fail": wrap(&pgconn.PgError{Code: "25006"}),
		"too many conns":     wrap(&pgconn.PgError{Code: "53300"}),
		"connection failure": wrap(&pgconn.PgError{Code: "08006"}),
		"connect refused":    wrap(&pgconn.ConnectError{}),
	}
	for name, err := range outages {
		require.True(t, lostDatabase(err), name)
	}
	poison := map[string]error{
		"projection bug":   wrap(errors.New("poison in product-1@3")),
		"unique violation": wrap(&pgconn.PgError{Code: "23505"}),
		"bad text":         wrap(&pgconn.PgError{Code: "22P02"}),
		"foreign key":      wrap(&pgconn.PgError{Code: "23503"}),
		"undefined column": wrap(&pgconn.PgError{Code: "42703"}),
		"string too long":  wrap(&pgconn.PgError{Code: "22001"}),
	}
	for name, err := range poison {
		require.False(t, lostDatabase(err), name)
	}
}
