"""Lua scripts that keep the forward bindings, the pod -> users index and last-seen in step.

Each runs atomically on the one slot of its service. A binding is stored as "<pod>|<bound_at>".
"""

# KEYS: bindings, last_seen, pod_users(pod)   ARGV: uid, pod, now
# -> {1, value} when this call bound the user, {0, value} with the existing binding otherwise.
BIND_IF_ABSENT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  return {0, cur}
end
local value = ARGV[2] .. '|' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {1, value}
"""

# KEYS: bindings, last_seen   ARGV: pod_users_prefix, now, expected_from ('' = any), to, uid...
# Moves each uid to pod `to` if it is bound to `expected_from` (or bound at all when '');
# unbound uids are bound when expected_from is ''. Returns the uids moved or bound.
MOVE = """
local moved = {}
local to = ARGV[4]
for i = 5, #ARGV do
  local uid = ARGV[i]
  local cur = redis.call('HGET', KEYS[1], uid)
  local from = cur and string.match(cur, '^(%d+)|') or nil
  if (ARGV[3] == '' or from == ARGV[3]) and from ~= to then
    if from then
      redis.call('SREM', ARGV[1] .. from, uid)
    end
    redis.call('HSET', KEYS[1], uid, to .. '|' .. ARGV[2])
    redis.call('SADD', ARGV[1] .. to, uid)
    redis.call('ZADD', KEYS[2], ARGV[2], uid)
    moved[#moved + 1] = uid
  end
end
return moved
"""

# KEYS: bindings, last_seen   ARGV: pod_users_prefix, uid
# -> the removed binding's value, or false.
UNBIND = """
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then
  return false
end
local from = string.match(cur, '^(%d+)|')
redis.call('SREM', ARGV[1] .. from, ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
return cur
"""

# KEYS: bindings, last_seen   ARGV: pod_users_prefix, cutoff, limit
# Forgets up to `limit` users last seen at or before `cutoff`; returns how many.
EXPIRE_IDLE = """
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, uid in ipairs(idle) do
  local cur = redis.call('HGET', KEYS[1], uid)
  if cur then
    redis.call('SREM', ARGV[1] .. string.match(cur, '^(%d+)|'), uid)
    redis.call('HDEL', KEYS[1], uid)
  end
  redis.call('ZREM', KEYS[2], uid)
end
return #idle
"""
