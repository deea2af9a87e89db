package storm

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stormweir/stormweir/pkg/incident"
)

// MemoryStore is the in-process Store: the same decisions as RedisStore,
// for one process (the all-in-one mode) and offline replay. One mutex makes
// every method atomic. State that has not changed for the retain period is
// dropped when Due runs.
type MemoryStore struct {
	retain time.Duration

	mu        sync.Mutex
	scopes    map[string]*memScope // by tag
	storms    map[string]*memStorm // by id
	deadlines map[string]time.Time // the deadline index
}

type memScope struct {
	win     window            // units
	tgt     window            // target keys
	dec     map[string]string // incident → "i", "o:<id>", "m:<id>"
	cur     string
	touched time.Time
}

type memStorm struct {
	snap    Snapshot
	members map[string]int64
	aff     map[string]bool
	token   string
	lease   time.Time
	touched time.Time
}

// NewMemoryStore returns an empty MemoryStore; retain of zero means
// DefaultRetain.
func NewMemoryStore(retain time.Duration) *MemoryStore {
	if retain <= 0 {
		retain = DefaultRetain
	}
	return &MemoryStore{retain: retain, scopes: map[string]*memScope{}, storms: map[string]*memStorm{}, deadlines: map[string]time.Time{}}
}

// Check always succeeds; it mirrors RedisStore's readiness check.
func (s *MemoryStore) Check(context.Context) error { return nil }

// Observe implements Store.
func (s *MemoryStore) Observe(_ context.Context, o Observation) (Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o.Now = msTime(o.Now)
	tag := o.Scope.Tag()
	sc := s.scopes[tag]
	if sc == nil {
		sc = &memScope{win: newWindow(), tgt: newWindow(), dec: map[string]string{}}
		s.scopes[tag] = sc
	}
	if prev, ok := sc.dec[o.IncidentID]; ok {
		if prev == "i" {
			return Decision{Verdict: Individual, Replayed: true}, nil
		}
		v := Member
		if strings.HasPrefix(prev, "o:") {
			v = Opened
		}
		return Decision{Verdict: v, Replayed: true, Storm: s.snapshot(prev[2:])}, nil
	}
	sc.touched = o.Now
	cut := o.Now.Add(-o.Window)
	sc.win.trim(cut)
	sc.tgt.trim(cut)
	sc.win.touch(o.Unit, o.Now)
	target := ""
	if !o.Target.IsZero() {
		target = targetKey(o.Target)
		sc.tgt.touch(target, o.Now)
	}

	if st := s.storms[sc.cur]; sc.cur != "" && st != nil && st.snap.State == StateOpen && o.Now.Before(st.snap.Deadline()) {
		sc.dec[o.IncidentID] = "m:" + sc.cur
		st.addMember(o.IncidentID, o.Count, target, o.Now, true)
		return Decision{Verdict: Member, Storm: s.snapshot(sc.cur)}, nil
	}

	if len(sc.win.last) > o.Threshold {
		id := o.Scope.StormID(o.IncidentID)
		st := &memStorm{
			snap: Snapshot{
				ID: id, Type: o.Type, Scope: Scope{Hash: o.Scope.Hash, Values: o.Scope.Values}, State: StateOpen,
				DetectedAt: o.Now, LastMember: o.Now, LastSeen: o.Now,
				Inactivity: o.Inactivity.Truncate(time.Millisecond), MaxDuration: o.MaxDuration.Truncate(time.Millisecond),
				Signal: o.Signal,
			},
			members: map[string]int64{},
			aff:     map[string]bool{},
		}
		// Window targets oldest first, as Redis orders a sorted set.
		keys := make([]string, 0, len(sc.tgt.last))
		for k := range sc.tgt.last {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			if c := sc.tgt.last[a].Compare(sc.tgt.last[b]); c != 0 {
				return c
			}
			return strings.Compare(a, b)
		})
		for _, k := range keys {
			st.addAffected(k)
		}
		st.addMember(o.IncidentID, o.Count, target, o.Now, true)
		st.snap.Revision = 1
		s.storms[id] = st
		s.deadlines[id] = st.snap.Deadline()
		sc.cur = id
		sc.dec[o.IncidentID] = "o:" + id
		return Decision{Verdict: Opened, Storm: s.snapshot(id)}, nil
	}
	sc.dec[o.IncidentID] = "i"
	return Decision{Verdict: Individual}, nil
}

func (st *memStorm) addAffected(k string) bool {
	if k == "" || st.aff[k] {
		return false
	}
	st.aff[k] = true
	if len(st.snap.Affected) < incident.MaxAffected {
		st.snap.Affected = append(st.snap.Affected, parseTarget(k))
	}
	st.snap.AffectedTotal++
	return true
}

func (st *memStorm) addMember(inc string, count int64, target string, now time.Time, joined bool) {
	st.touched = now
	changed := false
	old, ok := st.members[inc]
	switch {
	case !ok:
		st.members[inc] = count
		st.snap.Members++
		st.snap.Occurrences += count
		if joined {
			st.snap.LastMember = now
		}
		// A member's target is part of its fingerprint: it is recorded
		// when the member joins.
		st.addAffected(target)
		changed = true
	case count > old:
		st.members[inc] = count
		st.snap.Occurrences += count - old
		changed = true
	}
	if changed {
		st.snap.Revision++
		if now.After(st.snap.LastSeen) {
			st.snap.LastSeen = now
		}
	}
}

