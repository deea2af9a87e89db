package config_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/stormweir/stormweir/pkg/config"
)

func TestWatcher_validate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*config.Watcher)
		want string
	}{
		{"default", func(*config.Watcher) {}, ""},
		{"the README's example", func(w *config.Watcher) {
			w.Enabled, w.Namespaces, w.Reasons = true, []string{"shop", "payments"}, []string{"BackOff", "FailedScheduling"}
		}, ""},
		{"not a namespace name", func(w *config.Watcher) { w.Namespaces = []string{"Team_Payments"} }, `watcher.namespaces: "Team_Payments" is not a namespace name`},
		{"namespace twice", func(w *config.Watcher) { w.Namespaces = []string{"shop", "shop"} }, `watcher.namespaces: "shop" is listed twice`},
		{"empty reason", func(w *config.Watcher) { w.Reasons = []string{""} }, `watcher.reasons: "" is empty or listed twice`},
		{"reason twice", func(w *config.Watcher) { w.Reasons = []string{"BackOff", "BackOff"} }, `watcher.reasons: "BackOff" is empty or listed twice`},
		{"no qps", func(w *config.Watcher) { w.QPS = 0 }, "watcher.qps and watcher.burst: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.edit(&cfg.Watcher)
			err := cfg.Validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestAllInOne_validateWatcher(t *testing.T) {
	cfg := config.Default()
	assert.Equal(t, "auto", cfg.AllInOne.Watcher)
	cfg.AllInOne.Watcher = "always"
	assert.ErrorContains(t, cfg.Validate(), `allinone.watcher: "always" is not auto, on or off`)
}
