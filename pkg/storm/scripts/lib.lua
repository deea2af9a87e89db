-- Shared by every storm script (prepended at load). KEYS[1] is the scope's
-- key base "<prefix>:storm:{<tag>}:", so every key a script touches is in
-- the scope's Redis Cluster slot.
local b = KEYS[1]

local function deadline(lm, det, inact, max)
  return math.min(tonumber(lm) + tonumber(inact), tonumber(det) + tonumber(max))
end

-- addAffected records a distinct target; the first 100 keep their order
-- in a capped list, the set gives the exact total.
local function addAffected(id, target)
  if target == '' then return false end
  if redis.call('SADD', b .. 'a:' .. id, target) == 0 then return false end
  if redis.call('LLEN', b .. 'l:' .. id) < 100 then
    redis.call('RPUSH', b .. 'l:' .. id, target)
  end
  return true
end

-- addMember keeps the highest count seen per member, so occurrences are a
-- sum of absolute values: idempotent and order-insensitive.
local function addMember(id, inc, count, target, now, joined)
  local s = b .. 's:' .. id
  local m = b .. 'm:' .. id
  local changed = false
  local old = redis.call('HGET', m, inc)
  if not old then
    redis.call('HSET', m, inc, count)
    redis.call('HINCRBY', s, 'mem', 1)
    redis.call('HINCRBY', s, 'occ', count)
    if joined then redis.call('HSET', s, 'lm', now) end
    changed = true
  elseif count > tonumber(old) then
    redis.call('HSET', m, inc, count)
    redis.call('HINCRBY', s, 'occ', count - tonumber(old))
    changed = true
  end
  if addAffected(id, target) then changed = true end
  if changed then
    redis.call('HINCRBY', s, 'rev', 1)
    if now > tonumber(redis.call('HGET', s, 'ls')) then redis.call('HSET', s, 'ls', now) end
  end
end

local function expireStorm(id, retain)
  for _, k in ipairs({'s:', 'm:', 'a:', 'l:'}) do
    redis.call('PEXPIRE', b .. k .. id, retain)
  end
end

local function snapshot(id)
  local s = b .. 's:' .. id
  local f = redis.call('HMGET', s, 'type', 'scope', 'sh', 'st', 'rev', 'det', 'lm', 'ls', 'cl', 'inact', 'max', 'mem', 'occ', 'sig', 'reg')
  for i = 1, #f do if not f[i] then f[i] = '' end end
  return {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14], f[15],
    redis.call('SCARD', b .. 'a:' .. id), redis.call('LRANGE', b .. 'l:' .. id, 0, -1)}
end
