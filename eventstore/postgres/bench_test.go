package postgres_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/eventstore/storetest"
)

// BenchmarkAppend compares appends of one event with a version check against the cheapest durable
// write PostgreSQL offers, a single-row autocommit INSERT of the same payload, in the same run and on
// the same server. Compare the events/s of each append/N with raw-insert/N.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("raw-insert/writers=%d", writers), func(b *testing.B) {
			_, pool := newStore(b, int32(writers)+2)
			ctx := b.Context()
			if _, err := pool.Exec(ctx, `CREATE TABLE raw_events (id uuid PRIMARY KEY, stream_id text NOT NULL, data json NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			data := string(storetest.NewEvent(1).Data)
			runWriters(b, writers, func(int) func() error {
				stream := storetest.StreamName("raw")
				return func() error {
					_, err := pool.Exec(ctx, `INSERT INTO raw_events (id, stream_id, data) VALUES ($1, $2, $3)`, uuid.NewString(), stream, data)
					return err
				}
			})
		})
		b.Run(fmt.Sprintf("append/writers=%d", writers), func(b *testing.B) {
			store, _ := newStore(b, int32(writers)+2)
			ctx := b.Context()
			runWriters(b, writers, func(int) func() error {
				stream := storetest.StreamName("product")
				var version uint64
				return func() error {
					res, err := store.Append(ctx, stream, eventstore.Exact(version), []eventstore.EventData{storetest.NewEvent(1)})
					version = res.LastVersion
					return err
				}
			})
		})
	}
}

// BenchmarkAppend100 appends 100 events at a time to fresh streams.
func BenchmarkAppend100(b *testing.B) {
	store, _ := newStore(b, 4)
	ctx := b.Context()
	batch := storetest.NewEvents(0, 100)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		for i := range batch {
			batch[i].ID = uuid.NewString()
		}
		if _, err := store.Append(ctx, storetest.StreamName("order"), eventstore.NoStream, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/time.Since(start).Seconds(), "events/s")
}

// runWriters runs b.N operations spread over the given number of goroutines, each with its own
// operation from newOp, and reports the aggregate rate.
func runWriters(b *testing.B, writers int, newOp func(w int) func() error) {
	b.Helper()
	ops := make([]func() error, writers)
	for w := range ops {
		ops[w] = newOp(w)
	}
	var next atomic.Int64
	errs := make(chan error, writers)
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		go func() {
			for next.Add(1) <= int64(b.N) {
				if err := ops[w](); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
