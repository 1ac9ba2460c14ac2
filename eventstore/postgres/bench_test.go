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

// BenchmarkAppend compares one-event appends with a version check against the cheapest durable
// write PostgreSQL offers, a single-row autocommit INSERT of the same payload into a table with one
// index. Every writer alternates the two, so both are measured under the same load at the same time:
// the reported ratio (append rate / insert rate) holds even on a noisy machine.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			store, pool := newStore(b, int32(writers)+2)
			ctx := b.Context()
			if _, err := pool.Exec(ctx, `CREATE TABLE raw_events (id uuid PRIMARY KEY, stream_id text NOT NULL, data json NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			data := string(storetest.NewEvent(1).Data)
			var next, rawNanos, appendNanos atomic.Int64
			errs := make(chan error, writers)
			b.ResetTimer()
			for range writers {
				go func() {
					stream := storetest.StreamName("product")
					var version uint64
					for i := 0; next.Add(1) <= int64(b.N); i++ {
						// Alternate which goes first, so neither always follows the other's commit.
						for j := range 2 {
							start := time.Now()
							if (i+j)%2 == 0 {
								if _, err := pool.Exec(ctx, `INSERT INTO raw_events (id, stream_id, data) VALUES ($1, $2, $3)`, uuid.NewString(), stream, data); err != nil {
									errs <- err
									return
								}
								rawNanos.Add(int64(time.Since(start)))
								continue
							}
							res, err := store.Append(ctx, stream, eventstore.Exact(version), []eventstore.EventData{storetest.NewEvent(1)})
							if err != nil {
								errs <- err
								return
							}
							version = res.LastVersion
							appendNanos.Add(int64(time.Since(start)))
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
			// Each kind ran b.N times spread over the writers; its rate is what the writers would
			// sustain doing only that.
			rawRate := float64(b.N) * float64(writers) / (float64(rawNanos.Load()) / 1e9)
			appendRate := float64(b.N) * float64(writers) / (float64(appendNanos.Load()) / 1e9)
			b.ReportMetric(rawRate, "insert-events/s")
			b.ReportMetric(appendRate, "append-events/s")
			b.ReportMetric(appendRate/rawRate, "ratio")
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
