-- common.lua: helpers shared by the algorithm files. Loaded first; the loader joins
-- common.lua, fixed_window.lua, sliding_window.lua, token_bucket.lua and limiter.lua into the
-- one script that Redis runs (see limiter.lua for its KEYS, ARGV and reply).
--
-- Units: every number is an integer (milliseconds, counts, token units) below 2^53, so a
-- double holds it exactly. Policies refuse numbers that could leave that range.

-- floor(a / b) for integers a and b > 0, exact even where the double quotient a / b rounds.
local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- ceil(a / b) for integers a and b > 0.
local function ceil_div(a, b)
  return -floor_div(-a, b)
end

-- Reads a key's state: a string of integers separated by spaces, or nil when absent or unreadable.
local function read_state(key, fields)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local state = {}
  for field in string.gmatch(raw, '%-?%d+') do
    state[#state + 1] = tonumber(field)
  end
  if #state ~= fields then
    return nil
  end
  return state
end

-- Writes a key's state with a TTL in milliseconds (at least 1); returns the TTL.
local function write_state(key, ttl, ...)
  local fields = {...}
  for i = 1, #fields do
    fields[i] = string.format('%d', fields[i])
  end
  if ttl < 1 then
    ttl = 1
  end
  redis.call('SET', key, table.concat(fields, ' '), 'PX', string.format('%d', ttl))
  return ttl
end