// snapshot copies a storm, with millisecond times as Redis keeps them.
func (s *MemoryStore) snapshot(id string) Snapshot {
	st := s.storms[id]
	if st == nil {
		return Snapshot{ID: id}
	}
	c := st.snap
	c.Affected = slices.Clone(st.snap.Affected)
	c.DetectedAt, c.LastMember, c.LastSeen = msTime(c.DetectedAt), msTime(c.LastMember), msTime(c.LastSeen)
	c.ClosedAt = msTime(c.ClosedAt)
	return c
}

func msTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// Track implements Store.
func (s *MemoryStore) Track(_ context.Context, u MemberUpdate) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u.Now = msTime(u.Now)
	st := s.storms[u.StormID]
	if st == nil {
		return Snapshot{}, fmt.Errorf("tracking member %s: storm %s: %w", u.IncidentID, u.StormID, ErrNotFound)
	}
	target := ""
	if !u.Target.IsZero() {
		target = targetKey(u.Target)
	}
	st.addMember(u.IncidentID, u.Count, target, u.Now, false)
	return s.snapshot(u.StormID), nil
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, stormID string) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.storms[stormID] == nil {
		return Snapshot{}, fmt.Errorf("storm %s: %w", stormID, ErrNotFound)
	}
	return s.snapshot(stormID), nil
}

// Due implements Store; it also drops state untouched for the retain
// period.
func (s *MemoryStore) Due(_ context.Context, now time.Time, limit int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	ids := make([]string, 0)
	for id, t := range s.deadlines {
		if !t.After(now) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int {
		if c := s.deadlines[a].Compare(s.deadlines[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	if len(ids) > limit {
		ids = ids[:limit]
	}
	return ids, nil
}

func (s *MemoryStore) expire(now time.Time) {
	cut := now.Add(-s.retain)
	for tag, sc := range s.scopes {
		if sc.touched.Before(cut) {
			delete(s.scopes, tag)
		}
	}
	for id, st := range s.storms {
		if st.touched.Before(cut) && st.snap.State == StateClosed {
			delete(s.storms, id)
		}
	}
}

// Claim implements Store.
func (s *MemoryStore) Claim(_ context.Context, stormID, token string, lease time.Duration, now time.Time) (Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.storms[stormID]
	if st == nil || st.snap.State == StateClosed {
		delete(s.deadlines, stormID)
		return Claim{Status: Done}, nil
	}
	now = msTime(now)
	switch st.snap.State {
	case StateOpen:
		dl := st.snap.Deadline()
		if now.Before(dl) {
			s.deadlines[stormID] = dl
			return Claim{Status: NotDue, NextCheck: msTime(dl)}, nil
		}
		st.snap.State = StateClosing
		st.snap.ClosedAt = dl
		st.snap.Revision++
	case StateClosing:
		if st.token != token && now.Before(st.lease) {
			s.deadlines[stormID] = st.lease
			return Claim{Status: Busy, NextCheck: st.lease}, nil
		}
	}
	st.token, st.lease = token, now.Add(lease.Truncate(time.Millisecond))
	return Claim{Status: Claimed, Storm: s.snapshot(stormID)}, nil
}

// Finish implements Store.
func (s *MemoryStore) Finish(_ context.Context, stormID, token string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.storms[stormID]
	if st == nil || st.snap.State == StateClosed {
		delete(s.deadlines, stormID)
		return false, nil
	}
	if st.snap.State != StateClosing || st.token != token {
		return false, nil
	}
	st.snap.State = StateClosed
	st.token, st.lease = "", time.Time{}
	delete(s.deadlines, stormID)
	if tag, err := tagOf(stormID); err == nil {
		if sc := s.scopes[tag]; sc != nil && sc.cur == stormID {
			sc.cur = ""
		}
	}
	return true, nil
}

// Open implements Store.
func (s *MemoryStore) Open(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.deadlines)), nil
}

// window is a set of keys with the latest time each was seen, trimmed in
// time order: a heap holds one entry per touch, so dropping the keys that
// left a sliding window costs only what leaves, never a scan of the rest
// (a storm's window holds every incident of its scope).
type window struct {
	last  map[string]time.Time
	order windowHeap
}

func newWindow() window { return window{last: map[string]time.Time{}} }

// touch records k at t unless it was seen later already.
func (w *window) touch(k string, t time.Time) {
	if old, ok := w.last[k]; ok && !t.After(old) {
		return
	}
	w.last[k] = t
	heap.Push(&w.order, windowEntry{at: t, key: k})
}

// trim drops the keys last seen at or before cut. An entry older than
// its key's latest touch is stale and only leaves the heap.
func (w *window) trim(cut time.Time) {
	for len(w.order) > 0 && !w.order[0].at.After(cut) {
		e := heap.Pop(&w.order).(windowEntry)
		if t, ok := w.last[e.key]; ok && t.Equal(e.at) {
			delete(w.last, e.key)
		}
	}
}

type windowEntry struct {
	at  time.Time
	key string
}

// windowHeap is a min-heap of entries by time (container/heap).
type windowHeap []windowEntry

func (h windowHeap) Len() int           { return len(h) }
func (h windowHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h windowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *windowHeap) Push(x any)        { *h = append(*h, x.(windowEntry)) }
func (h *windowHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
