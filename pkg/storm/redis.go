package storm

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	json "github.com/goccy/go-json"
	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/redisclient"
)

var (
	//go:embed scripts/lib.lua
	luaLib string
	//go:embed scripts/observe.lua
	luaObserve string
	//go:embed scripts/track.lua
	luaTrack string
	//go:embed scripts/get.lua
	luaGet string
	//go:embed scripts/claim.lua
	luaClaim string
	//go:embed scripts/finish.lua
	luaFinish string
	//go:embed scripts/register.lua
	luaRegister string
)

var (
	scriptObserve  = redis.NewScript(luaLib + luaObserve)
	scriptTrack    = redis.NewScript(luaLib + luaTrack)
	scriptGet      = redis.NewScript(luaLib + luaGet)
	scriptClaim    = redis.NewScript(luaLib + luaClaim)
	scriptFinish   = redis.NewScript(luaLib + luaFinish)
	scriptRegister = redis.NewScript(luaLib + luaRegister)
)

// DefaultRetain is how long a scope's window bookkeeping and a storm's
// record outlive their last change: long enough for every redelivery of an
// input (a replayed incident must get its first verdict back) and for
// members' repeats to keep counting on a closed storm. A storm's keys get
// retain + retain/8, refreshed once per eighth of retain rather than at
// every change.
const DefaultRetain = time.Hour

// RedisStore is the Store on Redis. Each scope's keys share the hash tag
// of the scope ("<prefix>:storm:{<tag>}:…"); every decision is one Lua
// script on that slot, so it is atomic across replicas and works on Redis
// Cluster. The deadline index ("<prefix>:storm:deadlines", a sorted set of
// storm ids by the earliest time their window may end) lives in its own
// slot and is only a hint: the claim script re-checks the real deadline.
//
// Decisions that run concurrently share a pipeline (see scriptBatcher).
// A decision's reply leaves out what the store already holds from an
// earlier reply about the same storm (see stormCache): the fields fixed at
// opening, and the affected targets it has seen. The cache is only an
// abbreviation of replies; Redis stays the one source of every decision.
type RedisStore struct {
	c         redis.UniversalClient
	prefix    string
	deadlines string
	retain    time.Duration
	cache     stormCache
	batch     *scriptBatcher
}

// NewRedisStore returns a RedisStore on c under keyPrefix; retain of zero
// means DefaultRetain.
func NewRedisStore(c redis.UniversalClient, keyPrefix string, retain time.Duration) *RedisStore {
	if retain <= 0 {
		retain = DefaultRetain
	}
	return &RedisStore{c: c, prefix: keyPrefix + ":storm:", deadlines: keyPrefix + ":storm:deadlines", retain: retain,
		cache: newStormCache(), batch: newScriptBatcher(c)}
}

// Check pings Redis, for readiness.
func (s *RedisStore) Check(ctx context.Context) error { return redisclient.Check(ctx, s.c) }

func (s *RedisStore) base(tag string) string { return s.prefix + "{" + tag + "}:" }

func (s *RedisStore) baseOf(stormID string) (string, error) {
	tag, err := tagOf(stormID)
	if err != nil {
		return "", err
	}
	return s.base(tag), nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// Observe implements Store. The scope and the signal a new storm keeps
// travel to Redis only when the observation opens one: most observations
// stay individual or join an open storm, and the signal is most of a
// call's bytes. An observation that would open a storm without them is
// answered "opening", and is sent again with them (one more round trip
// per storm opened).
func (s *RedisStore) Observe(ctx context.Context, o Observation) (Decision, error) {
	target := ""
	if !o.Target.IsZero() {
		target = targetKey(o.Target)
	}
	tag := o.Scope.Tag()
	kid, known := s.cache.current(tag)
	observe := func(scope, sig []byte, sent string) ([]any, error) {
		return s.batch.run(ctx, scriptObserve, []string{s.base(tag)},
			ms(o.Now), o.Window.Milliseconds(), o.Threshold, o.IncidentID, o.Unit, target,
			o.Scope.StormID(o.IncidentID), string(o.Type), scope, o.Scope.Hash, sig, o.Count,
			o.Inactivity.Milliseconds(), o.MaxDuration.Milliseconds(), s.retain.Milliseconds(),
			kid, known.knownDet(), known.knownLen(), sent)
	}
	res, err := observe(nil, nil, "0")
	if err == nil && redisclient.String(res[0]) == "opening" {
		scope, merr := json.Marshal(o.Scope.Values)
		if merr != nil {
			return Decision{}, fmt.Errorf("encoding scope: %w", merr)
		}
		res, err = observe(scope, o.Signal, "1")
	}
	if err != nil {
		return Decision{}, fmt.Errorf("observing incident %s in storm scope %s: %w", o.IncidentID, tag, err)
	}
	d := Decision{Verdict: Verdict(redisclient.String(res[0])), Replayed: redisclient.Int(res[1]) == 1}
	if d.Verdict == Individual {
		return d, nil
	}
	if len(res) < 3 {
		return Decision{}, errors.New("storm observation: unexpected reply from redis")
	}
	snap, registered, err := s.cache.parse(res[2], known)
	if err != nil {
		return Decision{}, err
	}
	if !d.Replayed && snap.State == StateOpen {
		s.cache.setCurrent(tag, snap.ID)
	}
	d.Storm = snap
	if !registered {
		if err := s.register(ctx, &snap); err != nil {
			return Decision{}, err
		}
	}
	return d, nil
}

// register puts a storm into the deadline index. It runs after the
// opening script, as its own step because the index is in another slot;
// until the storm is marked registered every member repeats it (ZADD NX is
// idempotent), so a crash between the two steps cannot leave a storm that
// no sweeper will ever close.
func (s *RedisStore) register(ctx context.Context, snap *Snapshot) error {
	if err := s.c.ZAddNX(ctx, s.deadlines, redis.Z{Score: float64(ms(snap.Deadline())), Member: snap.ID}).Err(); err != nil {
		return fmt.Errorf("registering storm %s deadline: %w", snap.ID, err)
	}
	base, _ := s.baseOf(snap.ID)
	if err := scriptRegister.Run(ctx, s.c, []string{base}, snap.ID).Err(); err != nil {
		return fmt.Errorf("marking storm %s registered: %w", snap.ID, err)
	}
	return nil
}

// Track implements Store.
func (s *RedisStore) Track(ctx context.Context, u MemberUpdate) (Snapshot, error) {
	base, err := s.baseOf(u.StormID)
	if err != nil {
		return Snapshot{}, fmt.Errorf("tracking member %s: %w", u.IncidentID, err)
	}
	target := ""
	if !u.Target.IsZero() {
		target = targetKey(u.Target)
	}
	known := s.cache.get(u.StormID)
	res, err := s.batch.run(ctx, scriptTrack, []string{base}, u.StormID, u.IncidentID, u.Count, target, ms(u.Now), s.retain.Milliseconds(),
		known.knownDet(), known.knownLen())
	if err != nil {
		return Snapshot{}, fmt.Errorf("tracking member %s of storm %s: %w", u.IncidentID, u.StormID, err)
	}
	if redisclient.String(res[0]) == "gone" {
		return Snapshot{}, fmt.Errorf("tracking member %s: storm %s: %w", u.IncidentID, u.StormID, ErrNotFound)
	}
	if len(res) < 2 {
		return Snapshot{}, errors.New("storm track: unexpected reply from redis")
	}
	snap, _, err := s.cache.parse(res[1], known)
	return snap, err
}

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, stormID string) (Snapshot, error) {
	base, err := s.baseOf(stormID)
	if err != nil {
		return Snapshot{}, err
	}
	res, err := scriptGet.Run(ctx, s.c, []string{base}, stormID).Slice()
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading storm %s: %w", stormID, err)
	}
	if redisclient.String(res[0]) == "gone" {
		return Snapshot{}, fmt.Errorf("storm %s: %w", stormID, ErrNotFound)
	}
	if len(res) < 2 {
		return Snapshot{}, errors.New("storm get: unexpected reply from redis")
	}
	snap, _, err := s.cache.parse(res[1], nil)
	return snap, err
}

