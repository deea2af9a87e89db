package service_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/version"
)

func TestHealth_pprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		h := service.NewHealth(service.NewRegistry())
		h.PProf = enabled
		mux := http.NewServeMux()
		h.Register(mux)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
		if enabled {
			assert.Equal(t, http.StatusOK, rec.Code)
		} else {
			assert.Equal(t, http.StatusNotFound, rec.Code)
		}
		rec = httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		assert.Equal(t, http.StatusOK, rec.Code)
	}
}

func TestNewRegistry_exportsBuildInfo(t *testing.T) {
	h := service.NewHealth(service.NewRegistry())
	mux := http.NewServeMux()
	h.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	v := version.Get()
	want := fmt.Sprintf("stormweir_build_info{goversion=%q,revision=%q,version=%q} 1\n", v.GoVersion, v.Revision, v.Version)
	assert.Contains(t, rec.Body.String(), want)
}
