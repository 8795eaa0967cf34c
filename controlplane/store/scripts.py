"""Lua scripts that keep the forward bindings, the pod -> users index and last-seen in step.

Each runs atomically on the one slot of its service and touches only keys it is given in
KEYS, as Redis Cluster requires (the cluster routes a script by its KEYS; a key built inside
Lua is invisible to it). A binding is stored as "<pod>|<bound_at>".

The binding scripts share one calling convention:
  KEYS[1] bindings, KEYS[2] last_seen, then keys of the script's own (BIND_MANY: the new-user
  token bucket), and last the reverse-index sets of some pods;
  ARGV[1] those pods' indexes, comma-separated, in KEYS order; ARGV[2..] the script's own.
A script that meets a binding to a pod whose set was not declared leaves that user alone and
names the pod in its reply, ``{result, undeclared_pods}``; the caller declares it and reruns
(every script is idempotent). A pod index is only known once the binding has been read, so
this is how a caller learns which sets to declare without a racy read beforehand.
"""

_DECLARED_PODS = """
local users_of = {}
do
  local pods = {}
  for pod in string.gmatch(ARGV[1], '%d+') do
    pods[#pods + 1] = pod
  end
  for i, pod in ipairs(pods) do
    users_of[pod] = KEYS[#KEYS - #pods + i]
  end
end
local undeclared, noted = {}, {}
-- The reverse-index set of `pod`, or nil (and the pod noted) when it was not declared.
local function users_key(pod)
  local key = users_of[pod]
  if not key and not noted[pod] then
    noted[pod] = true
    undeclared[#undeclared + 1] = pod
  end
  return key
end
local function pod_of(value)
  return string.match(value, '^(%d+)|')
end
"""

# KEYS[3]: the service's new-user token bucket (HASH tokens, at), absent while full.
# ARGV: pods, now, max_bound_users, new_per_s, burst, uid1, pod1, uid2, pod2, ...
#   (every pod named must be declared; the three limits '' for none)
# -> {{code, value, code, value, ...}, {}}: per uid, 1 when this call bound it and 0 when it
#    was bound already (value: the binding it has now; the existing one wins: first writer
#    wins), or -1 (the service holds max_bound_users) or -2 (no token left), value ''.
BIND_MANY = (
    _DECLARED_PODS
    + """
local now = tonumber(ARGV[2])
local max_users, rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local count = max_users and redis.call('HLEN', KEYS[1])
local tokens, at, spent
if rate then
  local bucket = redis.call('HMGET', KEYS[3], 'tokens', 'at')
  tokens, at = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now
  if now > at then  -- a replica whose clock lags refills nothing, and takes nothing back
    tokens = math.min(burst, tokens + (now - at) * rate)
    at = now
  end
end
local out = {}
for i = 6, #ARGV, 2 do
  local uid, pod = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], uid)
  if cur then
    out[#out + 1] = 0
    out[#out + 1] = cur
  elseif count and count >= max_users then
    out[#out + 1] = -1
    out[#out + 1] = ''
  elseif tokens and tokens < 1 then
    out[#out + 1] = -2
    out[#out + 1] = ''
  else
    local users = users_key(pod)
    if not users then
      return redis.error_reply('BIND_MANY: pod ' .. pod .. ' not declared')
    end
    local value = pod .. '|' .. ARGV[2]
    redis.call('HSET', KEYS[1], uid, value)
    redis.call('SADD', users, uid)
    redis.call('ZADD', KEYS[2], ARGV[2], uid)
    out[#out + 1] = 1
    out[#out + 1] = value
    if count then
      count = count + 1
    end
    if tokens then
      tokens = tokens - 1
      spent = true
    end
  end
end
if spent then
  -- Kept only until it would have refilled: an absent bucket is a full one.
  redis.call('HSET', KEYS[3], 'tokens', tostring(tokens), 'at', ARGV[2])
  redis.call('PEXPIRE', KEYS[3], math.ceil((burst - tokens) / rate * 1000) + 1000)
end
return {out, undeclared}
"""
)

# ARGV: pods, now, expected_from ('' = any), to (declared), uid...
# Moves each uid to pod `to` if it is bound to `expected_from` (or bound at all when '');
# unbound uids are bound when expected_from is ''. -> {uids moved or bound, undeclared}.
MOVE = (
    _DECLARED_PODS
    + """
local moved = {}
local to = ARGV[4]
local to_users = users_key(to)
if not to_users then
  return redis.error_reply('MOVE: target pod ' .. to .. ' not declared')
end
for i = 5, #ARGV do
  local uid = ARGV[i]
  local cur = redis.call('HGET', KEYS[1], uid)
  local from = cur and pod_of(cur) or nil
  if (ARGV[3] == '' or from == ARGV[3]) and from ~= to then
    local from_users = from and users_key(from)
    if from_users or not from then
      if from_users then
        redis.call('SREM', from_users, uid)
      end
      redis.call('HSET', KEYS[1], uid, to .. '|' .. ARGV[2])
      redis.call('SADD', to_users, uid)
      redis.call('ZADD', KEYS[2], ARGV[2], uid)
      moved[#moved + 1] = uid
    end
  end
end
return {moved, undeclared}
"""
)

# ARGV: pods, uid   -> {the removed binding's value, or '' when unbound, undeclared}
UNBIND = (
    _DECLARED_PODS
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then
  return {'', undeclared}
end
local users = users_key(pod_of(cur))
if not users then
  return {'', undeclared}
end
redis.call('SREM', users, ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
return {cur, undeclared}
"""
)

# ARGV: pods, cutoff, limit
# Forgets up to `limit` users last seen at or before `cutoff`. -> {how many, undeclared}
EXPIRE_IDLE = (
    _DECLARED_PODS
    + """
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local forgotten = 0
for _, uid in ipairs(idle) do
  local cur = redis.call('HGET', KEYS[1], uid)
  local users = cur and users_key(pod_of(cur))
  if users or not cur then
    if users then
      redis.call('SREM', users, uid)
      redis.call('HDEL', KEYS[1], uid)
    end
    redis.call('ZREM', KEYS[2], uid)
    forgotten = forgotten + 1
  end
end
return {forgotten, undeclared}
"""
)

# KEYS: pods   ARGV: field, expected value, new value
# Compare-and-set of one pod: -> 1 when written, 0 when the field no longer holds `expected`.
# (Works the same on every topology, unlike WATCH/MULTI through a cluster client.)
SET_POD_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
