package record

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/signal"
)

// RedisStore is the Store shared by every replica of every stage. Each
// change is one Lua script, so it is atomic however many replicas change
// one fingerprint's record at once, and it touches keys that share the
// fingerprint as hash tag, so in Redis Cluster the script runs on one slot:
//
//	<prefix>:{<fingerprint>}:inc          hash: id state count flaps first last resolved rev route exp,
//	                                      and e:<uid> per Kubernetes event: the highest count counted
//	<prefix>:{<fingerprint>}:seen:<msgID> the decision taken for that message, "decision|exp|incidentID"
//	<prefix>:{<fingerprint>}:finished     the latest finished request (Finishes), "exp|namespace|name|incidentID|phase"
//
// Time. "now" is the injected clock's, passed to the script; the record's
// life is the absolute deadline in its exp field (ms), and only exp decides
// whether a record is alive. Redis TTLs are garbage collection: each write
// sets PEXPIRE to the remaining life plus gcGrace. Being relative, the TTL
// works with a fake clock at any epoch, and the grace keeps a replica
// whose clock runs a little behind from seeing a record vanish that it
// still considers alive. So RedisStore and MemoryStore decide identically
// under a fake clock.
//
// Failure. Any Redis error (down, timeout, OOM, failover) is returned as
// is, and nothing is assumed: the caller retries the message later. The
// scripts declare themselves with a shebang, so under maxmemory Redis
// rejects them before they run and never applies half a decision.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	cfg    config.Dedup
	clk    clock.Clock
}

// gcGrace is added to every Redis TTL beyond the record's own deadline.
const gcGrace = 30 * time.Second

// NewRedisStore returns a store on c whose keys start with keyPrefix,
// deciding with cfg's windows on clk's time.
func NewRedisStore(c redis.UniversalClient, keyPrefix string, cfg config.Dedup, clk clock.Clock) *RedisStore {
	return &RedisStore{c: c, prefix: keyPrefix, cfg: cfg, clk: clk}
}

// Check pings Redis; the stage's readiness probe calls it.
func (s *RedisStore) Check(ctx context.Context) error { return redisclient.Check(ctx, s.c) }

func (s *RedisStore) recordKey(fp string) string { return s.prefix + ":{" + fp + "}:inc" }

func (s *RedisStore) seenKey(fp, msgID string) string {
	return s.prefix + ":{" + fp + "}:seen:" + msgID
}

// recordFields is the field order of every script's record reply.
var recordFields = []any{"id", "state", "count", "flaps", "first", "last", "resolved", "rev", "route", "exp"}

// decideScript takes one decision. KEYS: record, seen mark. ARGV: now,
// firing (1/0), id of a new incident, then deadline and TTL (ms) of the
// window, the reopen window and the seen mark, then the Kubernetes event
// uid and count (empty and 0 for a signal that is one occurrence by
// itself). Reply: {decision, duplicate (0/1), record fields 1..9 when
// there is a record to report}.
var decideScript = redis.NewScript(`#!lua
local now = tonumber(ARGV[1])
local F = {'id','state','count','flaps','first','last','resolved','rev','route','exp'}
local function live()
  local v = redis.call('HMGET', KEYS[1], unpack(F))
  if not v[1] or not v[10] or tonumber(v[10]) <= now then return nil end
  return v
end
local seen = redis.call('GET', KEYS[2])
if seen then
  local d, exp, id = string.match(seen, '^([^|]*)|([^|]*)|(.*)$')
  if d and tonumber(exp) > now then
    local r = live()
    if r and r[1] == id then return {d, 1, unpack(r, 1, 9)} end
    return {d, 1}
  end
end
local firing = ARGV[2] == '1'
local r = live()
local d, ttl
if not r then
  if firing then
    d, ttl = 'new', ARGV[5]
    r = {ARGV[3], 'firing', '0', '0', ARGV[1], ARGV[1], '0', '0', '', ARGV[4]}
  else
    d = 'resolved_unknown'
  end
elseif r[2] == 'firing' then
  if firing then
    d, ttl = 'occurrence', ARGV[5]
    r[6], r[10] = ARGV[1], ARGV[4]
  else
    d, ttl = 'resolved', ARGV[7]
    r[2], r[7], r[10] = 'resolved', ARGV[1], ARGV[6]
  end
elseif firing then
  d, ttl = 'reopened', ARGV[5]
  r[2], r[6], r[7], r[10] = 'firing', ARGV[1], '0', ARGV[4]
  r[4] = tostring(tonumber(r[4]) + 1)
else
  d = 'resolved_unknown'
end
if ttl then
  -- A new record starts empty: an expired one may still hold the event
  -- counts of the incident before it.
  if d == 'new' then redis.call('DEL', KEYS[1]) end
  -- One write of every field: the script is atomic, so computing the new
  -- values here is as safe as HINCRBY and costs one command.
  local extra = {}
  if firing then
    local add = 1
    local n = tonumber(ARGV[11])
    if n > 0 then
      -- A Kubernetes event carries its own count: it adds what it rose
      -- by over the highest count of its uid counted so far.
      local f = 'e:' .. ARGV[10]
      local prev = tonumber(redis.call('HGET', KEYS[1], f) or '0')
      add = math.max(n - prev, 0)
      if n > prev then extra = {f, ARGV[11]} end
    end
    r[3] = tostring(tonumber(r[3]) + add)
  end
  r[8] = tostring(tonumber(r[8]) + 1)
  redis.call('HSET', KEYS[1], 'id', r[1], 'state', r[2], 'count', r[3], 'flaps', r[4], 'first', r[5],
    'last', r[6], 'resolved', r[7], 'rev', r[8], 'route', r[9], 'exp', r[10], unpack(extra))
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local id = ''
if r then id = r[1] end
redis.call('SET', KEYS[2], d .. '|' .. ARGV[8] .. '|' .. id, 'PX', ARGV[9])
if r then return {d, 0, unpack(r, 1, 9)} end
return {d, 0}
`)