// Due implements Store.
func (s *RedisStore) Due(ctx context.Context, now time.Time, limit int) ([]string, error) {
	ids, err := s.c.ZRangeByScore(ctx, s.deadlines, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(ms(now), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("listing due storms: %w", err)
	}
	return ids, nil
}

// Claim implements Store. It also keeps the deadline index current: a
// window that is not due yet is rescheduled, a finished one removed.
func (s *RedisStore) Claim(ctx context.Context, stormID, token string, lease time.Duration, now time.Time) (Claim, error) {
	base, err := s.baseOf(stormID)
	if err != nil {
		// Not ours to close; drop it from the index.
		_ = s.c.ZRem(ctx, s.deadlines, stormID).Err()
		return Claim{Status: Done}, nil
	}
	res, err := scriptClaim.Run(ctx, s.c, []string{base}, stormID, ms(now), token, lease.Milliseconds()).Slice()
	if err != nil {
		return Claim{}, fmt.Errorf("claiming close of storm %s: %w", stormID, err)
	}
	c := Claim{Status: ClaimStatus(redisclient.String(res[0]))}
	switch c.Status {
	case Done:
		if err := s.c.ZRem(ctx, s.deadlines, stormID).Err(); err != nil {
			return Claim{}, fmt.Errorf("removing closed storm %s from the deadline index: %w", stormID, err)
		}
	case NotDue, Busy:
		c.NextCheck = time.UnixMilli(redisclient.Int(res[1])).UTC()
		if err := s.c.ZAddXX(ctx, s.deadlines, redis.Z{Score: float64(redisclient.Int(res[1])), Member: stormID}).Err(); err != nil {
			return Claim{}, fmt.Errorf("rescheduling storm %s: %w", stormID, err)
		}
	case Claimed:
		if c.Storm, _, err = s.cache.parse(res[2], nil); err != nil {
			return Claim{}, err
		}
	default:
		return Claim{}, fmt.Errorf("claiming storm %s: unexpected answer %q", stormID, c.Status)
	}
	return c, nil
}

// Finish implements Store.
func (s *RedisStore) Finish(ctx context.Context, stormID, token string) (bool, error) {
	base, err := s.baseOf(stormID)
	if err != nil {
		return false, err
	}
	r, err := scriptFinish.Run(ctx, s.c, []string{base}, stormID, token).Int()
	if err != nil {
		return false, fmt.Errorf("finishing close of storm %s: %w", stormID, err)
	}
	if r != 0 {
		s.cache.forget(stormID)
		if err := s.c.ZRem(ctx, s.deadlines, stormID).Err(); err != nil {
			return false, fmt.Errorf("removing closed storm %s from the deadline index: %w", stormID, err)
		}
	}
	return r == 1, nil
}

// Open implements Store: storms in the deadline index are not closed yet.
func (s *RedisStore) Open(ctx context.Context) (int64, error) {
	n, err := s.c.ZCard(ctx, s.deadlines).Result()
	if err != nil {
		return 0, fmt.Errorf("counting open storms: %w", err)
	}
	return n, nil
}
