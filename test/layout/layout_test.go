package layout_test

import (
	"go/build"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/stormweir/stormweir"

// stages are the stage packages: each is one process's work, and none may
// import another (directly or through any other package of the module),
// so a stage can change without the others. What they share lives in
// packages every stage may import (pkg/record, pkg/incident, pkg/bus, …).
var stages = []string{"pkg/dedup", "pkg/storm", "pkg/writer", "pkg/receiver", "pkg/eventwatch"}

// deps returns the module's packages that pkg (a path inside the module)
// imports, directly or not, test files left out.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	seen := map[string]bool{}
	var walk func(p string)
	walk = func(p string) {
		bp, err := build.Default.ImportDir(filepath.Join(root, filepath.FromSlash(p)), 0)
		require.NoError(t, err, "reading package %s", p)
		for _, imp := range bp.Imports {
			rel, ok := strings.CutPrefix(imp, module+"/")
			if !ok || seen[rel] {
				continue
			}
			seen[rel] = true
			walk(rel)
		}
	}
	walk(pkg)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// within reports whether p is pkg or one of its sub-packages.
func within(p, pkg string) bool { return p == pkg || strings.HasPrefix(p, pkg+"/") }

func TestStagePackages_importNoOtherStage(t *testing.T) {
	for _, stage := range stages {
		for _, dep := range deps(t, stage) {
			for _, other := range stages {
				if other != stage && within(dep, other) {
					t.Errorf("%s imports %s: stages share state through pkg/record and messages through pkg/incident, never through each other", stage, dep)
				}
			}
		}
	}
}

// The check sees imports through other packages: the all-in-one process
// wires every stage, so all of them are among its dependencies.
func TestDeps_findsEveryStageOfTheAllInOne(t *testing.T) {
	d := deps(t, "pkg/allinone")
	for _, stage := range stages {
		assert.Contains(t, d, stage)
	}
	assert.Contains(t, d, "pkg/apis/stormweir/v1alpha1", "a dependency of a dependency (the writer)")
}
