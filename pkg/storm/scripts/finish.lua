-- ARGV: 1 storm id, 2 token. Returns 1 when this call closed the storm,
-- 0 when the token lost its claim, 2 when it was already closed.
local id, token = ARGV[1], ARGV[2]
local s = b .. 's:' .. id
local f = redis.call('HMGET', s, 'st', 'tok')
if not f[1] or f[1] == 'closed' then return 2 end
if f[1] ~= 'closing' or f[2] ~= token then return 0 end
redis.call('HSET', s, 'st', 'closed')
redis.call('HDEL', s, 'tok', 'lease')
if redis.call('GET', b .. 'cur') == id then redis.call('DEL', b .. 'cur') end
return 1
