-- settle.lua: each rate algorithm's settle, for the settle entry (limiter.lua): a lease that
-- was charged `charged` units at tick `t_acq` turns out to have cost `actual`.
--
-- settle(key, now, t_acq, limit, period, rate, charged, actual) -> the cost now charged for
-- the lease: `actual`, or still `charged` when nothing could be given back (its window has
-- passed); writes the key (write_state) when anything changes, and then also returns the
-- state written and its TTL in milliseconds (for outlive, in limiter.lua). `charged` is what
-- an earlier settle left (the acquire's cost at first), so settling again composes. Times in
-- the policy's ticks (see common.lua).
-- The rule (DESIGN.md, "settle"): the policy is left as if the lease had cost `actual` when
-- it was charged, as far as the window it was charged in still counts. A lower cost gives
-- the difference back only into the window (or bucket) charged, never below zero, never into
-- a window that has passed, a bucket never above its burst; a higher cost is charged without
-- a check (into the charged window while it counts, else into the current one).
-- The windows of one key follow each other from its first hit, so the window that holds
-- t_acq is the charged one: the current window when start <= t_acq, the previous when
-- start - period <= t_acq.

-- The settles by algorithm code; each is set on its algorithm's module below when that file
-- is part of the chunk (a check script may hold only the algorithms its limiter uses).
local settles = {}

settles['f'] = function(key, now, t_acq, limit, period, rate, charged, actual)
  local s = read_state(key, 2)
  local live = s and now < s[1] + period
  if live and s[1] <= t_acq then
    local count = s[2] + actual - charged
    if count < 0 then
      count = 0
    end
    s = {s[1], count}
  elseif actual > charged then
    if live then
      s = {s[1], s[2] + actual - charged}
    else
      s = {now, actual - charged}
    end
  else
    return charged
  end
  return actual, s, write_state(key, s[1] + period - now, s[1], s[2])
end

settles['s'] = function(key, now, t_acq, limit, period, rate, charged, actual)
  local s = sliding_window.load(key, now, limit, period, rate)
  local start, prev, cur = s[1], s[2], s[3]
  local live = prev > 0 or cur > 0
  local delta = actual - charged
  if live and start <= t_acq then
    cur = cur + delta
    if cur < 0 then
      cur = 0
    end
  elseif live and start - period <= t_acq then
    prev = prev + delta
    if prev < 0 then
      prev = 0
    end
  elseif delta > 0 then
    cur = cur + delta
  else
    return charged
  end
  return actual, {start, prev, cur}, write_state(key, start + 2 * period - now, start, prev, cur)
end

settles['t'] = function(key, now, t_acq, limit, period, rate, charged, actual)
  local s = token_bucket.load(key, now, limit, period, rate)
  local capacity = limit * period
  local level = s[1] + (charged - actual) * period
  if level > capacity then
    level = capacity
  end
  return actual, {level, s[2]}, write_state(key, s[2] - now + ceil_div(capacity - level, rate),
                                            level, s[2])
end

-- (no pairs(): FUNCTION LOAD runs this chunk without it)
local codes = {'f', 's', 't'}
for at = 1, #codes do
  local algorithm = algorithms[codes[at]]
  if algorithm then
    algorithm.settle = settles[codes[at]]
  end
end
