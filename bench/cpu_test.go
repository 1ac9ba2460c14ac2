package bench_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/bench"
)

// burn spins on the CPU until process pid has spent more than before and the machine more than
// host, or the deadline. The two counts grow in ticks at different moments: waiting for one alone
// would often see the other unchanged.
func burn(t *testing.T, pid int, before time.Duration, host bench.HostCPU) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		self, ok1 := bench.ProcessCPU(pid)
		now, ok2 := bench.ReadHostCPU()
		if ok1 && ok2 && self > before && now.Busy > host.Busy {
			return
		}
	}
	t.Fatalf("no CPU time counted after 10 s of spinning (%d)", x)
}

func TestCPUTimesGrowWithWork(t *testing.T) {
	host, ok := bench.ReadHostCPU()
	require.True(t, ok)
	require.Greater(t, host.Busy, time.Duration(0))
	require.Greater(t, host.Total, host.Busy)

	self, ok := bench.ProcessCPU(os.Getpid())
	require.True(t, ok)
	burn(t, os.Getpid(), self, host)
	later, ok := bench.ReadHostCPU()
	require.True(t, ok)
	spent := later.Since(host)
	require.Greater(t, spent.Busy, time.Duration(0), "this process's work is the machine's")
	require.InDelta(t, float64(spent.Busy)/float64(spent.Total), spent.Utilisation(), 1e-9)
	require.LessOrEqual(t, spent.Utilisation(), 1.0)

	_, ok = bench.ProcessCPU(-1)
	require.False(t, ok, "no such process")
	require.Zero(t, bench.HostCPU{}.Utilisation())
}
