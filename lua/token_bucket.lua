-- token_bucket.lua: a bucket refilled continuously, exactly.
--
-- Units: one token is `period` units and the bucket gains `rate` units per tick, so
-- `rate` tokens per `period` refill with no rounding at all. A bucket holds `limit` (the
-- burst) tokens, that is `limit * period` units.
-- Key (one per policy): "level ts": `level` units held at `ts` (tick). A missing key is a full
-- bucket. TTL: until the bucket is full again.
-- Policy ARGV: limit (burst, tokens), period (ticks), rate (tokens per period).
--
-- load / report / charge: as in fixed_window.lua (charge returns the TTL = reset_after).
local token_bucket = {}

function token_bucket.load(key, now, limit, period, rate)
  local capacity = limit * period
  local s = read_state(key, 2)
  if not s then
    return {capacity, now}
  end
  if now > s[2] then
    local missing = capacity - s[1]
    local elapsed = now - s[2]
    if elapsed >= ceil_div(missing, rate) then
      s[1] = capacity
    else
      s[1] = s[1] + elapsed * rate
    end
    s[2] = now
  end
  if s[1] > capacity then -- a burst lowered since (an override): the bucket holds no more
    s[1] = capacity
  end
  return s
end

function token_bucket.report(s, now, limit, period, rate, cost)
  local level = s[1]
  local lag = s[2] - now -- > 0 only when this caller's clock is behind the last writer's
  local reset = 0
  if level < limit * period then
    reset = lag + ceil_div(limit * period - level, rate)
  end
  if level >= cost * period then
    return 1, floor_div(level, period), reset, 0
  end
  local remaining = floor_div(level, period) -- below 0 in debt, after a settle
  if remaining < 0 then
    remaining = 0
  end
  return 0, remaining, reset, lag + ceil_div(cost * period - level, rate)
end

function token_bucket.charge(s, key, now, limit, period, rate, cost)
  s[1] = s[1] - cost * period
  return write_state(key, s[2] - now + ceil_div(limit * period - s[1], rate), s[1], s[2])
end

algorithms['t'] = token_bucket
