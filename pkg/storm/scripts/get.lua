-- ARGV: 1 storm id
local id = ARGV[1]
if redis.call('EXISTS', b .. 's:' .. id) == 0 then return {'gone'} end
return {'ok', 0, snapshot(id)}
