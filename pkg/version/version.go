// Package version tells which build of stormweir is running: the release
// version, the source revision and the build date, stamped by the linker
// (the Dockerfile does), or read from the Go build information when a
// binary was built without them (go install, go build in a checkout).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
)

// Set with -ldflags at release builds, e.g.
//
//	-X github.com/stormweir/stormweir/pkg/version.Version=v0.1.0
//	-X github.com/stormweir/stormweir/pkg/version.Revision=$(git rev-parse HEAD)
//	-X github.com/stormweir/stormweir/pkg/version.Date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
//
// Empty values are filled from runtime/debug.ReadBuildInfo.
var (
	// Version is the release version, e.g. v0.1.0.
	Version string
	// Revision is the source revision (git commit) the binary was built from.
	Revision string
	// Date is when the binary was built, RFC 3339 in UTC.
	Date string
)

// Unknown stands for a field that neither the linker flags nor the build
// information know.
const Unknown = "unknown"

// Info is one build's identity.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	// Modified is set when the build information says the working tree
	// had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
}

var (
	once sync.Once
	info Info
)

// Get returns the running binary's Info; it is computed once.
func Get() Info {
	once.Do(func() {
		bi, _ := debug.ReadBuildInfo()
		info = resolve(Version, Revision, Date, bi)
	})
	return info
}

// resolve fills what the linker flags left empty from the build
// information: the main module's version (set by go install and go run
// module@version, "(devel)" in a checkout) and the vcs.* settings the go
// command records when it builds inside a repository.
func resolve(version, revision, date string, bi *debug.BuildInfo) Info {
	i := Info{Version: version, Revision: revision, Date: date, GoVersion: runtime.Version()}
	if bi != nil {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Revision == "" {
					i.Revision = s.Value
				}
			case "vcs.time":
				if i.Date == "" {
					i.Date = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	if i.Revision == "" {
		i.Revision = Unknown
	}
	if i.Date == "" {
		i.Date = Unknown
	}
	return i
}

// String is the one-line form `stormweir version` prints.
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += "-dirty"
	}
	return fmt.Sprintf("stormweir %s (revision %s, built %s, %s)", i.Version, rev, i.Date, i.GoVersion)
}
