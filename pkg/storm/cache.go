package storm

import (
	"errors"
	"fmt"
	"sync"
	"time"

	json "github.com/goccy/go-json"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/signal"
)

// maxCachedStorms bounds stormCache; a full cache starts over, which costs
// one full reply per storm still active.
const maxCachedStorms = 4096

// stormCache holds, per storm, what RedisStore's replies may leave out:
// the fields fixed when the storm opened (type, scope, limits, signal) and
// the affected targets seen so far. The capped affected list in Redis only
// grows by appending, so a prefix the store holds stays valid; a reply
// sends only the targets after it. Without this, every decision of a storm
// would carry its signal and up to 100 targets back from Redis and parse
// them again. Entries are immutable (a longer list replaces an entry) and
// keyed by storm id and detection time, so a storm recreated under the same
// id is never mistaken for the old one.
type stormCache struct {
	mu     sync.Mutex
	storms map[string]*stormInfo
	// cur is the storm last seen open per scope tag: Observe names it to
	// the script, which abbreviates the reply if the incident joins it.
	cur map[string]string
}

// stormInfo is what stormCache keeps of one storm.
type stormInfo struct {
	det         int64
	typ         incident.StormType
	scope       Scope
	inactivity  time.Duration
	maxDuration time.Duration
	signal      []byte
	affected    []signal.Target
}

func newStormCache() stormCache {
	return stormCache{storms: map[string]*stormInfo{}, cur: map[string]string{}}
}

// knownDet is the detection time to name to a script; -1 for none.
func (i *stormInfo) knownDet() int64 {
	if i == nil {
		return -1
	}
	return i.det
}

// knownLen is how many affected targets the caller holds.
func (i *stormInfo) knownLen() int {
	if i == nil {
		return 0
	}
	return len(i.affected)
}

func (c *stormCache) get(id string) *stormInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.storms[id]
}

// current returns the storm last seen open in the scope, and what is
// known of it.
func (c *stormCache) current(tag string) (string, *stormInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.cur[tag]
	return id, c.storms[id]
}

func (c *stormCache) setCurrent(tag, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur[tag] = id
}

// put keeps info unless the cache holds a longer list of the same storm.
func (c *stormCache) put(id string, info *stormInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.storms[id]; old != nil && old.det == info.det && len(old.affected) >= len(info.affected) {
		return
	}
	if len(c.storms) >= maxCachedStorms {
		c.storms, c.cur = map[string]*stormInfo{}, map[string]string{}
	}
	c.storms[id] = info
}

// forget drops a closed storm.
func (c *stormCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.storms, id)
	if tag, err := tagOf(id); err == nil && c.cur[tag] == id {
		delete(c.cur, tag)
	}
}

// parse reads the array lib.lua's reply returns, completing it from known
// (what the request said the store holds; nil for nothing); the second
// result says whether the storm is in the deadline index. Snapshots share
// the cached scope values, signal and affected list: they are read-only.
func (c *stormCache) parse(v any, known *stormInfo) (Snapshot, bool, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 14 {
		return Snapshot{}, false, errors.New("storm snapshot: unexpected reply from redis")
	}
	id, det, from := redisclient.String(a[0]), redisclient.Int(a[3]), int(redisclient.Int(a[11]))
	registered := redisclient.Int(a[10]) == 1
	tail, _ := a[13].([]any)
	info := known
	switch f, full := a[12].([]any); {
	case full && len(f) == 6:
		info = &stormInfo{
			det:         det,
			typ:         incident.StormType(redisclient.String(f[0])),
			scope:       Scope{Hash: redisclient.String(f[2])},
			inactivity:  time.Duration(redisclient.Int(f[3])) * time.Millisecond,
			maxDuration: time.Duration(redisclient.Int(f[4])) * time.Millisecond,
			signal:      []byte(redisclient.String(f[5])),
		}
		if sc := redisclient.String(f[1]); sc != "" {
			if err := json.Unmarshal([]byte(sc), &info.scope.Values); err != nil {
				return Snapshot{}, false, fmt.Errorf("storm %s: decoding scope: %w", id, err)
			}
		}
		from = 0
	case det == 0 && redisclient.String(a[1]) == "":
		// The storm expired; only its id is left.
		return Snapshot{ID: id}, registered, nil
	case known == nil || known.det != det || from != len(known.affected):
		return Snapshot{}, false, fmt.Errorf("storm %s: abbreviated reply without the state it abbreviates", id)
	}
	affected := info.affected[:from:from]
	if len(tail) > 0 {
		affected = make([]signal.Target, from, from+len(tail))
		copy(affected, info.affected[:from])
		for _, t := range tail {
			affected = append(affected, parseTarget(redisclient.String(t)))
		}
	}
	if info != known || len(tail) > 0 {
		grown := *info
		grown.affected = affected
		c.put(id, &grown)
	}
	at := func(n int64) time.Time {
		if n == 0 {
			return time.Time{}
		}
		return time.UnixMilli(n).UTC()
	}
	return Snapshot{
		ID:            id,
		Type:          info.typ,
		Scope:         info.scope,
		State:         State(redisclient.String(a[1])),
		Revision:      redisclient.Int(a[2]),
		DetectedAt:    at(det),
		LastMember:    at(redisclient.Int(a[4])),
		LastSeen:      at(redisclient.Int(a[5])),
		ClosedAt:      at(redisclient.Int(a[6])),
		Inactivity:    info.inactivity,
		MaxDuration:   info.maxDuration,
		Members:       redisclient.Int(a[7]),
		Occurrences:   redisclient.Int(a[8]),
		Affected:      affected,
		AffectedTotal: redisclient.Int(a[9]),
		Signal:        info.signal,
	}, registered, nil
}
