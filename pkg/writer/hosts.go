package writer

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/stormweir/stormweir/pkg/clock"
)

// hostMemo remembers, for a short while, which request counts an incident
// this process just created or folded. The informer cache learns of a new
// request a few milliseconds after the create; without the memo every
// update arriving in between would try the create again. Entries expire
// by the injected clock.
type hostMemo struct {
	ttl time.Duration
	clk clock.Clock
	mu  sync.Mutex
	m   map[string]hostEntry
}

type hostEntry struct {
	key  types.NamespacedName
	own  bool
	seen time.Time
}

func newHostMemo(ttl time.Duration, clk clock.Clock) *hostMemo {
	return &hostMemo{ttl: ttl, clk: clk, m: map[string]hostEntry{}}
}

func (h *hostMemo) remember(id string, key types.NamespacedName, own bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[id] = hostEntry{key: key, own: own, seen: h.clk.Now()}
}

func (h *hostMemo) lookup(id string) (types.NamespacedName, bool, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[id]
	if !ok || h.clk.Since(e.seen) > h.ttl {
		return types.NamespacedName{}, false, false
	}
	return e.key, e.own, true
}

// prune drops expired entries; by then the cache has the request.
func (h *hostMemo) prune() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, e := range h.m {
		if h.clk.Since(e.seen) > h.ttl {
			delete(h.m, id)
		}
	}
}
