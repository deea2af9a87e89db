package pipeline

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/stormweir/stormweir/test/testenv"
)

// Stage binaries, by the name of their cmd/ directory.
const (
	Receiver   = "receiver"
	Deduper    = "deduper"
	Aggregator = "aggregator"
	Writer     = "writer"
	// natsServer is built from the nats-server module the tests already
	// depend on, so the bus is a process of its own too: its CPU and memory
	// are measured apart from the load generator's, and a restart is a real
	// process restart.
	natsServer = "nats-server"
)

// Stages lists the four stage binaries in pipeline order.
var Stages = []string{Receiver, Deduper, Aggregator, Writer}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds the stage binaries and nats-server once per process (a
// `go test` run or the benchmark) into a temporary directory and returns
// it. The build uses the working tree, so fixes to a stage are picked up
// by simply running the tests again.
func binaries() (string, error) {
	buildOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "stormweir-stages-")
		if err != nil {
			buildErr = fmt.Errorf("creating the binaries directory: %w", err)
			return
		}
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		for _, s := range Stages {
			args = append(args, "./cmd/"+s)
		}
		args = append(args, "github.com/nats-io/nats-server/v2")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			_ = os.RemoveAll(dir)
			buildErr = fmt.Errorf("building the stage binaries (go %v): %w\n%s", args, err, out.String())
			return
		}
		buildDir = dir
	})
	return buildDir, buildErr
}

// RemoveBinaries deletes the binaries built by this process; call it from
// TestMain (or the benchmark's main) after everything stopped.
func RemoveBinaries() {
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}
