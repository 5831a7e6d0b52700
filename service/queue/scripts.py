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
local DISCOVER = P .. ':discover'
local SECOND = P .. ':second-look'
local QUEUE_OF = {teach = QUEUE, discover = DISCOVER, ['second-look'] = SECOND}
local LETTER_OF = {teach = 't', discover = 'd', ['second-look'] = 's'}
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
-- Waiting again (an expired or released lease, an undo): back into the queues the item
-- waited in when leased ('waiting_in': t teach, d discover, s second-look; 'td' for
-- items that never were leased, d only when it has a discovery rank).
local function put_back(c)
  local f = redis.call('HMGET', item_key(c), 'priority', 'discovery', 'waiting_in')
  if not f[1] then return end
  local w = f[3]
  if not w or w == '' then w = 'td' end
  if string.find(w, 't', 1, true) then redis.call('ZADD', QUEUE, f[1], c) end
  if string.find(w, 'd', 1, true) and f[2] and f[2] ~= '' then redis.call('ZADD', DISCOVER, f[2], c) end
  if string.find(w, 's', 1, true) then redis.call('ZADD', SECOND, f[1], c) end
end
-- Out of every queue (a lease): which ones it was in, as put_back reads them.
local function take(c)
  local w = ''
  if redis.call('ZREM', QUEUE, c) == 1 then w = w .. 't' end
  if redis.call('ZREM', DISCOVER, c) == 1 then w = w .. 'd' end
  if redis.call('ZREM', SECOND, c) == 1 then w = w .. 's' end
  return w
end
local function requeue_expired(now)
  local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)
  for _, c in ipairs(expired) do
    redis.call('ZREM', LEASES, c)
    redis.call('DEL', lease_key(c))
    put_back(c)
  end
  if #expired > 0 then redis.call('HINCRBY', META, 'expired', #expired) end
  return #expired
end
local function forget_object(c, ikey)
  local oid = redis.call('HGET', ikey, 'objectId')
  if oid and redis.call('GET', object_key(oid)) == c then redis.call('DEL', object_key(oid)) end
end
"""

# ARGV: prefix, max_size, then 13 per item: candid, objectId, priority, features, scores,
# model_version, lightcurve, links, enqueued_at, feature_version, vetting, survey, discovery
# (the discovery rank: also queued in ``discover``; '' not for discovery; 'g' auto-garbage).
_LUA_PUSH = (
    _LUA_COMMON
    + """
local max_size = tonumber(ARGV[2])
local added, replaced, dropped_labelled, dropped_lower, dropped_leased, duplicates, evicted = 0, 0, 0, 0, 0, 0, 0
local discover, garbage = 0, 0
for i = 3, #ARGV, 13 do
  local c, oid, prio_s = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local prio = tonumber(prio_s)
  local ikey = item_key(c)
  local rank = ARGV[i + 12]
  if rank == 'g' then rank = '' end
  if redis.call('SISMEMBER', LABELLED, c) == 1 then
    dropped_labelled = dropped_labelled + 1
  elseif redis.call('EXISTS', ikey) == 1 then
    redis.call('HSET', ikey, 'priority', prio_s, 'features', ARGV[i + 3], 'scores', ARGV[i + 4],
      'model_version', ARGV[i + 5], 'lightcurve', ARGV[i + 6], 'links', ARGV[i + 7],
      'feature_version', ARGV[i + 9], 'vetting', ARGV[i + 10], 'survey', ARGV[i + 11],
      'discovery', rank)
    local in_teach = redis.call('ZSCORE', QUEUE, c)
    if in_teach then redis.call('ZADD', QUEUE, prio_s, c) end
    if in_teach or redis.call('ZSCORE', DISCOVER, c) then
      if rank ~= '' then redis.call('ZADD', DISCOVER, rank, c) else redis.call('ZREM', DISCOVER, c) end
    end
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
        redis.call('ZREM', DISCOVER, old)
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
        'feature_version', ARGV[i + 9], 'vetting', ARGV[i + 10], 'survey', ARGV[i + 11],
        'discovery', rank)
      redis.call('ZADD', QUEUE, prio_s, c)
      if rank ~= '' then
        redis.call('ZADD', DISCOVER, rank, c)
        discover = discover + 1
      elseif ARGV[i + 12] == 'g' then
        garbage = garbage + 1
      end
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
    if not redis.call('ZSCORE', DISCOVER, c) then  -- still worth eyeballing: kept there
      forget_object(c, item_key(c))
      redis.call('DEL', item_key(c))
    end
    evicted = evicted + 1
  end
