-- concurrency.lua: in-flight slots held by leases (a sorted set per identifier and policy).
--
-- Key (one per Concurrency policy): a sorted set; member = a lease id (made by the client, one
-- per acquire), score = the lease's expiry in milliseconds on the store's clock. A lease is in
-- flight while its score > now, so a slot is free again at exactly acquire (or renew) + lease
-- without any call. Expired members are removed when the key is written; the key's TTL runs
-- to the latest expiry, so a key nobody writes again disappears by itself.
-- Policy ARGV: limit (slots), period (the lease, milliseconds), rate (unused, 0); unit is
-- always 1 (milliseconds).
--
-- load / report / charge: as in fixed_window.lua, except that a lease takes one slot whatever
-- its cost (the cost goes to the rate policies), and charge, which adds the member
-- `lease.id` set by the acquire entry (limiter.lua), returns (ttl_ms, 1): one slot used.
local concurrency = {slots = true} -- slots: one per lease whatever the cost (see check)

-- The lease being acquired: set by the acquire entry around its check, nil otherwise.
local lease = {id = nil}

-- The score of the latest member of `key`, or nil when it has none.
local function latest_score(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    return tonumber(last[2])
  end
  return nil
end

-- Makes `key` expire with its latest lease (at least 1 ms from now).
local function expire_with_leases(key, now)
  local latest = latest_score(key)
  if latest then
    local ttl = latest - now
    if ttl < 1 then
      ttl = 1
    end
    redis.call('PEXPIRE', key, string.format('%d', ttl))
  end
end

-- state {in_flight, oldest live expiry, latest live expiry} (0s when nothing is in flight;
-- the oldest is read only when every slot is taken: a denial's retry_after needs it)
function concurrency.load(key, now, limit, period, rate)
  local after = '(' .. string.format('%d', now)
  local n = redis.call('ZCOUNT', key, after, '+inf')
  if n == 0 then
    return {0, 0, 0}
  end
  local oldest = 0
  if n >= limit then
    oldest = tonumber(redis.call('ZRANGEBYSCORE', key, after, '+inf', 'WITHSCORES',
                                 'LIMIT', 0, 1)[2])
  end
  return {n, oldest, latest_score(key)}
end

function concurrency.report(s, now, limit, period, rate, cost)
  local in_flight = s[1]
  local remaining = limit - in_flight
  if remaining < 0 then
    remaining = 0
  end
  local reset = 0
  if in_flight > 0 then
    reset = s[3] - now
  end
  if in_flight + 1 <= limit then
    return 1, remaining, reset, 0
  end
  return 0, remaining, reset, s[2] - now
end

function concurrency.charge(s, key, now, limit, period, rate, cost)
  if not lease.id then
    error('ratelimit: a Concurrency slot is taken by acquire only')
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))
  redis.call('ZADD', key, string.format('%d', now + period), lease.id)
  local latest = s[3] -- the latest live lease before this one (0: none)
  if latest < now + period then
    latest = now + period
  end
  redis.call('PEXPIRE', key, string.format('%d', latest - now))
  return latest - now, 1
end

algorithms['c'] = concurrency
