local now, ttl, idle = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'last', 'n', 'bytes', 'check')
if not v[1] then
  redis.call('DEL', KEYS[2], KEYS[3])
  return {0, 0, 0, 0}
end
if ARGV[3] == 'empty' and redis.call('ZCOUNT', KEYS[2], '(' .. s(now - ttl), '+inf') > 0 then
  return {2, 0, 0, 0}
end
if ARGV[3] == 'idle' then
  local check = tonumber(v[4]) or 0
  if check + idle > now then return {3, check, 0, 0} end
end
local had = redis.call('EXISTS', KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local floor = math.max(tonumber(v[1]), tonumber(redis.call('GET', KEYS[4]) or '0'))
redis.call('SET', KEYS[4], s(floor), 'PX', ARGV[5])
return {1, tonumber(v[2]) or 0, tonumber(v[3]) or 0, had}
