"""The Lua of the labelling queue: one script per transition that touches several keys.

Why Lua: a Redis restart or a lost connection can interrupt an operation but never leave
half of it written. No script takes ``KEYS[]``: each builds its keys from the prefix in
``ARGV[1]`` (the names of `service.queue.keys`), so on Redis Cluster give the prefix a hash
tag (``{finkvra}``) to put every key in one slot. Each script's comment names its ARGV.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------
# Lua. ARGV[1] is always the key prefix. Every script reads the clock (TIME) before any
# write when no explicit ``now`` is given, so replicas agree on lease expiries.
# --------------------------------------------------------------------------------------

_LUA_COMMON = """
local P = ARGV[1]
local QUEUE = P .. ':queue'
local LEASES = P .. ':leases'
local LABELLED = P .. ':labelled'
local LAST = P .. ':last_label'
local LABELS = P .. ':labels'
local META = P .. ':meta'
local function item_key(c) return P .. ':item:' .. c end
local function done_key(c) return P .. ':done:' .. c end
local function lease_key(c) return P .. ':lease:' .. c end
local function object_key(o) return P .. ':object:' .. o end
local function clock(arg)
  local t = tonumber(arg)
  if t then return t end
  local tm = redis.call('TIME')
  return tonumber(tm[1]) + tonumber(tm[2]) / 1000000
end
local function requeue_expired(now)
  local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)
  for _, c in ipairs(expired) do
    redis.call('ZREM', LEASES, c)
    redis.call('DEL', lease_key(c))
    local prio = redis.call('HGET', item_key(c), 'priority')
    if prio then redis.call('ZADD', QUEUE, prio, c) end
  end
  if #expired > 0 then redis.call('HINCRBY', META, 'expired', #expired) end
  return #expired
end
local function forget_object(c, ikey)
  local oid = redis.call('HGET', ikey, 'objectId')
  if oid and redis.call('GET', object_key(oid)) == c then redis.call('DEL', object_key(oid)) end
end
"""

# ARGV: prefix, max_size, then 12 per item: candid, objectId, priority, features, scores,
# model_version, lightcurve, links, enqueued_at, feature_version, vetting, survey.
_LUA_PUSH = (
    _LUA_COMMON
    + """
local max_size = tonumber(ARGV[2])
local added, replaced, dropped_labelled, dropped_lower, dropped_leased, duplicates, evicted = 0, 0, 0, 0, 0, 0, 0
for i = 3, #ARGV, 12 do
  local c, oid, prio_s = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local prio = tonumber(prio_s)
  local ikey = item_key(c)
  if redis.call('SISMEMBER', LABELLED, c) == 1 then
    dropped_labelled = dropped_labelled + 1
  elseif redis.call('EXISTS', ikey) == 1 then
    redis.call('HSET', ikey, 'priority', prio_s, 'features', ARGV[i + 3], 'scores', ARGV[i + 4],
      'model_version', ARGV[i + 5], 'lightcurve', ARGV[i + 6], 'links', ARGV[i + 7],
      'feature_version', ARGV[i + 9], 'vetting', ARGV[i + 10], 'survey', ARGV[i + 11])
    if redis.call('ZSCORE', QUEUE, c) then redis.call('ZADD', QUEUE, prio_s, c) end
    duplicates = duplicates + 1
  else
    local okey = object_key(oid)
    local old = redis.call('GET', okey)
    local accept, replacing = true, false
    if old and old ~= c and redis.call('EXISTS', item_key(old)) == 1 then
      if redis.call('ZSCORE', LEASES, old) then
        accept = false
        dropped_leased = dropped_leased + 1
      elseif prio >= tonumber(redis.call('HGET', item_key(old), 'priority')) then
        redis.call('ZREM', QUEUE, old)
        redis.call('DEL', item_key(old))
        replacing = true
      else
        accept = false
        dropped_lower = dropped_lower + 1
      end
    end
    if accept then
      redis.call('HSET', ikey, 'candid', c, 'objectId', oid, 'priority', prio_s,
        'features', ARGV[i + 3], 'scores', ARGV[i + 4], 'model_version', ARGV[i + 5],
        'lightcurve', ARGV[i + 6], 'links', ARGV[i + 7], 'enqueued_at', ARGV[i + 8],
        'feature_version', ARGV[i + 9], 'vetting', ARGV[i + 10], 'survey', ARGV[i + 11])
      redis.call('ZADD', QUEUE, prio_s, c)
      redis.call('SET', okey, c)
      if replacing then replaced = replaced + 1 else added = added + 1 end
    end
  end
