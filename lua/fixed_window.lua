-- fixed_window.lua: a fixed window that opens at the key's first hit.
--
-- Key (one per policy): "start count": the window opened at `start` (tick) and `count` units
-- were spent in it. TTL: until the window closes; an expired key and a closed window are the
-- same thing, so the TTL is garbage collection only.
-- Policy ARGV: limit (units per window), period (ticks), rate (unused, 0). `now` and every
-- time below are in ticks (see common.lua); the driver turns replies into milliseconds.
--
-- load(key, now, limit, period, rate)            -> state {start, count}
-- report(s, now, limit, period, rate, cost)      -> allowed (1/0), remaining, reset_after,
--                                                   retry_after (for `cost`), ticks, read-only
-- charge(s, key, now, limit, period, rate, cost) -> ttl_ms: spends `cost` and writes the key
--                                                   (write_state); the TTL in milliseconds is
--                                                   also reset_after after the charge
local fixed_window = {}

function fixed_window.load(key, now, limit, period, rate)
  local s = read_state(key, 2)
  if s and now < s[1] + period then
    return s
  end
  return {now, 0}
end

function fixed_window.report(s, now, limit, period, rate, cost)
  local start, count = s[1], s[2]
  local reset = 0
  if count > 0 then
    reset = start + period - now
  end
  if count + cost <= limit then
    return 1, limit - count, reset, 0
  end
  local remaining = limit - count
  if remaining < 0 then -- spent more than a lowered limit (an override): none left
    remaining = 0
  end
  return 0, remaining, reset, start + period - now
end

function fixed_window.charge(s, key, now, limit, period, rate, cost)
  s[2] = s[2] + cost
  return write_state(key, s[1] + period - now, s[1], s[2])
end

algorithms['f'] = fixed_window
