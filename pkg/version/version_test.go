package version

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestResolve_linkerFlagsWin(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "aaaa"}, {Key: "vcs.time", Value: "2020-01-01T00:00:00Z"},
	}}
	i := resolve("v0.1.0", "bbbb", "2026-11-29T00:00:00Z", bi)
	assert.Equal(t, Info{Version: "v0.1.0", Revision: "bbbb", Date: "2026-11-29T00:00:00Z", GoVersion: runtime.Version()}, i)
}

func TestResolve_fallsBackToBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.2.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "cccc"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	i := resolve("", "", "", bi)
	assert.Equal(t, "v0.2.0", i.Version)
	assert.Equal(t, "cccc", i.Revision)
	assert.Equal(t, "2026-01-02T03:04:05Z", i.Date)
	assert.True(t, i.Modified)
	assert.Contains(t, i.String(), "revision cccc-dirty")
}

func TestResolve_checkoutBuildWithoutVCS(t *testing.T) {
	i := resolve("", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}})
	assert.Equal(t, "devel", i.Version)
	assert.Equal(t, Unknown, i.Revision)
	assert.Equal(t, Unknown, i.Date)
}
