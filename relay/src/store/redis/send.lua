local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local idle, backstop = tonumber(ARGV[6]), tonumber(ARGV[7])
local v = redis.call('HMGET', KEYS[1], 'last', 'n', 'bytes', 'check')
local created, last, n, bytes, check = 0, 0, 0, 0, now
if v[1] then
  last, n, bytes, check = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or now
else
  if ARGV[4] ~= '1' then return {2, 0, 0, 0, 0} end
  created = 1
  last = tonumber(redis.call('GET', KEYS[3]) or '0')
  redis.call('DEL', KEYS[2])
end
local rn, rb = 0, 0
if created == 0 then
  rn, rb = trim(KEYS[2], now - ttl, n, bytes)
  n, bytes = math.max(0, n - rn), math.max(0, bytes - rb)
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  if created == 0 and rn > 0 then redis.call('HSET', KEYS[1], 'n', s(n), 'bytes', s(bytes)) end
  return {1, 0, 0, rn, rb}
end
local at = math.max(now, last + 1)
redis.call('ZADD', KEYS[2], s(at), string.format('%020.0f', at) .. ARGV[5])
redis.call('HSET', KEYS[1], 'last', s(at), 'n', s(n + 1), 'bytes', s(bytes + #ARGV[5]), 'check', s(check))
local keep = math.floor((at + ttl - now) / 1000) + 1
redis.call('PEXPIRE', KEYS[2], keep)
-- The mailbox outlives its newest message even when it is overdue for
-- idle removal (the sweep removes it, with its messages).
redis.call('PEXPIRE', KEYS[1], math.max(keep, math.floor((check + idle - now) / 1000) + backstop))
if created == 1 then redis.call('DEL', KEYS[3]) end
return {0, at, created, rn, rb}
