local cur = redis.call('HMGET', KEYS[2], 'e', 'v')
if cur[1] and tonumber(cur[1]) > tonumber(ARGV[1]) then return {0, cur[1], cur[2]} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {2} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'e', ARGV[2], 'v', ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return {1}
