-- ARGV: 1 storm id, 2 now ms, 3 token, 4 lease ms
local id, now, token = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local s = b .. 's:' .. id
local r = load(id)
if not r or r.st == 'closed' then return {'done'} end
if r.st == 'open' then
  local dl = deadline(r.lm, r.det, r.inact, r.max)
  if now < dl then return {'notdue', dl} end
  -- The first claim fixes the close's time and revision, so whoever
  -- publishes it (this claimant or a later one) publishes the same event.
  r.st, r.cl, r.rev = 'closing', dl, r.rev + 1
  redis.call('HSET', s, 'st', 'closing', 'cl', dl, 'rev', r.rev)
else
  local f = redis.call('HMGET', s, 'tok', 'lease')
  if f[1] ~= token and now < tonumber(f[2]) then return {'busy', tonumber(f[2])} end
end
redis.call('HSET', s, 'tok', token, 'lease', now + tonumber(ARGV[4]))
return {'claimed', 0, reply(r, -1, 0)}
