-- ARGV: 1 now ms, 2 window ms, 3 threshold, 4 incident id, 5 unit,
-- 6 target, 7 candidate storm id, 8 type, 9 scope json, 10 scope hash,
-- 11 signal, 12 count, 13 inactivity ms, 14 max duration ms, 15 retain ms
local now, window, threshold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local inc, unit, target = ARGV[4], ARGV[5], ARGV[6]
local count, retain = tonumber(ARGV[12]), tonumber(ARGV[15])
local dec = b .. 'dec'

-- A redelivered incident gets its first verdict back, nothing counted.
local prev = redis.call('HGET', dec, inc)
if prev then
  if prev == 'i' then return {'individual', 1} end
  local v = 'member'
  if string.sub(prev, 1, 2) == 'o:' then v = 'opened' end
  return {v, 1, snapshot(string.sub(prev, 3))}
end

local win, tgt, cur = b .. 'win', b .. 'tgt', b .. 'cur'
redis.call('ZREMRANGEBYSCORE', win, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', tgt, '-inf', now - window)
redis.call('ZADD', win, 'GT', now, unit)
if target ~= '' then redis.call('ZADD', tgt, 'GT', now, target) end
for _, k in ipairs({win, tgt, dec}) do redis.call('PEXPIRE', k, retain) end

-- Join the open storm unless its window has ended (its close may not be
-- published yet, but it takes no more members: a later burst is a new
-- storm).
local id = redis.call('GET', cur)
if id then
  local f = redis.call('HMGET', b .. 's:' .. id, 'st', 'lm', 'det', 'inact', 'max')
  if f[1] == 'open' and now < deadline(f[2], f[3], f[4], f[5]) then
    redis.call('HSET', dec, inc, 'm:' .. id)
    addMember(id, inc, count, target, now, true)
    expireStorm(id, retain)
    return {'member', 0, snapshot(id)}
  end
end

if redis.call('ZCARD', win) > threshold then
  id = ARGV[7]
  local s = b .. 's:' .. id
  redis.call('HSET', s, 'type', ARGV[8], 'scope', ARGV[9], 'sh', ARGV[10], 'sig', ARGV[11], 'st', 'open',
    'det', now, 'lm', now, 'ls', now, 'inact', ARGV[13], 'max', ARGV[14], 'rev', 0, 'mem', 0, 'occ', 0, 'reg', 0)
  -- The storm lists every target seen in the window, the precursors
  -- that stayed individual included.
  for _, t in ipairs(redis.call('ZRANGE', tgt, 0, -1)) do addAffected(id, t) end
  addMember(id, inc, count, target, now, true)
  redis.call('HSET', s, 'rev', 1)
  redis.call('SET', cur, id, 'PX', retain)
  redis.call('HSET', dec, inc, 'o:' .. id)
  expireStorm(id, retain)
  return {'opened', 0, snapshot(id)}
end

redis.call('HSET', dec, inc, 'i')
return {'individual', 0}
