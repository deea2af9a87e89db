package pipeline

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// ProgramTB lets a program outside `go test` (the pipeline benchmark) use
// the harness and test/testenv, which take a testing.TB. Logs go to
// stderr; a fatal failure runs the cleanups and exits with status 1.
// Methods it does not define are not used by the harness and panic.
type ProgramTB struct {
	testing.TB
	name string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// NewProgramTB returns a ProgramTB; call Close when done.
func NewProgramTB(name string) *ProgramTB { return &ProgramTB{name: name} }

// Name implements testing.TB.
func (t *ProgramTB) Name() string { return t.name }

// Helper implements testing.TB.
func (t *ProgramTB) Helper() {}

// Log implements testing.TB.
func (t *ProgramTB) Log(args ...any) { fmt.Fprintln(os.Stderr, args...) }

// Logf implements testing.TB.
func (t *ProgramTB) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// Error implements testing.TB.
func (t *ProgramTB) Error(args ...any) { t.Log(args...); t.Fail() }

// Errorf implements testing.TB.
func (t *ProgramTB) Errorf(format string, args ...any) { t.Logf(format, args...); t.Fail() }

// Fatal implements testing.TB.
func (t *ProgramTB) Fatal(args ...any) { t.Log(args...); t.FailNow() }

// Fatalf implements testing.TB.
func (t *ProgramTB) Fatalf(format string, args ...any) { t.Logf(format, args...); t.FailNow() }

// Fail implements testing.TB.
func (t *ProgramTB) Fail() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
}

// Failed implements testing.TB.
func (t *ProgramTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// FailNow runs the cleanups and exits the program.
func (t *ProgramTB) FailNow() {
	t.Fail()
	t.Close()
	RemoveBinaries()
	os.Exit(1)
}

// Cleanup implements testing.TB.
func (t *ProgramTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// TempDir implements testing.TB: a new directory removed at Close.
func (t *ProgramTB) TempDir() string {
	dir, err := os.MkdirTemp("", "stormweir-bench-")
	if err != nil {
		t.Fatalf("creating a temporary directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Close runs the cleanups, last registered first.
func (t *ProgramTB) Close() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		f()
	}
}
