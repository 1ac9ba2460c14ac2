package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is USER_HZ, in which /proc reports CPU time; Linux fixes it at 100 there.
const ticksPerSecond = 100

// HostCPU is the CPU time of every core of this machine since boot (Linux /proc/stat): Busy running
// anything (user, system, interrupts), Total including idle, I/O wait and time taken by the
// hypervisor (steal). ok is false where it cannot be read.
type HostCPU struct {
	Busy, Total time.Duration
}

// ReadHostCPU reads the machine's CPU time so far.
func ReadHostCPU() (cpu HostCPU, ok bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return HostCPU{}, false
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return HostCPU{}, false
	}
	var ticks [8]int64 // user nice system idle iowait irq softirq steal
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(fields[i+1], 10, 64); err != nil {
			return HostCPU{}, false
		}
	}
	busy := ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
	total := busy + ticks[3] + ticks[4] + ticks[7]
	return HostCPU{Busy: ticksToDuration(busy), Total: ticksToDuration(total)}, true
}

// Since is the CPU time spent between earlier and c.
func (c HostCPU) Since(earlier HostCPU) HostCPU {
	return HostCPU{Busy: c.Busy - earlier.Busy, Total: c.Total - earlier.Total}
}

// Utilisation is the fraction of the machine's CPU time that was busy, from 0 to 1.
func (c HostCPU) Utilisation() float64 {
	if c.Total <= 0 {
		return 0
	}
	return float64(c.Busy) / float64(c.Total)
}

// ProcessCPU is the user and system CPU time process pid has spent (Linux /proc/<pid>/stat); ok is
// false where it cannot be read.
func ProcessCPU(pid int) (cpu time.Duration, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may contain anything, parentheses and spaces included:
	// fields are counted after the last closing parenthesis.
	end := strings.LastIndexByte(string(data), ')')
	if end < 0 {
		return 0, false
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return ticksToDuration(utime + stime), true
}

func ticksToDuration(ticks int64) time.Duration {
	return time.Duration(ticks) * time.Second / ticksPerSecond
}
