//! The Lua scripts every cluster write goes through. Redis runs each atomically, and each
//! checks the lease first: the lock and the log are one Redis, so that check is a real fence
//! (a holder that lost its lease, paused or cut off, can't publish when it wakes up).

use redis::Script;

/// Shared by the scripts that start from an instance's state.
const PRELUDE: &str = r#"
local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The epoch is valid only on the Redis process that created it: one that restarted, even from
-- a dump, or a replica promoted without the last writes, starts a new one (and empties the log),
-- so an old id gets a snapshot, never a patch against another base.
local function epoch(meta, log, candidate, ttl)
  local m = redis.call('HMGET', meta, 'e', 's', 'rid')
  local rid = run_id()
  if m[1] and m[3] == rid then return end
  redis.call('DEL', meta, log)
  redis.call('HSET', meta, 'e', candidate, 's', 0, 'rid', rid, 'b', 0)
  redis.call('EXPIRE', meta, ttl)
end
"#;

/// KEYS meta, log, lease, want:json-patch, want:merge-patch. ARGV lease value ('' = only
/// read), ttl ms, epoch candidate, history ttl s, frames to return at most, formats wanted
/// ('j', 'm'), the epoch and seq the caller holds. Returns {held, holder, epoch, seq, status,
/// etag, last-modified, ms since the last poll or -1, frames oldest first}: those after the
/// caller's when it is in the epoch and at most that many behind, else the newest ones (so a
/// follower's periodic check costs nothing when it is up to date).
const JOIN: &str = r#"
epoch(KEYS[1], KEYS[2], ARGV[3], ARGV[4])
local ttl = tonumber(ARGV[2])
if string.find(ARGV[6], 'j') then redis.call('SET', KEYS[4], 1, 'PX', ttl * 3) end
if string.find(ARGV[6], 'm') then redis.call('SET', KEYS[5], 1, 'PX', ttl * 3) end
local held = 0
if ARGV[1] ~= '' and redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ttl) then held = 1 end
local holder = redis.call('GET', KEYS[3]) or ''
local m = redis.call('HMGET', KEYS[1], 'e', 's', 'st', 'etag', 'lm', 't')
local age = -1
if m[6] then age = now_ms() - tonumber(m[6]) end
local frames
local have, count = tonumber(ARGV[8]), tonumber(ARGV[5])
if m[1] == ARGV[7] and tonumber(m[2]) - have <= count then
  frames = redis.call('XRANGE', KEYS[2], (have + 1) .. '-0', '+', 'COUNT', count)
else
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
  frames = {}
  for i = #newest, 1, -1 do frames[#frames + 1] = newest[i] end
end
return {held, holder, m[1], m[2], m[3] or '', m[4] or '', m[5] or '', age, frames}
"#;

/// KEYS lease, want:json-patch, want:merge-patch. ARGV lease value, ttl ms.
/// Returns {held, json-patch wanted, merge-patch wanted}.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, redis.call('EXISTS', KEYS[2]), redis.call('EXISTS', KEYS[3])}
"#;

/// KEYS lease. ARGV lease value, channel. Tells the others at once, so one takes over within a
/// round trip instead of a lease ttl.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'r')
return 1
"#;

/// KEYS meta, log, lease. ARGV lease value, epoch, seq, snapshot, json patch, merge patch,
/// replay, replay bytes, history ttl s, channel.
/// Appends the frame, trims the log to `replay` frames and `replay_bytes` (keeping the last),
/// and sends it to every replica, in one step: the log and the feed never disagree on order.
const PUBLISH: &str = r#"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'NOTHOLDER' end
local m = redis.call('HMGET', KEYS[1], 'e', 's', 'rid', 'b')
if m[1] ~= ARGV[2] or m[3] ~= run_id() then return 'EPOCH' end
local seq = tonumber(ARGV[3])
if tonumber(m[2]) + 1 ~= seq then return 'STALE' end
local n = #ARGV[4] + #ARGV[5] + #ARGV[6]
redis.call('XADD', KEYS[2], seq .. '-0', 's', ARGV[4], 'j', ARGV[5], 'm', ARGV[6], 'n', n)
local b = tonumber(m[4] or '0') + n
local len = redis.call('XLEN', KEYS[2])
local keep = math.max(tonumber(ARGV[7]), 1)
while len > 1 and (len > keep or b > tonumber(ARGV[8])) do
  local old = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', KEYS[2], old[1])
  b = b - tonumber(old[2][8])
  len = len - 1
end
redis.call('HSET', KEYS[1], 's', seq, 'b', b, 't', now_ms())
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('PUBLISH', ARGV[10], 'f ' .. ARGV[2] .. ' ' .. seq .. ' ' .. #ARGV[4] .. ' ' ..
  #ARGV[5] .. ' ' .. #ARGV[6] .. '\n' .. ARGV[4] .. ARGV[5] .. ARGV[6])
return 'OK'
"#;

/// KEYS meta, lease. ARGV lease value, failing ('1' or '0'), event, channel.
const STATUS: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'NOTHOLDER' end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'st', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'st')
end
redis.call('PUBLISH', ARGV[4], 's ' .. ARGV[2] .. '\n' .. ARGV[3])
return 'OK'
"#;

/// KEYS meta, log, lease. ARGV lease value, status, last event, channel. The document goes
/// with the lease: no later client with these credentials is served it from Redis.
const DENY: &str = r#"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'NOTHOLDER' end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[4], 'd ' .. ARGV[2] .. '\n' .. ARGV[3])
return 'OK'
"#;

/// KEYS meta, lease. ARGV lease value, etag, last-modified. When the last poll ran and what it
/// left: a new holder keeps the cadence and can ask for a 304.
const POLLED: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 't', now_ms(), 'etag', ARGV[2], 'lm', ARGV[3])
return 1
"#;

/// The scripts, hashed once per process (`EVALSHA`, loaded again after Redis restarts).
pub struct Scripts {
    pub join: Script,
    pub renew: Script,
    pub release: Script,
    pub publish: Script,
    pub status: Script,
    pub deny: Script,
    pub polled: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            join: with_prelude(JOIN),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            publish: with_prelude(PUBLISH),
            status: Script::new(STATUS),
            deny: Script::new(DENY),
            polled: with_prelude(POLLED),
        }
    }
}
