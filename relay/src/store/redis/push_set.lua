if redis.call('HEXISTS', KEYS[1], 'last') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'push', ARGV[1])
return 1
