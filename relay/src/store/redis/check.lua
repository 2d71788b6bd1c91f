local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local persist, idle, backstop = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'last', 'n', 'check')
  out[i] = 0
  if v[1] then
    local last, n, check = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
    if n > 0 and last > tonumber(ARGV[5 + i]) and last + ttl > now then out[i] = 1 end
    if now > check and now - check >= persist then
      redis.call('HSET', key, 'check', s(now))
      redis.call('PEXPIRE', key, math.floor(idle / 1000) + backstop)
    end
  end
end
return out
