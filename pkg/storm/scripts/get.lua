-- ARGV: 1 storm id
local r = load(ARGV[1])
if not r then return {'gone'} end
return {'ok', reply(r, -1, 0)}
