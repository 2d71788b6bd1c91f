local now, t, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + t
if new - now > burst * t then return 0 end
redis.call('SET', KEYS[1], s(new), 'PX', math.floor((new - now) / 1000) + 1)
return 1
