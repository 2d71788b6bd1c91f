local stored = redis.call('HGET', KEYS[1], 'push')
if not stored then return 0 end
if ARGV[1] ~= '' and cjson.decode(stored).endpoint ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'push')
return 1
