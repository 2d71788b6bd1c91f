local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'last', 'n', 'bytes')
if not v[1] then return {0, 0, 0, -1} end
local n, bytes = tonumber(v[2]) or 0, tonumber(v[3]) or 0
local rn, rb = trim(KEYS[2], now - ttl, n, bytes)
if rn > 0 then
  redis.call('HSET', KEYS[1], 'n', s(math.max(0, n - rn)), 'bytes', s(math.max(0, bytes - rb)))
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0)
local oldest = -1
if first[1] then oldest = tonumber(string.sub(first[1], 1, 20)) end
return {1, rn, rb, oldest}
