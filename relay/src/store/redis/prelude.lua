local function s(x) return string.format('%.0f', x) end
-- Removes the messages of `msgs` with at <= cutoff; returns how many and
-- their bytes. A missing key means Redis expired all of them: then it is
-- everything `n` and `bytes` counted.
local function trim(msgs, cutoff, n, bytes)
  if redis.call('EXISTS', msgs) == 0 then return n, bytes end
  local old = redis.call('ZRANGEBYSCORE', msgs, '-inf', s(cutoff))
  local size = 0
  for _, m in ipairs(old) do size = size + #m - 20 end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', msgs, '-inf', s(cutoff)) end
  return #old, size
end
