/**
 * The shared limit's Lua scripts. Redis runs each one atomically, so no two replicas can spend
 * the same token, and every script reads Redis' own clock (TIME): refill never depends on a
 * replica's clock. Times are epoch millis.
 *
 * Keys (see LimitKeys.ts): the bucket hash {tokens, at}; the params hash the leader publishes
 * (rpm, capacity, burst, holdUntil, pausedUntil, windowCap, and what /status shows); the window
 * ZSET of sends (member replica|seq, score sent at); the evidence list the leader drains; one
 * claims ZSET per priority above low (member waiter, score expiry).
 */

const now = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

/** Refills the bucket to `now` at the published rate, capped at min(capacity, burst). Needs KEYS[1] bucket, KEYS[2] params, ARGV[1..2] default rpm, capacity. */
const refill = `
local p = redis.call('HMGET', KEYS[2], 'rpm', 'capacity', 'burst', 'pausedUntil', 'holdUntil', 'windowCap')
local rpm = tonumber(p[1]) or tonumber(ARGV[1])
local capacity = tonumber(p[2]) or tonumber(ARGV[2])
local limit = math.max(1, math.min(capacity, tonumber(p[3]) or capacity))
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or capacity
local at = tonumber(b[2]) or now
if now > at then
  tokens = tokens + (now - at) * rpm / 60000
  at = now
end
if tokens > limit then tokens = limit end
local whole = math.floor(tokens + 0.5)
if math.abs(tokens - whole) < 1e-9 then tokens = whole end
local function save()
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
end
local function untilToken()
  return math.max(1, math.ceil((1 - tokens) * 60000 / math.max(rpm, 1e-9)))
end
`

/** The learning law's count: calls in any 60.25 s (see Laws/Learning.ts). */
export const windowMs = 60_250

/** A refund or refused call finds its send among those at most this far from its time. */
export const matchMs = 5_000

/**
 * KEYS: bucket, params, window, evidence, claims urgent, claims high, claims normal.
 * ARGV: default rpm, default capacity, rank (0 urgent .. 3 low), waiter id ('' = no claim),
 * send member, claim ttl ms.
 * Returns {wait ms (0 = taken), Redis now, tokens x 1000}.
 */
export const take = `${now}${refill}
local rank = tonumber(ARGV[3])
local waiter = ARGV[4]
local wait = 0
-- A waiter of a higher priority on any replica gets the next token first.
for r = 0, rank - 1 do
  local key = KEYS[5 + r]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) > 0 then
    if tokens >= 1 then wait = 50 else wait = untilToken() end
    break
  end
end
local resume = math.max(tonumber(p[4]) or 0, tonumber(p[5]) or 0)
if resume > now then wait = math.max(wait, resume - now) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ${windowMs})
local cap = tonumber(p[6]) or 0
if cap > 0 then
  local n = redis.call('ZCARD', KEYS[3])
  if n >= cap then
    local oldest = redis.call('ZRANGE', KEYS[3], n - cap, n - cap, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + ${windowMs} + 1 - now)
  end
end
if wait == 0 and tokens < 1 then wait = untilToken() end
if wait > 0 then
  save()
  if waiter ~= '' and rank < 3 then
    redis.call('ZADD', KEYS[5 + rank], now + math.min(wait, 1000) + tonumber(ARGV[6]), waiter)
  end
  return {wait, now, math.floor(tokens * 1000)}
end
tokens = tokens - 1
save()
redis.call('ZADD', KEYS[3], now, ARGV[5])
if waiter ~= '' and rank < 3 then redis.call('ZREM', KEYS[5 + rank], waiter) end
redis.call('RPUSH', KEYS[4], 'd:' .. now)
redis.call('LTRIM', KEYS[4], -20000, -1)
return {0, now, math.floor(tokens * 1000)}
`

/**
 * A call this replica counted never counted upstream: its send leaves the window (the one of
 * this replica nearest `sentAt`, or its newest when `sentAt` is ''), and with tell = '1' the
 * leader hears of it (a 429 it hears of anyway). With give = '1' its token goes back too.
 * KEYS: bucket, params, window, evidence. ARGV: default rpm, default capacity, replica prefix, sentAt, give, tell.
 */
