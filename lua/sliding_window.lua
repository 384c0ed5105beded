-- sliding_window.lua: the weighted two-window counter.
--
-- Key (one per policy): "start prev cur": the current window opened at `start` (tick); `cur`
-- units were spent in it and `prev` in the window before. Windows follow each other from the
-- key's first hit. A request of `cost` is admitted iff, with `e` = now - start,
--     prev * (period - e) + (cur + cost) * period <= limit * period
-- compared exactly in integers: the previous window's weight is never rounded.
-- TTL: until both windows have slid out (start + 2 * period while cur > 0).
-- Policy ARGV: limit, period (ticks), rate (unused, 0).
--
-- load / report / charge: as in fixed_window.lua (charge returns the TTL = reset_after).
local sliding_window = {}

function sliding_window.load(key, now, limit, period, rate)
  local s = read_state(key, 3)
  if s then
    local start, prev, cur = s[1], s[2], s[3]
    if now >= start + period then
      local windows = floor_div(now - start, period)
      if windows == 1 then
        prev, cur = cur, 0
      else
        prev, cur = 0, 0
      end
      start = start + windows * period
    end
    if prev > 0 or cur > 0 then
      return {start, prev, cur}
    end
  end
  return {now, 0, 0}
end

function sliding_window.report(s, now, limit, period, rate, cost)
  local start, prev, cur = s[1], s[2], s[3]
  local e = now - start
  if e < 0 then
    e = 0
  end
  local remaining = limit - cur - ceil_div(prev * (period - e), period)
  if remaining < 0 then
    remaining = 0
  end
  local reset = 0
  if cur > 0 then
    reset = start + 2 * period - now
  elseif prev > 0 then
    reset = start + period - now
  end
  if prev * (period - e) + (cur + cost) * period <= limit * period then
    return 1, remaining, reset, 0
  end
  local retry
  if cur + cost <= limit then
    -- later in this window, once prev's weight has shrunk enough
    retry = start + period - floor_div((limit - cur - cost) * period, prev) - now
  else
    -- in the next window, where cur becomes the weighted previous count
    retry = start + 2 * period - floor_div((limit - cost) * period, cur) - now
  end
  return 0, remaining, reset, retry
end

function sliding_window.charge(s, key, now, limit, period, rate, cost)
  s[3] = s[3] + cost
  return write_state(key, s[1] + 2 * period - now, s[1], s[2], s[3])
end

algorithms['s'] = sliding_window
