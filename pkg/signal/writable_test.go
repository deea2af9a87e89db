package signal

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// writableEnv names the checker binary (test/crdcheck/signals) for the
// fuzz targets. The first target of a test process builds it when it is
// unset and sets it, so fuzz workers, which inherit the coordinator's
// environment, reuse that build.
const writableEnv = "STORMWEIR_SIGNALS_CHECK"

var (
	buildChecker    sync.Once
	builtCheckerDir string
	buildErr        error
)

// checkerPath returns the checker binary, built once per test process.
func checkerPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(writableEnv); p != "" {
		return p
	}
	buildChecker.Do(func() {
		builtCheckerDir, buildErr = os.MkdirTemp("", "stormweir-signals-check")
		if buildErr != nil {
			return
		}
		bin := filepath.Join(builtCheckerDir, "signals")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/stormweir/stormweir/test/crdcheck/signals")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = err
			tb.Logf("building the signals checker: %s", out)
			return
		}
		buildErr = os.Setenv(writableEnv, bin)
	})
	require.NoError(tb, buildErr, "building test/crdcheck/signals")
	return os.Getenv(writableEnv)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtCheckerDir != "" {
		_ = os.RemoveAll(builtCheckerDir)
	}
	os.Exit(code)
}

// writability checks that every signal a decoder accepts can be written:
// the RemediationRequests the writer would create for it, as an
// individual incident and as the signal that opens a rate or a pattern
// storm, pass the generated CRD's validation as the API server runs it on
// a create (test/crdcheck). The check runs in a process of its own
// (test/crdcheck/signals says why), one per fuzz process.
type writability struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func newWritability(tb testing.TB) *writability {
	tb.Helper()
	cmd := exec.Command(checkerPath(tb))
	in, err := cmd.StdinPipe()
	require.NoError(tb, err)
	out, err := cmd.StdoutPipe()
	require.NoError(tb, err)
	cmd.Stderr = os.Stderr
	require.NoError(tb, cmd.Start())
	tb.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
	})
	return &writability{cmd: cmd, in: in, out: bufio.NewReader(out)}
}

// check fails t when a request built from an accepted signal of b would
// be refused by the API server.
func (w *writability) check(t *testing.T, b *Batch) {
	t.Helper()
	for i := range b.Signals {
		s := &b.Signals[i]
		enc, err := Encode(s)
		require.NoError(t, err)
		_, err = w.in.Write(append(enc, '\n'))
		require.NoError(t, err, "sending signal %d to the checker", i)
		answer, err := w.out.ReadString('\n')
		require.NoError(t, err, "reading the checker's answer")
		if answer = strings.TrimSuffix(answer, "\n"); answer != "ok" {
			t.Fatalf("accepted signal %+v cannot be written: %s", *s, answer)
		}
	}
}
