-- ARGV: 1 storm id, 2 now ms, 3 token, 4 lease ms
local id, now, token = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local s = b .. 's:' .. id
local f = redis.call('HMGET', s, 'st', 'lm', 'det', 'inact', 'max', 'tok', 'lease')
if not f[1] or f[1] == 'closed' then return {'done'} end
if f[1] == 'open' then
  local dl = deadline(f[2], f[3], f[4], f[5])
  if now < dl then return {'notdue', dl} end
  -- The first claim fixes the close's time and revision, so whoever
  -- publishes it (this claimant or a later one) publishes the same event.
  redis.call('HSET', s, 'st', 'closing', 'cl', dl)
  redis.call('HINCRBY', s, 'rev', 1)
elseif f[6] ~= token and now < tonumber(f[7]) then
  return {'busy', tonumber(f[7])}
end
redis.call('HSET', s, 'tok', token, 'lease', now + tonumber(ARGV[4]))
return {'claimed', 0, snapshot(id)}
