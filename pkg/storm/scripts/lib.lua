-- Shared by every storm script (prepended at load). KEYS[1] is the scope's
-- key base "<prefix>:storm:{<tag>}:", so every key a script touches is in
-- the scope's Redis Cluster slot.
--
-- A storm is the hash s:<id> (its fields below), the hash m:<id> (highest
-- count per member), the set a:<id> (every distinct target) and the list
-- l:<id> (the first 100 targets, in order). The hash keeps the running
-- totals (mem, occ, aff, nl) so that a decision costs the same whatever
-- the storm's size, and a reply carries only what the caller lacks.
local b = KEYS[1]

local function deadline(lm, det, inact, max)
  return math.min(tonumber(lm) + tonumber(inact), tonumber(det) + tonumber(max))
end

-- load reads a storm's mutable fields; nil for an unknown storm. Storms
-- written before the totals aff and nl existed get them counted once.
local function load(id)
  local v = redis.call('HMGET', b .. 's:' .. id, 'st', 'rev', 'det', 'lm', 'ls', 'cl', 'inact', 'max',
    'mem', 'occ', 'aff', 'nl', 'reg', 'xp')
  if not v[1] then return nil end
  local r = {id = id, st = v[1], rev = tonumber(v[2]), det = tonumber(v[3]), lm = tonumber(v[4]), ls = tonumber(v[5]),
    cl = tonumber(v[6]) or 0, inact = tonumber(v[7]), max = tonumber(v[8]), mem = tonumber(v[9]), occ = tonumber(v[10]),
    aff = tonumber(v[11]), nl = tonumber(v[12]), reg = tonumber(v[13]) or 0, xp = tonumber(v[14])}
  if not r.aff then r.aff = redis.call('SCARD', b .. 'a:' .. id) end
  if not r.nl then r.nl = redis.call('LLEN', b .. 'l:' .. id) end
  return r
end

-- expireStorm sets the garbage-collection TTL of a storm's keys.
local function expireStorm(id, keep)
  for _, k in ipairs({'s:', 'm:', 'a:', 'l:'}) do
    redis.call('PEXPIRE', b .. k .. id, keep)
  end
end

-- addAffected records a distinct target; the first 100 keep their order
-- in the capped list, the set makes the total exact. A set or list
-- created here gets the storm's TTL at once.
local function addAffected(r, target, retain)
  if target == '' then return false end
  if redis.call('SADD', b .. 'a:' .. r.id, target) == 0 then return false end
  r.aff = r.aff + 1
  if r.nl < 100 then
    redis.call('RPUSH', b .. 'l:' .. r.id, target)
    r.nl = r.nl + 1
  end
  if r.aff == 1 and r.xp then expireStorm(r.id, retain + math.floor(retain / 8)) end
  return true
end

-- addMember keeps the highest count seen per member, so occurrences are a
-- sum of absolute values: idempotent and order-insensitive. A member's
-- target is fixed (it is part of the incident's fingerprint), so it is
-- recorded when the member joins. joined is set for a new incident, which
-- is almost never a member yet (one HSETNX); a repeat almost always is
-- (one HGET). Reports whether the storm changed.
local function addMember(r, inc, count, target, now, joined, retain)
  local m = b .. 'm:' .. r.id
  local changed = false
  local old
  if joined then
    if redis.call('HSETNX', m, inc, count) == 0 then old = redis.call('HGET', m, inc) end
  else
    old = redis.call('HGET', m, inc)
    if not old then redis.call('HSET', m, inc, count) end
  end
  if not old then
    r.mem = r.mem + 1
    r.occ = r.occ + count
    if joined then r.lm = now end
    addAffected(r, target, retain)
    changed = true
  elseif count > tonumber(old) then
    redis.call('HSET', m, inc, count)
    r.occ = r.occ + count - tonumber(old)
    changed = true
  end
  if changed then
    r.rev = r.rev + 1
    if now > r.ls then r.ls = now end
  end
  return changed
end

-- save writes a changed storm's totals back in one command, and refreshes
-- the TTL of its keys when an eighth of retain has passed since the last
-- refresh (or the clock went back): keys live retain + retain/8, so they
-- outlive the last change by at least retain without a PEXPIRE per
-- decision.
local function save(r, now, retain)
  local s = b .. 's:' .. r.id
  local refresh = (not r.xp) or now < r.xp or now - r.xp >= math.floor(retain / 8)
  if refresh then r.xp = now end
  redis.call('HSET', s, 'rev', r.rev, 'lm', r.lm, 'ls', r.ls, 'mem', r.mem, 'occ', r.occ, 'aff', r.aff, 'nl', r.nl, 'xp', r.xp)
  if refresh then expireStorm(r.id, retain + math.floor(retain / 8)) end
end

-- reply is a storm as the caller needs it. kdet and klen describe what
-- the caller already holds: when kdet is the storm's detection time, the
-- fields fixed at opening are left out (0) and only the affected targets
-- after the first klen are sent; otherwise everything is.
local function reply(r, kdet, klen)
  local static, from = 0, 0
  if kdet == r.det then
    from = klen
  else
    local f = redis.call('HMGET', b .. 's:' .. r.id, 'type', 'scope', 'sh', 'inact', 'max', 'sig')
    for i = 1, #f do if not f[i] then f[i] = '' end end
    static = f
  end
  local tail = {}
  if r.nl > from then tail = redis.call('LRANGE', b .. 'l:' .. r.id, from, -1) end
  return {r.id, r.st, r.rev, r.det, r.lm, r.ls, r.cl, r.mem, r.occ, r.aff, r.reg, from, static, tail}
end