end
local over = redis.call('ZCARD', QUEUE) + redis.call('ZCARD', LEASES) - max_size
if over > 0 then
  local popped = redis.call('ZPOPMIN', QUEUE, over)
  for j = 1, #popped, 2 do
    local c = popped[j]
    forget_object(c, item_key(c))
    redis.call('DEL', item_key(c))
    evicted = evicted + 1
  end
end
local counts = {added, replaced, dropped_labelled, dropped_lower, dropped_leased, duplicates, evicted}
local names = {'added', 'replaced', 'dropped_labelled', 'dropped_lower', 'dropped_leased', 'duplicates', 'evicted'}
for k = 1, #names do
  if counts[k] > 0 then redis.call('HINCRBY', META, names[k], counts[k]) end
end
return counts
"""
)

# ARGV: prefix, labeller, n, now ('' = server clock), lease_seconds.
_LUA_LEASE = (
    _LUA_COMMON
    + """
local now = clock(ARGV[4])
requeue_expired(now)
local n = tonumber(ARGV[3])
local expiry = now + tonumber(ARGV[5])
local out = {}
while #out < n do
  local popped = redis.call('ZPOPMAX', QUEUE)
  if #popped == 0 then break end
  local c = popped[1]
  local fields = redis.call('HGETALL', item_key(c))
  if #fields > 0 then
    redis.call('ZADD', LEASES, expiry, c)
    redis.call('SET', lease_key(c), ARGV[2])
    out[#out + 1] = fields
  end
end
if #out > 0 then redis.call('HINCRBY', META, 'leases', #out) end
return out
"""
)

# ARGV: prefix, now ('' = server clock).
_LUA_REQUEUE = _LUA_COMMON + "\nreturn requeue_expired(clock(ARGV[2]))\n"

# ARGV: prefix, candid, labeller.
_LUA_RELEASE = (
    _LUA_COMMON
    + """
local c = ARGV[2]
if redis.call('GET', lease_key(c)) ~= ARGV[3] then return 0 end
redis.call('ZREM', LEASES, c)
redis.call('DEL', lease_key(c))
local prio = redis.call('HGET', item_key(c), 'priority')
if prio then redis.call('ZADD', QUEUE, prio, c) end
redis.call('HINCRBY', META, 'released', 1)
return 1
"""
)

# ARGV: prefix, candid, labeller, now ('' = server clock), lease seconds.
_LUA_RENEW = (
    _LUA_COMMON
    + """
local c = ARGV[2]
if redis.call('GET', lease_key(c)) ~= ARGV[3] then return 0 end
if not redis.call('ZSCORE', LEASES, c) then return 0 end
redis.call('ZADD', LEASES, clock(ARGV[4]) + tonumber(ARGV[5]), c)
return 1
"""
)

# ARGV: prefix, candid, objectId ('' = from the item), label, labeller, timestamp, kind, done_ttl.
_LUA_SUBMIT = (
    _LUA_COMMON
    + """
local c, label, labeller, kind = ARGV[2], ARGV[4], ARGV[5], ARGV[7]
local last = redis.call('HGET', LAST, c)
local prev = false
if last then prev = cjson.decode(last) end
if prev and kind == 'label' then
  if prev['label'] == label then return {'duplicate', prev['id']} end
  return {'conflict', prev['id'], prev['label'], prev['labeller']}
end
local ikey, dkey = item_key(c), done_key(c)
local src = false
if redis.call('EXISTS', ikey) == 1 then src = ikey elseif redis.call('EXISTS', dkey) == 1 then src = dkey end
local function field(name)
  if src then return redis.call('HGET', src, name) or '' end
  return ''
end
local oid = ARGV[3]
if oid == '' then oid = field('objectId') end
if oid == '' and prev and prev['objectId'] then oid = prev['objectId'] end
local id = redis.call('XADD', LABELS, '*', 'candid', c, 'objectId', oid, 'label', label,
  'labeller', labeller, 'timestamp', ARGV[6], 'kind', kind, 'features', field('features'),
  'feature_version', field('feature_version'), 'model_version', field('model_version'),
  'scores', field('scores'), 'priority', field('priority'))
redis.call('SADD', LABELLED, c)
redis.call('HSET', LAST, c, cjson.encode({id = id, label = label, labeller = labeller, kind = kind, objectId = oid}))
if src == ikey then
  redis.call('ZREM', QUEUE, c)
  redis.call('ZREM', LEASES, c)
  redis.call('DEL', lease_key(c))
  forget_object(c, ikey)
  redis.call('RENAME', ikey, dkey)
end
if src then redis.call('EXPIRE', dkey, tonumber(ARGV[8])) end
redis.call('HINCRBY', META, 'labels_' .. kind, 1)
return {'ok', id}
"""
)

# ARGV: prefix, candid, labeller, timestamp, lease ('1'/'0'), now, lease_seconds.
_LUA_UNDO = (
    _LUA_COMMON
    + """
local c, labeller = ARGV[2], ARGV[3]
local now = clock(ARGV[6])
if redis.call('SISMEMBER', LABELLED, c) == 0 then return {'not_labelled'} end
local prev_id, prev_label, oid = '', '', ''
local last = redis.call('HGET', LAST, c)
if last then
  local prev = cjson.decode(last)
  prev_id, prev_label, oid = prev['id'], prev['label'], prev['objectId'] or ''
end
local ikey, dkey = item_key(c), done_key(c)
local restore = redis.call('EXISTS', dkey) == 1
if restore then oid = redis.call('HGET', dkey, 'objectId') or oid end
local id = redis.call('XADD', LABELS, '*', 'candid', c, 'objectId', oid, 'label', '',
  'labeller', labeller, 'timestamp', ARGV[4], 'kind', 'undo', 'undoes', prev_id,
  'undone_label', prev_label, 'features', '', 'feature_version', '', 'model_version', '',
  'scores', '', 'priority', '')
redis.call('SREM', LABELLED, c)
redis.call('HDEL', LAST, c)
redis.call('HINCRBY', META, 'labels_undo', 1)
if not restore then return {'ok', id} end
redis.call('RENAME', dkey, ikey)
redis.call('PERSIST', ikey)
local okey = object_key(oid)
local other = redis.call('GET', okey)
if other and other ~= c and redis.call('EXISTS', item_key(other)) == 1
    and not redis.call('ZSCORE', LEASES, other) then
  redis.call('ZREM', QUEUE, other)
  redis.call('DEL', item_key(other))
end
redis.call('SET', okey, c)
if ARGV[5] == '1' then
  redis.call('ZADD', LEASES, now + tonumber(ARGV[7]), c)
  redis.call('SET', lease_key(c), labeller)
else
  redis.call('ZADD', QUEUE, redis.call('HGET', ikey, 'priority'), c)
end
return {'ok', id, redis.call('HGETALL', ikey)}
"""
)

# ARGV: prefix, model_version JSON for meta ('' = leave), then 5 per item: candid,
# enqueued_at (must still match: the item was not replaced/labelled), priority, scores, model_version.
_LUA_RESCORE = (
    _LUA_COMMON
    + """
local updated = 0
for i = 3, #ARGV, 5 do
  local c = ARGV[i]
  local ikey = item_key(c)
  if redis.call('HGET', ikey, 'enqueued_at') == ARGV[i + 1] then
    redis.call('HSET', ikey, 'priority', ARGV[i + 2], 'scores', ARGV[i + 3], 'model_version', ARGV[i + 4])
    if redis.call('ZSCORE', QUEUE, c) then redis.call('ZADD', QUEUE, ARGV[i + 2], c) end
    updated = updated + 1
  end
end
if ARGV[2] ~= '' then redis.call('HSET', META, 'model_version', ARGV[2]) end
if updated > 0 then redis.call('HINCRBY', META, 'rescored', updated) end
return updated
"""
)
