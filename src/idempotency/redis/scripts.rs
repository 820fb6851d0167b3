//! The Lua scripts, one per transition of a record (see [`super::record`] for the layout).
//!
//! Each reads the record with one `GET` and writes it with at most one `SET`: a string of a few
//! dozen bytes, never a hash. Claim and settle take any number of keys, so a batch costs one
//! script call each way. Every key a call touches is named in `KEYS`; on Redis Cluster a caller
//! passes keys of one hash slot per call. The clock is Redis's own (`TIME`), so gateways with
//! skewed clocks agree on lease expiry.

/// KEYS: the records. ARGV: lease_ms, ttl_ms, operator ('1' or '0'), grace_ms, then per key its
/// owner (8 bytes) and fingerprint (16 bytes). One reply per key: 1 for a fresh key claimed
/// (attempt 1; the common case, so a bare integer rather than a table for Redis to build and the
/// gateway to parse) | {'claimed', attempt, took_over} | {'replay', record} |
/// {'in_flight', ms_left, accepted} | {'mismatch'}.
pub const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, ttl, grace = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[4])
local operator = ARGV[3] == '1'
-- A fresh key's lease, suspicion, attempt and accepted flag: the same for every key of the call.
local fresh = struct.pack('>I8I8I4', now + lease, 0, 1) .. '0'
local replies = {}
for i, key in ipairs(KEYS) do
  local owner, fp = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  -- Claims a fresh key, or reads the record that is there (SET … NX GET, Redis 7.0): one
  -- command on the common path.
  local r = redis.call('SET', key, 'I' .. fp .. owner .. fresh, 'NX', 'GET', 'PX', ttl)
  if not r then
    replies[i] = 1
  elseif string.sub(r, 2, 17) ~= fp then
    -- Checked first, in any state: a reused key never sees another event's answer.
    replies[i] = {'mismatch'}
  else
    local tag = string.sub(r, 1, 1)
    local state = string.upper(tag)
    -- A lower-case tag marks an event that may be in Kafka twice; the mark stays.
    local function reclaim(attempt_at, maybe_duplicate, took_over)
      local attempt = struct.unpack('>I4', r, attempt_at) + 1
      local mark = (tag ~= state or maybe_duplicate) and 'i' or 'I'
      redis.call('SET', key,
                 mark .. fp .. owner .. struct.pack('>I8I8I4', now + lease, 0, attempt) .. '0',
                 'PX', ttl)
      return {'claimed', attempt, took_over and 1 or 0}
    end
    if state == 'R' then
      -- Nothing was written last time: publish again.
      replies[i] = reclaim(26, false, false)
    elseif state == 'F' and operator then
      -- An operator retries an event that may or may not be in Kafka: their call.
      replies[i] = reclaim(26, true, false)
    elseif state ~= 'I' then
      replies[i] = {'replay', r}
    else
      local lease_until, suspect_since = struct.unpack('>I8I8', r, 26)
      local accepted = string.sub(r, 46, 46)
      if lease_until > now then
        replies[i] = {'in_flight', lease_until - now, accepted}
      elseif suspect_since == 0 then
        -- The lease ran out on Redis's clock, which also runs while Redis is stalled: a live
        -- owner's renewal or settle may be queued right behind this claim. Suspect the owner
        -- first; take over only a grace later (Redis answering all along) if it has not
        -- renewed since.
        redis.call('SET', key, string.sub(r, 1, 33) .. struct.pack('>I8', now) ..
                   string.sub(r, 42), 'KEEPTTL')
        replies[i] = {'in_flight', grace, accepted}
      elseif now - suspect_since < grace then
        replies[i] = {'in_flight', grace - (now - suspect_since), accepted}
      else
        -- The owner is gone (it crashed before settling): take over, and mark that the event
        -- may be in Kafka already.
        replies[i] = reclaim(42, true, true)
      end
    end
  end
end
return replies
"#;

/// KEYS: the records. ARGV: ttl_ms, then per key its owner (8 bytes), the settled state ('D',
/// 'F' or 'R') and the rest of the settled record. One reply per key: 1 if the key is settled
/// that way by this owner (now, or by an earlier try whose reply was lost), else 0. A `failed`
/// key is pinned: no expiry until an operator acts (UNPIN, or a claim by an operator).
pub const SETTLE: &str = r#"
local replies = {}
for i, key in ipairs(KEYS) do
  local owner, state, rest = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local r = redis.call('GET', key)
  if not r or string.sub(r, 18, 25) ~= owner then
    replies[i] = 0
  else
    local tag = string.sub(r, 1, 1)
    local current = string.upper(tag)
    if current ~= 'I' then
      replies[i] = (current == state) and 1 or 0
    else
      local record = state .. string.sub(r, 2, 25)
      if tag ~= current then record = string.lower(state) .. string.sub(r, 2, 25) end
      -- A failure keeps its attempt count, for the next claim.
      if state ~= 'D' then record = record .. string.sub(r, 42, 45) end
      record = record .. rest
      if state == 'F' then
        redis.call('SET', key, record)
      else
        redis.call('SET', key, record, 'PX', ARGV[1])
      end
      replies[i] = 1
    end
  end
end
return replies
"#;

/// KEYS[1] record; ARGV: owner (8 bytes), lease_ms, ttl_ms. Returns 'renewed' | 'settled' |
/// 'lost'.
pub(crate) const RENEW: &str = r#"
local r = redis.call('GET', KEYS[1])
if not r or string.sub(r, 18, 25) ~= ARGV[1] then
  return 'lost'
end
if string.upper(string.sub(r, 1, 1)) ~= 'I' then
  return 'settled'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], string.sub(r, 1, 25) .. struct.pack('>I8I8', now + tonumber(ARGV[2]), 0)
           .. string.sub(r, 42), 'PX', ARGV[3])
return 'renewed'
"#;

/// KEYS[1] record; ARGV: fingerprint (16 bytes), ttl_ms. Returns 1 if a pinned `failed` key
/// now expires.
pub(crate) const UNPIN: &str = r#"
local r = redis.call('GET', KEYS[1])
if r and string.upper(string.sub(r, 1, 1)) == 'F' and string.sub(r, 2, 17) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS[1] record; ARGV: owner (8 bytes). Marks the in-flight request as answered 202.
pub(crate) const ACCEPT: &str = r#"
local r = redis.call('GET', KEYS[1])
if r and string.upper(string.sub(r, 1, 1)) == 'I' and string.sub(r, 18, 25) == ARGV[1] then
  redis.call('SET', KEYS[1], string.sub(r, 1, 45) .. '1', 'KEEPTTL')
end
return 1
"#;
