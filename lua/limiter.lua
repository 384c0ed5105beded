-- limiter.lua: checks every policy of one limiter for one identifier, and charges all of them
-- or none, in one atomic call. Runs after common.lua and the three algorithm files.
--
-- KEYS[i]      state key of policy i; all keys of one call share one hash tag ({identifier})
-- ARGV[1]      now, integer milliseconds, or "" to read the server's TIME
-- ARGV[2]      cost, an integer >= 0; 0 only looks
-- ARGV[3]      "1": charge every policy when all of them allow; "0": only look (peek)
-- ARGV[4i .. 4i+3]  policy i: algorithm ("f" fixed window, "s" sliding window, "t" token
--              bucket), limit (burst for a bucket), period (ms), rate (bucket only, else 0)
-- Returns      {allowed, then for each policy i: allowed_i, remaining_i, reset_after_ms_i,
--              retry_after_ms_i}, all integers, allowed as 1/0. After a charge, remaining and
--              reset_after describe the state after it; otherwise the state as found.
local now = ARGV[1]
if now == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
else
  now = tonumber(now)
end
local cost = tonumber(ARGV[2])
local algorithms = {f = fixed_window, s = sliding_window, t = token_bucket}

local reply = {1}
local states, policies = {}, {}
for i = 1, #KEYS do
  local at = 4 * i
  local algorithm = algorithms[ARGV[at]]
  local limit, period, rate = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local s = algorithm.load(KEYS[i], now, limit, period, rate)
  local allowed, remaining, reset, retry = algorithm.report(s, now, limit, period, rate, cost)
  states[i], policies[i] = s, {algorithm, limit, period, rate}
  if allowed == 0 then
    reply[1] = 0
  end
  local r = 4 * i - 2
  reply[r], reply[r + 1], reply[r + 2], reply[r + 3] = allowed, remaining, reset, retry
end

if reply[1] == 1 and cost > 0 and ARGV[3] == '1' then
  -- charge every policy; after a charge, remaining drops by the cost and the key's TTL is
  -- exactly the time back to full capacity
  for i = 1, #KEYS do
    local p = policies[i]
    local r = 4 * i - 2
    reply[r + 2] = p[1].charge(states[i], KEYS[i], now, p[2], p[3], p[4], cost)
    reply[r + 1] = reply[r + 1] - cost
  end
end
return reply