end
-- The discover queue has the same bound, lowest rank out first.
local over_d = redis.call('ZCARD', DISCOVER) - max_size
if over_d > 0 then
  local popped = redis.call('ZPOPMIN', DISCOVER, over_d)
  for j = 1, #popped, 2 do
    local c = popped[j]
    if not redis.call('ZSCORE', QUEUE, c) then
      forget_object(c, item_key(c))
      redis.call('DEL', item_key(c))
    end
    evicted = evicted + 1
  end
end
local counts = {added, replaced, dropped_labelled, dropped_lower, dropped_leased, duplicates, evicted, discover, garbage}
local names = {'added', 'replaced', 'dropped_labelled', 'dropped_lower', 'dropped_leased', 'duplicates', 'evicted', 'discover_added', 'discover_garbage'}
for k = 1, #names do
  if counts[k] > 0 then redis.call('HINCRBY', META, names[k], counts[k]) end
end
return counts
"""
)

# ARGV: prefix, labeller, n, now ('' = server clock), lease_seconds, queue (teach, discover,
# second-look). A leased item leaves every queue it waited in; a second-look item is never
# leased to its ``not_by`` labeller (it stays waiting for someone else).
_LUA_LEASE = (
    _LUA_COMMON
    + """
local now = clock(ARGV[4])
requeue_expired(now)
local n = tonumber(ARGV[3])
local expiry = now + tonumber(ARGV[5])
local name = ARGV[6]
local Q = QUEUE_OF[name]
local out = {}
local function hand(c, w)
  local ikey = item_key(c)
  redis.call('HSET', ikey, 'waiting_in', w, 'leased_from', name)
  redis.call('ZADD', LEASES, expiry, c)
  redis.call('SET', lease_key(c), ARGV[2])
  out[#out + 1] = redis.call('HGETALL', ikey)
end
if Q == SECOND then
  for _, c in ipairs(redis.call('ZREVRANGE', SECOND, 0, -1)) do
    if #out >= n then break end
    if redis.call('EXISTS', item_key(c)) == 0 then
      redis.call('ZREM', SECOND, c)
    elseif redis.call('HGET', item_key(c), 'not_by') ~= ARGV[2] then
      hand(c, take(c))
    end
  end
else
  while #out < n do
    local popped = redis.call('ZPOPMAX', Q)
    if #popped == 0 then break end
    local c = popped[1]
    if redis.call('EXISTS', item_key(c)) == 1 then hand(c, LETTER_OF[name] .. take(c)) end
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
put_back(c)
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
# A labelled candid waiting for a second look (its item has ``not_by``) takes a plain label
# from anyone but ``not_by``: a second vote (`LabelStore` resolves the votes). The event's
# ``queue`` is where the label was given (teach, discover, second-look) and ``queued_by``
# the item's ``vetting.queued_by`` (which strategy or bandit expert asked for it).
_LUA_SUBMIT = (
    _LUA_COMMON
    + """
local c, label, labeller, kind = ARGV[2], ARGV[4], ARGV[5], ARGV[7]
local ikey, dkey = item_key(c), done_key(c)
local second = false
if redis.call('EXISTS', ikey) == 1 then
  local nb = redis.call('HGET', ikey, 'not_by')
  if nb and nb ~= '' and nb ~= labeller then second = true end
end
local last = redis.call('HGET', LAST, c)
local prev = false
if last then prev = cjson.decode(last) end
if prev and kind == 'label' and not second then
  if prev['label'] == label then return {'duplicate', prev['id']} end
  return {'conflict', prev['id'], prev['label'], prev['labeller']}
end
local src = false
if redis.call('EXISTS', ikey) == 1 then src = ikey elseif redis.call('EXISTS', dkey) == 1 then src = dkey end
local function field(name)
  if src then return redis.call('HGET', src, name) or '' end
  return ''
end
local oid = ARGV[3]
if oid == '' then oid = field('objectId') end
if oid == '' and prev and prev['objectId'] then oid = prev['objectId'] end
local queue = field('leased_from')
if second then queue = 'second-look' elseif queue == '' then queue = 'teach' end
local queued_by = ''
local vetting = field('vetting')
if vetting ~= '' and not second then
  local ok, decoded = pcall(cjson.decode, vetting)
  if ok and type(decoded) == 'table' and type(decoded['queued_by']) == 'table' then
    queued_by = cjson.encode(decoded['queued_by'])
  end
end
local id = redis.call('XADD', LABELS, '*', 'candid', c, 'objectId', oid, 'label', label,
  'labeller', labeller, 'timestamp', ARGV[6], 'kind', kind, 'features', field('features'),
  'feature_version', field('feature_version'), 'model_version', field('model_version'),
  'scores', field('scores'), 'priority', field('priority'), 'queue', queue,
  'queued_by', queued_by)
redis.call('SADD', LABELLED, c)
redis.call('HSET', LAST, c, cjson.encode({id = id, label = label, labeller = labeller, kind = kind, objectId = oid}))
if src == ikey then
  redis.call('ZREM', QUEUE, c)
  redis.call('ZREM', DISCOVER, c)
  redis.call('ZREM', SECOND, c)
  redis.call('ZREM', LEASES, c)
  redis.call('DEL', lease_key(c))
  forget_object(c, ikey)
  redis.call('RENAME', ikey, dkey)
end
if src then redis.call('EXPIRE', dkey, tonumber(ARGV[8])) end
redis.call('HINCRBY', META, 'labels_' .. kind, 1)
if second then redis.call('HINCRBY', META, 'labels_second_look', 1) end
return {'ok', id}
"""
)

# ARGV: prefix, candid, labeller, timestamp, lease ('1'/'0'), now, lease_seconds.
# The undo of a second-look vote withdraws that vote only: the first label stands (the
# candid stays labelled, ``last_label`` is the first label again) and the item goes back
# to the second-look queue (leased to the undoer with ``lease``).
_LUA_UNDO = (
    _LUA_COMMON
    + """
local c, labeller = ARGV[2], ARGV[3]
local now = clock(ARGV[6])
if redis.call('SISMEMBER', LABELLED, c) == 0 then return {'not_labelled'} end
local prev_id, prev_label, oid, prev_by = '', '', '', ''
local last = redis.call('HGET', LAST, c)
if last then
  local prev = cjson.decode(last)
  prev_id, prev_label, oid, prev_by = prev['id'], prev['label'], prev['objectId'] or '', prev['labeller'] or ''
end
local ikey, dkey = item_key(c), done_key(c)
local restore = redis.call('EXISTS', dkey) == 1
local second_vote, first = false, false
if restore then
  oid = redis.call('HGET', dkey, 'objectId') or oid
  local nb = redis.call('HGET', dkey, 'not_by')
  first = redis.call('HGET', dkey, 'first_label')
  second_vote = nb and nb ~= '' and nb ~= prev_by and first and first ~= ''
end
local queue = 'teach'
if second_vote then queue = 'second-look' elseif restore then
  queue = redis.call('HGET', dkey, 'leased_from') or 'teach'
end
local id = redis.call('XADD', LABELS, '*', 'candid', c, 'objectId', oid, 'label', '',
  'labeller', labeller, 'timestamp', ARGV[4], 'kind', 'undo', 'undoes', prev_id,
  'undone_label', prev_label, 'features', '', 'feature_version', '', 'model_version', '',
  'scores', '', 'priority', '', 'queue', queue, 'queued_by', '')
redis.call('HINCRBY', META, 'labels_undo', 1)
if second_vote then
  redis.call('HSET', LAST, c, first)
  redis.call('RENAME', dkey, ikey)
  redis.call('PERSIST', ikey)
  if ARGV[5] == '1' then
    redis.call('HSET', ikey, 'waiting_in', 's', 'leased_from', 'second-look')
    redis.call('ZADD', LEASES, now + tonumber(ARGV[7]), c)
    redis.call('SET', lease_key(c), labeller)
  else
    redis.call('ZADD', SECOND, redis.call('HGET', ikey, 'priority'), c)
  end
  return {'ok', id, redis.call('HGETALL', ikey)}
end
redis.call('SREM', LABELLED, c)
redis.call('HDEL', LAST, c)
-- A second look of this label is moot now that the label is withdrawn.
if redis.call('ZREM', SECOND, c) == 1 then redis.call('DEL', ikey) end
if not restore then return {'ok', id} end
redis.call('RENAME', dkey, ikey)
redis.call('PERSIST', ikey)
redis.call('HDEL', ikey, 'not_by', 'first_label', 'second_look')
local okey = object_key(oid)
local other = redis.call('GET', okey)
if other and other ~= c and redis.call('EXISTS', item_key(other)) == 1
    and not redis.call('ZSCORE', LEASES, other) then
  redis.call('ZREM', QUEUE, other)
  redis.call('ZREM', DISCOVER, other)
  redis.call('DEL', item_key(other))
end
redis.call('SET', okey, c)
if ARGV[5] == '1' then
  redis.call('ZADD', LEASES, now + tonumber(ARGV[7]), c)
  redis.call('SET', lease_key(c), labeller)
else
  put_back(c)
end
return {'ok', id, redis.call('HGETALL', ikey)}
"""
)

# ARGV: prefix, candid, labeller to avoid (not_by), priority, reason JSON, then the item's
# hash as field, value pairs (used when its ``done:<candid>`` copy has expired).
# Only a labelled candid not already waiting or leased for a second look is queued.
_LUA_SECOND_LOOK = (
    _LUA_COMMON
    + """
local c = ARGV[2]
if redis.call('SISMEMBER', LABELLED, c) == 0 then return 0 end
local ikey, dkey = item_key(c), done_key(c)
if redis.call('EXISTS', ikey) == 1 then return 0 end
if redis.call('EXISTS', dkey) == 1 then
  redis.call('HSET', ikey, unpack(redis.call('HGETALL', dkey)))
else
  for i = 6, #ARGV, 2 do redis.call('HSET', ikey, ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', ikey, 'not_by', ARGV[3], 'priority', ARGV[4], 'second_look', ARGV[5],
  'first_label', redis.call('HGET', LAST, c) or '', 'waiting_in', 's', 'leased_from', '')
redis.call('ZADD', SECOND, ARGV[4], c)
redis.call('HINCRBY', META, 'second_look_added', 1)
return 1
"""
)

# ARGV: prefix, model_version JSON for meta ('' = leave), then 6 per item: candid,
# enqueued_at (must still match: the item was not replaced/labelled), priority, scores,
# model_version, discovery ('-' = leave; '' or 'g' = not for discovery; a rank = in ``discover``).
_LUA_RESCORE = (
    _LUA_COMMON
    + """
local updated = 0
for i = 3, #ARGV, 6 do
  local c = ARGV[i]
  local ikey = item_key(c)
  if redis.call('HGET', ikey, 'enqueued_at') == ARGV[i + 1] then
    redis.call('HSET', ikey, 'priority', ARGV[i + 2], 'scores', ARGV[i + 3], 'model_version', ARGV[i + 4])
    local in_teach = redis.call('ZSCORE', QUEUE, c)
    if in_teach then redis.call('ZADD', QUEUE, ARGV[i + 2], c) end
    local rank = ARGV[i + 5]
    if rank ~= '-' then
      if rank == 'g' then rank = '' end
      redis.call('HSET', ikey, 'discovery', rank)
      if in_teach or redis.call('ZSCORE', DISCOVER, c) then
        if rank ~= '' then redis.call('ZADD', DISCOVER, rank, c) else redis.call('ZREM', DISCOVER, c) end
      end
    end
    updated = updated + 1
  end
end
if ARGV[2] ~= '' then redis.call('HSET', META, 'model_version', ARGV[2]) end
if updated > 0 then redis.call('HINCRBY', META, 'rescored', updated) end
return updated
"""
)
