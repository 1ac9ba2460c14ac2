// Package childtest runs a test binary again as a child process that runs one test of its own, so
// that a test can kill a real process (with SIGKILL, mid-flight) and start it again. Crash tests of
// `strata dev` and of the relay do this; the parent and child sides live here so that they share the
// shutdown protocol: the child runs until its standard input closes, which happens when the parent
// closes it or dies.
package childtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/syncbuf"
)

// Config describes a child process.
type Config struct {
	// Test is the test the child runs (-test.run=^Test$). It should do nothing unless a variable of
	// Env is set, and run until UntilStdinCloses's context ends.
	Test string
	// Name is what failure messages call the process: "strata dev" gives "strata dev process 4242".
	Name string
	// Grace is how long Stop, and the cleanup at the end of the test, wait for the process to exit
	// after closing its standard input.
	Grace time.Duration
	// MustStop makes the test fail if the cleanup has to kill the process because it did not stop
	// within Grace.
	MustStop bool
	// Env is added to this process's environment; later entries win.
	Env []string
}

// Process is a test binary running one test as a child process.
type Process struct {
	cfg     Config
	cmd     *exec.Cmd
	stdin   io.Closer
	out     syncbuf.Buffer
	done    chan error // holds the result of Wait once the process has ended; whoever takes it puts it back
	started time.Time
}

// Start starts the child. When the test ends it is stopped (through its standard input) or, after
// cfg.Grace, killed, and its output is logged if the test failed.
func Start(tb testing.TB, cfg Config) *Process {
	tb.Helper()
	p := &Process{cfg: cfg, done: make(chan error, 1), started: time.Now()}
	p.cmd = exec.Command(os.Args[0], "-test.run=^"+cfg.Test+"$", "-test.count=1", "-test.timeout=10m")
	p.cmd.Env = append(os.Environ(), cfg.Env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	stdin, err := p.cmd.StdinPipe()
	require.NoError(tb, err)
	p.stdin = stdin
	require.NoError(tb, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	tb.Cleanup(func() {
		_ = p.stdin.Close() // the process stops when its standard input closes
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(cfg.Grace):
			_ = p.cmd.Process.Kill()
			p.done <- <-p.done
			if cfg.MustStop {
				tb.Errorf("%s process %d did not stop within %s of its standard input closing", cfg.Name, p.cmd.Process.Pid, seconds(cfg.Grace))
			}
		}
		if tb.Failed() {
			tb.Logf("%s process %d:\n%s", cfg.Name, p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// Started is when Start started the process.
func (p *Process) Started() time.Time { return p.started }

// Output is what the process has written to its standard output and error so far. The buffer keeps
// growing: given as an argument of a message that is formatted later, it shows the output of then.
func (p *Process) Output() *syncbuf.Buffer { return &p.out }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Stop closes the standard input of the process, which makes it shut down gracefully, and requires
// that it exits cleanly within the grace period, without a data race.
func (p *Process) Stop(tb testing.TB) {
	tb.Helper()
	_ = p.stdin.Close()
	var err error
	select {
	case err = <-p.done:
		p.done <- err // for the cleanup
	case <-time.After(p.cfg.Grace):
		tb.Fatalf("%s did not stop within %s of its standard input closing", p.cfg.Name, seconds(p.cfg.Grace))
	}
	require.NoError(tb, err, "%s should stop cleanly:\n%s", p.cfg.Name, p.out.String())
	require.NotContains(tb, p.out.String(), "DATA RACE", p.out.String())
}

// Kill sends SIGKILL, waits for the process to end, and requires that the signal ended it (it did not
// exit by itself before) and that it reported no data race.
func (p *Process) Kill(tb testing.TB) {
	tb.Helper()
	_ = p.cmd.Process.Kill() // fails only if the process has ended, which the check below reports
	err := <-p.done
	p.done <- err // for the cleanup
	var exit *exec.ExitError
	require.True(tb, errors.As(err, &exit) && exit.ExitCode() == -1, // -1: ended by a signal
		"%s process ended by itself before it was killed: %v\n%s", p.cfg.Name, err, p.out.String())
	require.NotContains(tb, p.out.String(), "DATA RACE", p.out.String())
}

// UntilStdinCloses is for the child side: it returns a context derived from parent that is cancelled
// when the standard input of this process closes, that is, when the parent stops the child or dies.
func UntilStdinCloses(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx, cancel
}

// seconds formats d as the messages always have: "15 s".
func seconds(d time.Duration) string { return fmt.Sprintf("%g s", d.Seconds()) }
