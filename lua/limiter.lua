-- limiter.lua: the driver. Its entry points check every policy of one limiter for one
-- identifier and charge all of them or none, in one atomic call. Runs after common.lua and
-- the algorithm files.
--
-- How the pieces fit (and how to add to them):
-- * An algorithm is one file defining a table with load, report and charge (see
--   fixed_window.lua) that ends with `algorithms['<code>'] = <table>`. List the file in
--   ratelimit/scripts.py (LUA_FILES, before this one); the policy passes its code in ARGV.
-- * An entry point is one `local function <name>(keys, argv)` below, listed in `entries`.
--   The loader registers every entry as the Redis function `<library>_<name>` (FCALL) and
--   builds one script per entry, `return entries.<name>(KEYS, ARGV)` (EVALSHA), so both paths
--   run the same code. Entries take KEYS and ARGV as arguments, never the globals.
--
-- check(keys, argv):
-- keys[i]      state key of policy i; all keys of one call share one hash tag ({identifier})
-- keys[n + 1]  the identifier's override key (see "Overrides" below)
-- argv[1]      now, integer milliseconds, or "" to read the server's TIME
-- argv[2]      cost, an integer >= 0; 0 only looks
-- argv[3]      "1": charge every policy when all of them allow; "0": only look (peek)
-- argv[4]      the plan: five words per policy, in the order of keys, separated by spaces:
--              algorithm code ("f" fixed window, "s" sliding window, "t" token bucket),
--              limit (burst for a bucket), period (ticks), rate (bucket only, else 0), unit
--              (milliseconds per tick: 1, or coarser for large quotas)
-- Returns      {allowed, then for each policy i: allowed_i, remaining_i, reset_after_ms_i,
--              retry_after_ms_i}, all integers, allowed as 1/0. After a charge, remaining and
--              reset_after describe the state after it; otherwise the state as found.
--              When an override applied: allowed is 2/3 (1/0 plus 2), the policies are the
--              override's, and its plan follows as five integers per policy (the code's byte,
--              then the plan's four numbers).
--              {-1} when an override needs an algorithm this script was built without:
--              nothing was read or written; send the same call to the whole script.
--              A cost above a policy's limit (only an override's can be: the limiter refuses
--              such costs for its own) is denied, charges nothing, retry_after one period.
--
-- forget(keys, argv): reset. keys as for check; argv unused. Deletes the state keys and, when
-- an override is set, the state keys of its policies; never the override. Returns {count}.
--
-- set_override(keys, argv): overrides.set. keys: the state keys of the override's policies
-- (as resolve names them), then the override key; argv[1] now or ""; argv[2] the override's
-- plan (as check's argv[4]); argv[3] its ttl in milliseconds, or "" for none. SETs the
-- override and makes each of those state keys live until its state is full under the
-- override's policy (see "Overrides"). Returns {1}.

-- Plans read so far, by their text. A function library keeps this table between calls, so
-- a limiter's plan is read once per server, not once per call; a script starts afresh.
local plans, planned = {}, 0

-- The plan `text` as a list of policies {algorithm, limit, period, rate, unit}.
local function read_plan(text)
  local plan = plans[text]
  if plan then
    return plan
  end
  plan = {}
  local words = {}
  for word in string.gmatch(text, '%S+') do
    words[#words + 1] = word
  end
  for at = 1, #words, 5 do
    local algorithm = algorithms[words[at]]
    if not algorithm then
      error('ratelimit: unknown algorithm ' .. tostring(words[at]))
    end
    plan[#plan + 1] = {algorithm, tonumber(words[at + 1]), tonumber(words[at + 2]),
                       tonumber(words[at + 3]), tonumber(words[at + 4])}
  end
  if planned >= 1000 then -- bounded: a flood of distinct plans starts the table over
    plans, planned = {}, 0
  end
  plans[text], planned = plan, planned + 1
  return plan
end

-- ---- Overrides (issue 11) -------------------------------------------------------------------
-- An override is one string key, <prefix>:{<identifier>}:override, holding a plan text (as
-- argv[4] of check); it has no TTL unless set with one. State keys are named by shape, not by
-- numbers: <prefix>:{<identifier>}:<code><period>, with "t<unit>" appended when the policy
-- counts in ticks coarser than 1 ms and ".<k>" for the k-th policy of one plan with the same
-- code, period and unit (ratelimit/stores/base.py, Plan.state_ids, names them the same way).
-- So an override reads the state its identifier spent under the limiter's own policy of the
-- same algorithm and period (a changed limit keeps what was spent), and state written in one
-- period or unit is never read with another. Its state keys are made here from the override
-- key's head: the client cannot know them without a round trip; they share its hash tag, so
-- its cluster slot.
--
-- Shared state needs TTLs long enough for every policy that reads it: a key's TTL is the time
-- until its state is full again (garbage collection, never the logic), and a missing key is a
-- full state. A window's state is empty when its window(s) end whatever its limit, so a
-- window's TTL is the same under every policy of its shape; a token bucket's time to full
-- depends on its rate and burst. So a state key lives until its state is full under:
-- * the override that will read it: set_override extends each of its state keys that holds
--   a state (never shortens one: PEXPIRE GT), with no check needed in between;
-- * the limiter's own policy of the same shape, which reads it again once the override is
--   deleted or expires: a charge under an override, and the settle of a lease acquired under
--   one, write the longer of the two times (outlive, in check and settle); reset_after stays
--   the override's.
-- A delete is a plain DEL: every state written under the override already lives long
-- enough for the limiter's own policies. An override SET by hand (not by set_override) does
-- not extend the state written before it.

-- What read_plan does not keep, for override plans only, by plan text: {state key suffixes,
-- the plan as integers for the reply}.
local shaped, nshaped = {}, 0

-- The override that applies to one identifier: `text`, the value of its override key
-- `override_key` (read by the caller). Returns the override's plan, its state keys and its
-- plan as integers for the reply; false when it uses an algorithm this script was built
-- without (an EVALSHA script holds only the limiter's own algorithms).
local function resolve(override_key, text)
  local shape = shaped[text]
  if not shape then
    local words = {}
    for word in string.gmatch(text, '%S+') do
      words[#words + 1] = word
    end
    if #words == 0 or #words % 5 ~= 0 then
      return false -- not a plan this version can read: the caller says so
    end
    local suffixes, tail, seen = {}, {}, {}
    for at = 1, #words, 5 do
      if not algorithms[words[at]] then
        return false -- a script built without that algorithm (EVALSHA): the caller says so
      end
      for k = 1, 4 do -- whole numbers: a limit, period and unit of 1 or more, a rate of 0 or more
        local x = tonumber(words[at + k])
        if not x or x % 1 ~= 0 or x < (k == 3 and 0 or 1) then
          return false -- run, it would fail mid-call (an outage) or charge what Python refuses
        end
      end
      local suffix = words[at] .. words[at + 2]
      if words[at + 4] ~= '1' then
        suffix = suffix .. 't' .. words[at + 4]
      end
      local rank = (seen[suffix] or 0) + 1
      seen[suffix] = rank
      if rank > 1 then
        suffix = suffix .. '.' .. rank
      end
      suffixes[#suffixes + 1] = suffix
      tail[#tail + 1] = string.byte(words[at])
      for k = 1, 4 do
        tail[#tail + 1] = tonumber(words[at + k])
      end
    end
    if nshaped >= 1000 then -- bounded, as read_plan's table
      shaped, nshaped = {}, 0
    end
    shape = {suffixes, tail}
    shaped[text], nshaped = shape, nshaped + 1
  end
  local plan = read_plan(text)
  local head = string.sub(override_key, 1, -9) -- without 'override'
  local state = {}
  for i = 1, #plan do
    state[i] = head .. shape[1][i]
  end
  return plan, state, shape[2]
end

local function forget(keys, argv)
  local deleted = 0
  local n = #keys
  for i = 1, n - 1 do
    deleted = deleted + redis.call('DEL', keys[i])
  end
  local text = redis.call('GET', keys[n])
  if text then
    local plan, state = resolve(keys[n], text)
    if plan then
      for i = 1, #state do
        deleted = deleted + redis.call('DEL', state[i])
      end
    end
  end
  return {deleted}
end

-- The milliseconds until the state `s` of policy `p` (a plan entry), loaded or charged at
-- `now` (milliseconds), is full again: how long its key must live for `p` to read it right.
local function time_to_full(s, p, now)
  local unit = p[5]
  local t = now
  if unit ~= 1 then
    t = floor_div(now, unit)
  end
  local _, _, reset = p[1].report(s, t, p[2], p[3], p[4], 0)
  if reset > 0 and unit ~= 1 then
    reset = reset * unit - (now - t * unit)
  end
  return reset
end

-- After a write under an override (plan, on keys: states[i] written to keys[i] with a TTL of
-- ttls[i] milliseconds, or states[i] nil when nothing was), the state keys written that the
-- limiter's own plan (own_plan, on own_keys) also reads live until full under its policy too,
-- where that takes longer (a slower rate, a bigger burst).
local function outlive(plan, keys, states, ttls, own_plan, own_keys, now)
  for i = 1, #plan do
    -- (a slot's key lives to its latest lease, whatever the policy)
    if states[i] and not plan[i][1].slots then
      for j = 1, #own_plan do
        if own_keys[j] == keys[i] then -- the same key: the same algorithm, period and unit
          local need = time_to_full(states[i], own_plan[j], now)
          if need > ttls[i] then -- longer than the TTL the write gave it
            redis.call('PEXPIRE', keys[i], string.format('%d', need))
          end
        end
      end
    end
  end
end
-- ---- end of Overrides ------------------------------------------------------------------------

-- `now` in milliseconds: argv[1], or the server's TIME when it is "".
local function now_ms(argv)
  local now = argv[1]
  if now == '' then
    local time = redis.call('TIME')
    return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return tonumber(now)
end

local function check(keys, argv)
  local now = now_ms(argv)
  local cost = tonumber(argv[2])
  -- the override key is last, and usually absent (one GET: an MGET of it with the state keys
  -- measured slower, its reply being a table to build)
  local plan, tail, own_keys
  local text = redis.call('GET', keys[#keys])
  if text then -- an override: its plan, on its own state keys
    own_keys = keys
    plan, keys, tail = resolve(keys[#keys], text)
    if not plan then
      return {-1} -- the client sends the same call to the script with every algorithm
    end
  else
    plan = read_plan(argv[4])
  end
  local n = #plan
  local reply = {1}
  local states, ticks = {}, nil -- ticks: only for policies counted in coarser units
  for i = 1, n do
    local p = plan[i]
    local algorithm, limit, period, rate, unit = p[1], p[2], p[3], p[4], p[5]
    local t, off = now, 0
    if unit ~= 1 then
      t = floor_div(now, unit)
      off = now - t * unit
    end
    local s = algorithm.load(keys[i], t, limit, period, rate)
    local c = cost
    if cost > limit and not algorithm.slots then -- never holdable (an override's policy):
      -- as found, denied below (a Concurrency slot is one whatever the cost)
      c = 0
    end
    local allowed, remaining, reset, retry = algorithm.report(s, t, limit, period, rate, c)
    if unit ~= 1 then -- ticks to milliseconds, counted from `now`
      if reset > 0 then
        reset = reset * unit - off
      end
      if retry > 0 then
        retry = retry * unit - off
      end
      ticks = ticks or {}
      ticks[i] = {t, off}
    end
    if c ~= cost then
      allowed, retry = 0, period * unit
    end
    states[i] = s
    if allowed == 0 then
      reply[1] = 0
    end
    local r = 4 * i - 2
    reply[r], reply[r + 1], reply[r + 2], reply[r + 3] = allowed, remaining, reset, retry
  end

  local charged = reply[1] == 1 and argv[3] == '1' and (cost > 0 or argv[5])
  if charged then -- argv[5]: acquire's
    -- charge every policy; after a charge, remaining drops by the cost and the key's TTL is
    -- exactly the time back to full capacity. A lease (acquire) of cost 0 still takes its
    -- Concurrency slots, in the plan that applied (the override's when there is one). A hit
    -- under an override that holds a Concurrency policy is checked against the slots in
    -- flight but takes none: only acquire takes (and release frees) a slot.
    for i = 1, n do
      local p = plan[i]
      if (p[1].slots and argv[5]) or (not p[1].slots and cost > 0) then
        local r = 4 * i - 2
        local t = now
        local tk = ticks and ticks[i]
        if tk then
          t, tick.unit, tick.off = tk[1], p[5], tk[2]
        else
          tick.unit, tick.off = 1, 0
        end
        local ttl, used = p[1].charge(states[i], keys[i], t, p[2], p[3], p[4], cost)
        reply[r + 2] = ttl
        reply[r + 1] = reply[r + 1] - (used or cost) -- used: one slot for a Concurrency policy
      end
    end
  end
  if tail then -- overrides: say so, and which plan applied
    if charged and cost > 0 then -- the charged state outlives the override (see "Overrides")
      local ttls = {}
      for i = 1, n do
        ttls[i] = reply[4 * i]
      end
      outlive(plan, keys, states, ttls, read_plan(argv[4]), own_keys, now)
    end
    reply[1] = reply[1] + 2
    for k = 1, #tail do
      reply[#reply + 1] = tail[k]
    end
  end
  return reply
end

-- Each state key of `plan` (keys[i] for plan[i], holding a state or not) lives at least until
-- its state is full under plan[i] at `now`: an override's state before its first check.
local function keep(keys, plan, now)
  for i = 1, #plan do
    local p = plan[i]
    if not p[1].slots then
      local t = now
      if p[5] ~= 1 then
        t = floor_div(now, p[5])
      end
      local need = time_to_full(p[1].load(keys[i], t, p[2], p[3], p[4]), p, now)
      if need > 0 then -- 0: full, or no state (nothing to keep)
        redis.call('PEXPIRE', keys[i], string.format('%d', need), 'GT')
      end
    end
  end
end

local function set_override(keys, argv)
  local n = #keys
  if argv[3] == '' then
    redis.call('SET', keys[n], argv[2])
  else
    redis.call('SET', keys[n], argv[2], 'PX', argv[3])
  end
  keep(keys, read_plan(argv[2]), now_ms(argv))
  return {1}
end

-- Leases (Concurrency, settle): the entries below wrap check and the algorithms' settle.
--
-- acquire(keys, argv): check with charge, where every Concurrency policy also takes a slot
--   for the lease argv[5] (an id made by the client). keys and argv[1..4] as for check
--   (argv[3] "1"); an identifier's override applies as in check, and then its Concurrency
--   policies take the slots (whatever the cost, 0 included) on its state keys. Returns
--   check's reply followed by now (milliseconds), which settle needs. The client's release,
--   renew and settle name the state keys and plan of the policies that applied: the
--   override's when the reply says one did (see resolve).
-- release(keys, argv): keys = the Concurrency keys; argv[1] the lease id. Frees the lease's
--   own slots (ZREM; idempotent). Returns {slots freed}.
-- renew(keys, argv): keys = the Concurrency keys; argv[1] now or ""; argv[2] the lease id;
--   argv[3] the leases in milliseconds, one per key, separated by spaces. A slot still held
--   (expiry > now) runs until now + lease again; an expired or released one is not taken
--   back. Returns {1 when every slot was renewed, else 0; now}.
-- settle(keys, argv): keys = the rate policies' keys; argv[1] now or ""; argv[2] the now of
--   the acquire; argv[3] the cost charged for the lease in each policy, separated by spaces;
--   argv[4] the actual cost; argv[5] the plan of these policies (as check's argv[4]). Each
--   policy settles (settle.lua). Returns {now, then the cost now charged in each policy}.
--   A lease acquired under an override also sends the limiter's own plan (argv[6], as
--   check's argv[4]) and its state keys (after the rate policies' keys): the state settled
--   outlives the override as a check's charge does (outlive, see "Overrides").

local function acquire(keys, argv)
  local now = now_ms(argv)
  argv[1] = now
  lease.id = argv[5]
  local ok, reply = pcall(check, keys, argv)
  lease.id = nil
  if not ok then
    error(reply)
  end
  reply[#reply + 1] = now
  return reply
end

local function release(keys, argv)
  local freed = 0
  for i = 1, #keys do
    freed = freed + redis.call('ZREM', keys[i], argv[1])
  end
  return {freed}
end

local function renew(keys, argv)
  local now = now_ms(argv)
  local all = 1
  local i = 0
  for word in string.gmatch(argv[3], '%S+') do
    i = i + 1
    local key = keys[i]
    local score = redis.call('ZSCORE', key, argv[2])
    if score and tonumber(score) > now then
      redis.call('ZADD', key, 'XX', string.format('%d', now + tonumber(word)), argv[2])
      expire_with_leases(key, now)
    else
      all = 0
    end
  end
  return {all, now}
end

local function settle(keys, argv)
  local now = now_ms(argv)
  local acquired = tonumber(argv[2])
  local actual = tonumber(argv[4])
  local plan = read_plan(argv[5])
  local reply = {now}
  local states, ttls = {}, {}
  local i = 0
  for word in string.gmatch(argv[3], '%S+') do
    i = i + 1
    local p = plan[i]
    local unit = p[5]
    local t, t_acq = now, acquired
    tick.unit, tick.off = unit, 0
    if unit ~= 1 then
      t = floor_div(now, unit)
      tick.off = now - t * unit
      t_acq = floor_div(acquired, unit)
    end
    reply[i + 1], states[i], ttls[i] = p[1].settle(keys[i], t, t_acq, p[2], p[3], p[4],
                                                   tonumber(word), actual)
  end
  if argv[6] then -- acquired under an override: the state settled outlives it
    local own_keys = {}
    for j = i + 1, #keys do
      own_keys[#own_keys + 1] = keys[j]
    end
    outlive(plan, keys, states, ttls, read_plan(argv[6]), own_keys, now)
  end
  return reply
end

local entries = {check = check, forget = forget, set_override = set_override,
                 acquire = acquire, release = release, renew = renew, settle = settle}
