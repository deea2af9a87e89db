-- ARGV: 1 now ms, 2 window ms, 3 threshold, 4 incident id, 5 unit,
-- 6 target, 7 candidate storm id, 8 type, 9 scope json, 10 scope hash,
-- 11 signal, 12 count, 13 inactivity ms, 14 max duration ms, 15 retain ms,
-- 16 storm id the caller knows, 17 its detection ms, 18 its affected
-- targets held (see reply), 19 '1' when 9 and 11 are sent.
--
-- The scope and the signal are kept only by the observation that opens a
-- storm, so the caller sends them only then: without them, an observation
-- that would open one replies {'opening'} having changed nothing but the
-- window bookkeeping, which the same call with them repeats unchanged.
local now, window, threshold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local inc, unit, target = ARGV[4], ARGV[5], ARGV[6]
local count, retain = tonumber(ARGV[12]), tonumber(ARGV[15])
local dec = b .. 'dec'

local function known(id)
  if id == ARGV[16] then return tonumber(ARGV[17]), tonumber(ARGV[18]) end
  return -1, 0
end

-- A redelivered incident gets its first verdict back, nothing counted.
local prev = redis.call('HGET', dec, inc)
if prev then
  if prev == 'i' then return {'individual', 1} end
  local v = 'member'
  if string.sub(prev, 1, 2) == 'o:' then v = 'opened' end
  local id = string.sub(prev, 3)
  local r = load(id)
  -- A storm expired long after its close is reported by id alone.
  if not r then return {v, 1, {id, '', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, {}}} end
  return {v, 1, reply(r, known(id))}
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
  local r = load(id)
  if r and r.st == 'open' and now < deadline(r.lm, r.det, r.inact, r.max) then
    redis.call('HSET', dec, inc, 'm:' .. id)
    if addMember(r, inc, count, target, now, true, retain) then save(r, now, retain) end
    return {'member', 0, reply(r, known(id))}
  end
end

if redis.call('ZCARD', win) > threshold then
  if ARGV[19] ~= '1' then return {'opening'} end
  id = ARGV[7]
  redis.call('HSET', b .. 's:' .. id, 'type', ARGV[8], 'scope', ARGV[9], 'sh', ARGV[10], 'sig', ARGV[11], 'st', 'open',
    'det', now, 'inact', ARGV[13], 'max', ARGV[14], 'reg', 0)
  local r = {id = id, st = 'open', rev = 0, det = now, lm = now, ls = now, cl = 0, inact = tonumber(ARGV[13]),
    max = tonumber(ARGV[14]), mem = 0, occ = 0, aff = 0, nl = 0, reg = 0}
  -- The storm lists every target seen in the window, the precursors
  -- that stayed individual included.
  for _, t in ipairs(redis.call('ZRANGE', tgt, 0, -1)) do addAffected(r, t, retain) end
  addMember(r, inc, count, target, now, true, retain)
  r.rev = 1
  save(r, now, retain)
  redis.call('SET', cur, id, 'PX', retain)
  redis.call('HSET', dec, inc, 'o:' .. id)
  return {'opened', 0, reply(r, known(id))}
end

redis.call('HSET', dec, inc, 'i')
return {'individual', 0}