// setRouteScript sets the route of a live record whose id is ARGV[2].
// KEYS: record. ARGV: now, incident id, route. Reply: record fields 1..9,
// or nil when the record is gone or another incident's.
var setRouteScript = redis.NewScript(`#!lua
local v = redis.call('HMGET', KEYS[1], 'id','state','count','flaps','first','last','resolved','rev','route','exp')
if not v[1] or v[1] ~= ARGV[2] or not v[10] or tonumber(v[10]) <= tonumber(ARGV[1]) then return false end
redis.call('HSET', KEYS[1], 'route', ARGV[3])
v[9] = ARGV[3]
return {unpack(v, 1, 9)}
`)

// endScript deletes the record if it is incident ARGV[1]'s.
var endScript = redis.NewScript(`#!lua
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)

// Decide implements Decider.
func (s *RedisStore) Decide(ctx context.Context, sig *signal.Head, msgID string) (Result, error) {
	if err := CheckSignal(sig); err != nil {
		return Result{}, err
	}
	keys, args := s.decideArgs(sig, msgID, ms(s.clk.Now()))
	v, err := decideScript.Run(ctx, s.c, keys, args...).Slice()
	return decideReply(sig.Fingerprint, v, err)
}

// DecideBatch implements BatchDecider: one pipeline of decide scripts,
// all at one "now". Redis runs a connection's commands in order, so two
// signals of one fingerprint are decided in the order of reqs (in a
// Cluster, go-redis sends each slot's commands in order to its node). A
// script Redis does not hold yet (first use, or a restart emptied its
// cache) fails with NOSCRIPT in the pipeline; those requests are run
// again one by one, which loads the script.
func (s *RedisStore) DecideBatch(ctx context.Context, reqs []DecideRequest) []DecideResponse {
	out := make([]DecideResponse, len(reqs))
	now := ms(s.clk.Now())
	pipe := s.c.Pipeline()
	cmds := make([]*redis.Cmd, len(reqs))
	for i, r := range reqs {
		if err := CheckSignal(r.Sig); err != nil {
			out[i].Err = err
			continue
		}
		keys, args := s.decideArgs(r.Sig, r.MsgID, now)
		cmds[i] = decideScript.EvalSha(ctx, pipe, keys, args...)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
	for i, r := range reqs {
		if cmds[i] == nil {
			continue
		}
		v, err := cmds[i].Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			out[i].Result, out[i].Err = s.Decide(ctx, r.Sig, r.MsgID)
			continue
		}
		out[i].Result, out[i].Err = decideReply(r.Sig.Fingerprint, v, err)
	}
	return out
}

// decideArgs are decideScript's keys and arguments for sig at now (ms).
func (s *RedisStore) decideArgs(sig *signal.Head, msgID string, now int64) ([]string, []any) {
	fp := sig.Fingerprint
	firing := "0"
	if sig.Firing() {
		firing = "1"
	}
	window, reopen, seen := s.cfg.Window.Milliseconds(), s.cfg.ReopenWindow.Milliseconds(), s.cfg.SeenTTL.Milliseconds()
	grace := gcGrace.Milliseconds()
	uid, n := sig.Occurrences()
	return []string{s.recordKey(fp), s.seenKey(fp, msgID)}, []any{
		now, firing, IncidentID(fp, msgID),
		now + window, window + grace,
		now + reopen, reopen + grace,
		now + seen, seen + grace,
		uid, n,
	}
}

// decideReply reads decideScript's reply for fingerprint fp.
func decideReply(fp string, v []any, err error) (Result, error) {
	if err != nil {
		return Result{}, fmt.Errorf("deciding on fingerprint %s in redis: %w", fp, err)
	}
	if len(v) < 2 {
		return Result{}, fmt.Errorf("deciding on fingerprint %s: unexpected script reply %v", fp, v)
	}
	res := Result{Decision: incident.Decision(redisclient.String(v[0])), Duplicate: redisclient.Int(v[1]) == 1}
	if len(v) > 2 {
		res.Record, err = parseRecord(fp, v[2:])
		if err != nil {
			return Result{}, fmt.Errorf("deciding on fingerprint %s: %w", fp, err)
		}
	}
	return res, nil
}

// SetRoute implements Router.
func (s *RedisStore) SetRoute(ctx context.Context, fingerprint, incidentID, route string) (Record, error) {
	v, err := setRouteScript.Run(ctx, s.c, []string{s.recordKey(fingerprint)}, ms(s.clk.Now()), incidentID, route).Slice()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("setting route of incident %s (fingerprint %s): %w", incidentID, fingerprint, err)
	}
	return parseRecord(fingerprint, v)
}

// Get implements Reader. It reads with one HMGET: a read needs no script.
func (s *RedisStore) Get(ctx context.Context, fingerprint string) (Record, error) {
	v, err := s.c.HMGet(ctx, s.recordKey(fingerprint), fieldNames()...).Result()
	if err != nil {
		return Record{}, fmt.Errorf("reading incident record of fingerprint %s: %w", fingerprint, err)
	}
	if v[0] == nil || v[9] == nil || redisclient.Int(v[9]) <= ms(s.clk.Now()) {
		return Record{}, ErrNotFound
	}
	return parseRecord(fingerprint, v[:9])
}

// End implements Ender.
func (s *RedisStore) End(ctx context.Context, fingerprint, incidentID string) error {
	if err := endScript.Run(ctx, s.c, []string{s.recordKey(fingerprint)}, incidentID).Err(); err != nil {
		return fmt.Errorf("ending incident %s (fingerprint %s): %w", incidentID, fingerprint, err)
	}
	return nil
}

func (s *RedisStore) finishedKey(fp string) string { return s.prefix + ":{" + fp + "}:finished" }

// SetFinished implements Finishes: one SET, its deadline in the value and
// a Redis TTL for garbage collection, like a record.
func (s *RedisStore) SetFinished(ctx context.Context, fingerprint string, f Finished, ttl time.Duration) error {
	exp := ms(s.clk.Now().Add(ttl))
	v := strings.Join([]string{strconv.FormatInt(exp, 10), f.Namespace, f.Name, f.IncidentID, f.Phase}, "|")
	if err := s.c.Set(ctx, s.finishedKey(fingerprint), v, ttl+gcGrace).Err(); err != nil {
		return fmt.Errorf("remembering finished request %s/%s (fingerprint %s): %w", f.Namespace, f.Name, fingerprint, err)
	}
	return nil
}

// LastFinished implements Finishes.
func (s *RedisStore) LastFinished(ctx context.Context, fingerprint string) (Finished, error) {
	v, err := s.c.Get(ctx, s.finishedKey(fingerprint)).Result()
	if errors.Is(err, redis.Nil) {
		return Finished{}, ErrNotFound
	}
	if err != nil {
		return Finished{}, fmt.Errorf("reading the finished request of fingerprint %s: %w", fingerprint, err)
	}
	// Names and incident ids hold no '|'; the phase, set by the
	// remediation controller, comes last and may.
	p := strings.SplitN(v, "|", 5)
	if len(p) != 5 {
		return Finished{}, fmt.Errorf("finished request of fingerprint %s: malformed value %q", fingerprint, v)
	}
	if exp, err := strconv.ParseInt(p[0], 10, 64); err != nil || exp <= ms(s.clk.Now()) {
		return Finished{}, ErrNotFound
	}
	return Finished{Namespace: p[1], Name: p[2], IncidentID: p[3], Phase: p[4]}, nil
}

func fieldNames() []string {
	out := make([]string, len(recordFields))
	for i, f := range recordFields {
		out[i] = f.(string)
	}
	return out
}

// parseRecord reads the first nine record fields in recordFields order.
func parseRecord(fp string, v []any) (Record, error) {
	if len(v) < 9 {
		return Record{}, fmt.Errorf("incident record of %s has %d fields, want 9", fp, len(v))
	}
	return Record{
		IncidentID:  redisclient.String(v[0]),
		Fingerprint: fp,
		State:       incident.State(redisclient.String(v[1])),
		Count:       redisclient.Int(v[2]),
		Flaps:       redisclient.Int(v[3]),
		FirstSeen:   fromMS(redisclient.Int(v[4])),
		LastSeen:    fromMS(redisclient.Int(v[5])),
		ResolvedAt:  fromMS(redisclient.Int(v[6])),
		Revision:    redisclient.Int(v[7]),
		Route:       redisclient.String(v[8]),
	}, nil
}

var (
	_ Store        = (*RedisStore)(nil)
	_ BatchDecider = (*RedisStore)(nil)
)