export const refund = `${now}${refill}
local prefix = ARGV[3]
local sentAt = tonumber(ARGV[4])
local found, foundAt
local candidates
if sentAt then
  candidates = redis.call('ZRANGEBYSCORE', KEYS[3], sentAt - ${matchMs}, sentAt + ${matchMs}, 'WITHSCORES')
else
  candidates = redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', now - ${windowMs}, 'WITHSCORES', 'LIMIT', 0, 200)
end
for i = 1, #candidates, 2 do
  local m, at = candidates[i], tonumber(candidates[i + 1])
  if string.sub(m, 1, #prefix) == prefix then
    if not found or (sentAt and math.abs(at - sentAt) < math.abs(foundAt - sentAt)) then
      found, foundAt = m, at
      if not sentAt then break end
    end
  end
end
if found then
  redis.call('ZREM', KEYS[3], found)
  if ARGV[6] == '1' then redis.call('RPUSH', KEYS[4], 'u:' .. foundAt) end
end
if ARGV[5] == '1' then
  tokens = math.min(capacity, tokens + 1)
  save()
end
return now
`

/**
 * One heartbeat: the replica announces itself until now + ttl, expired replicas leave, the leader
 * lease is renewed (or taken when free and take = '1'), and the published params and current tokens are read.
 * KEYS: bucket, params, replicas, leader. ARGV: default rpm, default capacity, replica id, ttl ms, lease ms, take.
 * Returns {now, replica count, leader (0 no, 1 still, 2 newly), replica ids (first 50), params (flat), tokens x 1000}.
 */
export const sync = `${now}${refill}
local id = ARGV[3]
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), id)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local count = redis.call('ZCARD', KEYS[3])
local ids = redis.call('ZRANGE', KEYS[3], 0, 49)
local holder = redis.call('GET', KEYS[4])
local leader = 0
if holder == id then
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
  leader = 1
elseif not holder and ARGV[6] == '1' then
  redis.call('SET', KEYS[4], id, 'PX', ARGV[5])
  leader = 2
end
return {now, count, leader, ids, redis.call('HGETALL', KEYS[2]), math.floor(tokens * 1000)}
`

/**
 * A replica back from its failure mode adds the calls it sent meanwhile to the send window, so
 * the learned count holds them; each keeps its member, so adding again changes nothing. A bucket
 * that is gone (an emptied Redis) starts from the tokens the replica last saw, not full: the
 * upstream still counts what every replica sent while Redis was away.
 * KEYS: bucket, window. ARGV: tokens, then sent at, member pairs. Returns Redis now.
 */
export const recover = `${now}
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[1], 'at', tostring(now))
end
for i = 2, #ARGV - 1, 2 do
  local at = tonumber(ARGV[i])
  if at and at > now - ${windowMs} then redis.call('ZADD', KEYS[2], at, ARGV[i + 1]) end
end
return now
`

/** An upstream Retry-After pauses every replica until Redis now + ms. KEYS: params. ARGV: ms. */
export const pause = `${now}
local untilAt = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'pausedUntil')) or 0
if untilAt > current then redis.call('HSET', KEYS[1], 'pausedUntil', untilAt) end
return now
`

/** A replica leaves: out of the registry, and the lease freed when it held it. KEYS: replicas, leader. ARGV: replica id. */
export const leave = `
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
`

/** Replicas report evidence for the leader, oldest first. KEYS: evidence. ARGV: entries. */
export const report = `
redis.call('RPUSH', KEYS[1], unpack(ARGV))
redis.call('LTRIM', KEYS[1], -20000, -1)
return 1
`

/**
 * The leader takes every piece of evidence reported so far, with the law state last saved (for a
 * leader that just took over). KEYS: evidence, law state.
 */
export const drainWithState = `
local all = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return {all, redis.call('GET', KEYS[2])}
`

/** The leader publishes the law's output and saves its state. KEYS: params, law state. ARGV: state, then field, value pairs. */
export const publish = `
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1], 'PX', 86400000)
return 1
`

/** Sets fields of the params hash (an admin change for the leader to apply). KEYS: params. ARGV: field, value pairs. */
export const setParams = `
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`

/** A waiter that left withdraws its claims. KEYS: claims. ARGV: waiter id. */
export const withdraw = `
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 1
`
