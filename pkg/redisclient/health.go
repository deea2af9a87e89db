package redisclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Reasons a store call failed, as Reason names them: the values of the
// reason label of stormweir_store_errors_total.
const (
	// ReasonOOM: Redis reached maxmemory and, under the noeviction policy
	// stormweir requires, refuses every write.
	ReasonOOM = "oom"
	// ReasonReadOnly: the server is a replica (a failover in progress).
	ReasonReadOnly = "readonly"
	// ReasonLoading: the server is loading its data set after a restart.
	ReasonLoading = "loading"
	// ReasonBusy: a script runs past its time limit.
	ReasonBusy = "busy"
	// ReasonAuth: the password or user was refused or lacks a permission.
	ReasonAuth = "auth"
	// ReasonUnavailable: no connection, or a cluster without a majority.
	ReasonUnavailable = "unavailable"
	// ReasonTimeout: no answer in time.
	ReasonTimeout = "timeout"
	// ReasonError: any other error Redis answered.
	ReasonError = "error"
)

// Reason classifies the error of a Redis call.
func Reason(err error) string {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		code, _, _ := strings.Cut(msg, " ")
		switch code {
		case "OOM":
			return ReasonOOM
		case "READONLY":
			return ReasonReadOnly
		case "LOADING":
			return ReasonLoading
		case "BUSY":
			return ReasonBusy
		case "NOAUTH", "WRONGPASS", "NOPERM":
			return ReasonAuth
		case "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN":
			return ReasonUnavailable
		}
		return ReasonError
	}
	var nerr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &nerr) && nerr.Timeout()) {
		return ReasonTimeout
	}
	return ReasonUnavailable
}

// IsRedisError reports whether err came from a Redis call: an answer of
// Redis, a network failure or a closed client. A stage whose handler
// fails for other reasons too (a publish) reports only these to its
// StoreHealth.
func IsRedisError(err error) bool {
	var rerr redis.Error
	var nerr net.Error
	return errors.As(err, &rerr) || errors.As(err, &nerr) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout)
}

// StoreHealth is what a stage says about its store when calls fail: it
// counts the failures by reason (stormweir_store_errors_total), logs once
// when the store starts failing (and when the reason changes) and once
// when it works again, instead of a line per message, and makes the
// stage unready while its last call failed: a Redis that answers PING but
// refuses writes (out of memory, a replica) is not a working store. It is
// safe for concurrent use.
type StoreHealth struct {
	stage  string
	errors *prometheus.CounterVec
	log    *slog.Logger
	// failing is the fast path of a success while nothing failed: one
	// atomic load per call.
	failing atomic.Bool
	mu      sync.Mutex
	last    error
	reason  string
	failed  int
}

// NewStoreHealth returns the StoreHealth of stage's store, its counter
// registered with reg (shared by the stages of one process).
func NewStoreHealth(reg prometheus.Registerer, log *slog.Logger, stage string) *StoreHealth {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stormweir_store_errors_total",
		Help: "Failed calls of a stage to its Redis store, by reason: oom (Redis reached maxmemory and refuses writes), readonly, loading, busy, auth, unavailable, timeout, error. The message waits in JetStream, unacknowledged, and is retried.",
	}, []string{"stage", "reason"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
		c = are.ExistingCollector.(*prometheus.CounterVec)
	}
	return &StoreHealth{stage: stage, errors: c, log: log.With("stage", stage)}
}

// Observe records the outcome of one store call: nil for a success.
func (h *StoreHealth) Observe(err error) {
	if err == nil {
		if !h.failing.Load() {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.last != nil {
			h.log.Info("store works again", "failed_calls", h.failed)
		}
		h.last, h.reason, h.failed = nil, "", 0
		h.failing.Store(false)
		return
	}
	reason := Reason(err)
	h.errors.WithLabelValues(h.stage, reason).Inc()
	h.mu.Lock()
	defer h.mu.Unlock()
	if reason != h.reason {
		h.log.Error("store refuses calls; messages wait in JetStream, unacknowledged, and are retried", "reason", reason, "hint", hint(reason), "err", err)
	}
	h.last, h.reason = err, reason
	h.failed++
	h.failing.Store(true)
}

// Check is the readiness of the store as its calls found it: the last
// call's error, explained.
func (h *StoreHealth) Check(context.Context) error {
	if !h.failing.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last == nil {
		return nil
	}
	return fmt.Errorf("last store call failed (%s: %s): %w", h.reason, hint(h.reason), h.last)
}

// hint says what an operator does about a reason.
func hint(reason string) string {
	switch reason {
	case ReasonOOM:
		return "Redis reached maxmemory; free memory or raise maxmemory (README: sizing Redis)"
	case ReasonReadOnly:
		return "the server is a replica; waiting for the failover to finish"
	case ReasonLoading:
		return "Redis is loading its data after a restart"
	case ReasonAuth:
		return "check redis.username and redis.password_file"
	case ReasonUnavailable, ReasonTimeout:
		return "Redis does not answer"
	}
	return "see the error"
}
