//! The Redis driver of the cluster (`--redis`): moves the room core's [`ClusterRequest`]s to Redis and Redis's
//! answers and room events back into the core. No room logic here; the layout of keys, channels and TTLs is in
//! docs/scaling.md.
//!
//! Two connections: commands (one connection, so the commands of this node reach Redis in the order the core
//! issued them) and pub/sub (re-subscribed by the client after every reconnect). Admission, resume, leave and the
//! sweep of dead nodes are Lua scripts that also publish their event, so every event of a room is numbered and
//! published in the one order Redis executed them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::cluster::{
    Admission, ClusterRequest, ConnectionCount, FailureLimits, Member, Resumption, RoomSnapshot,
    Throttle, wire,
};
use crate::protocol::ErrorCode;
use crate::rooms::ConnId;
use crate::server::Inner;

/// How often a node renews its liveness key and sweeps its rooms.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Lifetime of a node's liveness key: a node not heard of for this long is dead.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// Requests queued for the driver; past this, publishes are dropped and joins refused `unavailable`.
const QUEUE: usize = 8192;
/// Time a command may take before it counts as failed (Redis unreachable).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Hash of node id → the time (ms on Redis's clock) its liveness lapses; renewed by every heartbeat, set to "now"
/// on SIGTERM. Read whole by each heartbeat, which answers which nodes are alive and which are dead.
const NODES_KEY: &str = "pc:nodes";
/// Per address (hash tag `{ADDR}`): a hash of node id → connections that node holds from the address.
const IPS_PREFIX: &str = "pc:ips:";
/// Per address and minute: joins (`j`) and new rooms (`r`); failed joins (`fi`) and the back-off (`fb`) per address;
/// failed joins per room (`fr`). Each key hash-tagged by its address or room.
const RATE_PREFIX: &str = "pc:rate:";
const ROOM_PREFIX: &str = "pc:room:";
const CHANNEL_PREFIX: &str = "pc:ch:";
/// Lifetime of an address's count hash; every node holding connections from it rewrites its field every
/// [`ADDR_REFRESH`], so the hash of an address nobody holds any more (a count lost in an outage) goes by itself.
const ADDR_TTL: Duration = Duration::from_secs(30 * 60);
/// How often a node writes its per-address counts whole (and so renews their TTL).
const ADDR_REFRESH: Duration = Duration::from_secs(10 * 60);
/// A dead node stays listed as dead this long: its fields in address hashes are pruned by the first count that
/// sees them, or expire with their hash, well within it.
const DEAD_FORGET: Duration = Duration::from_secs(45 * 60);

/// Errors of the Redis link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not a Redis URL.
    #[error("{0}")]
    Url(String),
    /// The client could not be set up.
    #[error("{0}")]
    Client(String),
}

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` (TLS, rustls), with user, password and database as usual.
    pub url: String,
    /// How long a peer of a dead node keeps its place, waiting to resume on another node.
    pub resume_grace: Duration,
}

/// Counters and state of the link, for /metrics and /healthz.
#[derive(Debug, Default)]
pub struct RedisStats {
    up: AtomicBool,
    reconnects: AtomicU64,
    errors: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    sweeps_left: AtomicU64,
    limit_fallbacks: AtomicU64,
    /// A connection-cap count could not be kept in Redis: the node's hash is rewritten at the next heartbeat.
    ips_dirty: AtomicBool,
    /// Whether the fallback to per-node limits was logged during this outage.
    fallback_logged: AtomicBool,
}

impl RedisStats {
    /// Whether both connections to Redis are up.
    pub fn up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub(crate) fn encode_prometheus(&self, node: &str, out: &mut String) {
        use std::fmt::Write;
        let gauge = |out: &mut String, name: &str, help: &str, v: u64, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {v}");
        };
        gauge(
            out,
            "peercall_signal_redis_up",
            "1 when this node's connections to Redis are up.",
            u64::from(self.up()),
            "gauge",
        );
        gauge(
            out,
            "peercall_signal_redis_reconnects_total",
            "Reconnections to Redis.",
            self.reconnects.load(Relaxed),
            "counter",
        );
        gauge(
            out,
            "peercall_signal_redis_errors_total",
            "Redis commands that failed or timed out.",
            self.errors.load(Relaxed),
            "counter",
        );
        gauge(
            out,
            "peercall_signal_redis_published_total",
            "Events this node published to room channels (forwards and renames; scripts publish the rest).",
            self.published.load(Relaxed),
            "counter",
        );
        gauge(
            out,
            "peercall_signal_redis_received_total",
            "Room channel messages received.",
            self.received.load(Relaxed),
            "counter",
        );
        gauge(
            out,
            "peercall_signal_redis_dropped_total",
            "Cluster requests dropped (Redis down or the queue full).",
            self.dropped.load(Relaxed),
            "counter",
        );
        gauge(
            out,
            "peercall_signal_redis_limit_fallbacks_total",
            "Connections admitted against this node's own per-address cap because Redis could not count them.",
            self.limit_fallbacks.load(Relaxed),
            "counter",
        );
        gauge(
            out,
            "peercall_signal_redis_swept_total",
            "Peers of dead nodes this node's sweeps announced as left.",
            self.sweeps_left.load(Relaxed),
            "counter",
        );
    }
}

/// The node's handle on its driver tasks.
pub(crate) struct Link {
    pub(crate) node: String,
    tx: mpsc::Sender<Job>,
    pub(crate) stats: Arc<RedisStats>,
}

enum Job {
    Request(ClusterRequest),
    /// Draining or shutting down: delete the liveness key so other nodes start the grace period at once.
    Stop,
    /// Write this node's per-address connection counts whole. In the request queue, so it is ordered with the
    /// counts and uncounts around it (its snapshot is taken when it runs).
    RewriteCounts,
}

impl Link {
    /// Hands a request to the driver. When it cannot take it, joins are answered `unavailable` at once.
    pub(crate) fn submit(&self, inner: &Inner, req: ClusterRequest) {
        match self.tx.try_send(Job::Request(req)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Job::Request(req)))
            | Err(mpsc::error::TrySendError::Closed(Job::Request(req))) => {
                self.stats.dropped.fetch_add(1, Relaxed);
                refuse(inner, req);
            }
            Err(_) => {}
        }
    }

    pub(crate) fn stop(&self) {
        let _ = self.tx.try_send(Job::Stop);
    }
}

/// Answers a join request `unavailable` (Redis down).
fn refuse(inner: &Inner, req: ClusterRequest) {
    match req {
        ClusterRequest::Admit { conn, .. } | ClusterRequest::BadToken { conn, .. } => {
            inner.with_state(|st, now| st.rooms.handle_admission(now, conn, Admission::Unavailable))
        }
        ClusterRequest::Resume { conn, .. } => inner.with_state(|st, now| {
            st.rooms
                .handle_resumption(now, conn, Resumption::Unavailable)
        }),
        ClusterRequest::CountConnection { conn, .. } => inner.with_state(|st, now| {
            st.rooms
                .handle_connection_count(now, conn, ConnectionCount::Unavailable)
        }),
        _ => {}
    }
}

// Every key and channel of a room carries the hash tag `{ROOM}`, every key of an address `{ADDR}`: in a Redis
// Cluster the keys one script touches are then in one slot (room names are `[A-Za-z0-9_-]`, addresses have no
// braces, so the tag is the whole name). On one server the braces are only part of the name.
fn room_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{{{room}}}")
}

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{{{room}}}")
}

/// The room of a channel name (`pc:ch:{ROOM}`).
fn room_of_channel(channel: &str) -> Option<&str> {
    channel
        .strip_prefix(CHANNEL_PREFIX)?
        .strip_prefix('{')?
        .strip_suffix('}')
}

/// Key of the room's failed-join counter (same slot as the room).
fn room_failures_key(room: &str) -> String {
    format!("{RATE_PREFIX}fr:{{{room}}}")
}

/// The hash tag of an address (`{ADDR}`), which every per-address key carries.
fn addr_tag(ip: std::net::IpAddr) -> String {
    format!("{{{ip}}}")
}

fn ips_key(ip: std::net::IpAddr) -> String {
    format!("{IPS_PREFIX}{{{ip}}}")
}

/// A room key outlives its members' node keys, so a dead node's peers are swept (and announced) before it can
/// expire; when every node holding the room is gone, it expires by itself.
fn room_ttl(grace: Duration) -> Duration {
    (NODE_TTL * 3 + grace * 2).max(Duration::from_secs(60))
}

/// The room's part of an admission (one slot: the room's hash and its failure counter). KEYS[1]: the room.
/// ARGV: 1 id, 2 name, 3 node, 4 resume token, 5 capacity, 6 room TTL ms, 7 salt, 8 password hash, 9 require a
/// password, 10 channel, 11 the room's failure key, 12 failures before the room delays joins, 13 their memory ms,
/// 14 the join has waited its delay, 15 creating the room needs the address's new-room grant first.
const ADMIT: &str = r#"
local k = KEYS[1]
local all = redis.call('HGETALL', k)
local members = {}
local n = 0
local pw = false
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'm:' then
    n = n + 1
    table.insert(members, string.sub(f, 3))
    table.insert(members, all[i + 1])
  elseif f == 'pw' then
    pw = all[i + 1]
  end
end
local salt = pw and string.match(pw, '^([^:]*):')
if pw and ARGV[7] ~= salt then return {'salt', salt} end
-- A room past its threshold of failed joins (across the cluster) delays a join once (ARGV[14]: it has waited).
local rf = ARGV[11]
if pw and ARGV[14] ~= '1' and tonumber(ARGV[12]) > 0 then
  if tonumber(redis.call('GET', rf) or '0') >= tonumber(ARGV[12]) then return {'delay'} end
end
if pw then
  if pw ~= ARGV[7] .. ':' .. ARGV[8] then
    local rc = redis.call('INCR', rf)
    redis.call('PEXPIRE', rf, ARGV[13])
    return {'wrong-password', tostring(rc)}
  end
elseif n == 0 then
  if ARGV[8] == '' and ARGV[9] == '1' then return {'password-required'} end
  -- The address's new-room rate is counted in its own slot: ask for it, then come back with the grant.
  if ARGV[15] == '1' and tonumber(ARGV[5]) > 0 then return {'new-room'} end
  if ARGV[8] ~= '' then
    pw = ARGV[7] .. ':' .. ARGV[8]
    redis.call('HSET', k, 'pw', pw)
  end
end
if n >= tonumber(ARGV[5]) then return {'room-full'} end
if redis.call('HEXISTS', k, 'm:' .. ARGV[1]) == 1 then return {'id-taken'} end
local m = cjson.encode({name = ARGV[2], node = ARGV[3]})
redis.call('HSET', k, 'm:' .. ARGV[1], m, 'r:' .. ARGV[4], ARGV[1])
local seq = redis.call('HINCRBY', k, 'v', 1)
redis.call('PEXPIRE', k, ARGV[6])
redis.call('PUBLISH', ARGV[10], cjson.encode({t = 'join', n = ARGV[3], s = seq, id = ARGV[1], name = ARGV[2]}))
table.insert(members, ARGV[1])
table.insert(members, m)
return {'ok', tostring(seq), pw or '', unpack(members)}
"#;

/// The address's part of an admission (one slot: the address's keys). KEYS[1]: its back-off key
/// (`pc:rate:fb:{ADDR}`). ARGV: 1 mode, 2 key prefix, 3 the address's tag, then by mode:
/// - `check` (before the room): refused while backing off, then one join counted against ARGV[4] joins a minute;
/// - `room` (the join creates its room): one new room counted against ARGV[4] new rooms a minute;
/// - `fail` (a wrong password): one failure counted; past ARGV[4] allowed failures the back-off starts at ARGV[5]
///   ms, doubling, at most ARGV[7] ms; failures are forgotten ARGV[6] ms after the last;
/// - `token` (a bad join token): `check` with ARGV[4], then, if the join passed it, `fail` with ARGV[5..8]; answers
///   `failed`, the failures and the back-off (ms), like `fail` (which answers the last two alone).
const ADDRESS: &str = r#"
local p, a, mode = ARGV[2], ARGV[3], ARGV[1]
-- One failed join of the address, with its limits from ARGV[o] on: {failures, back-off ms}.
local function fail(o)
  local fk = p .. 'fi:' .. a
  local fc = redis.call('INCR', fk)
  redis.call('PEXPIRE', fk, ARGV[o + 2])
  local allow = tonumber(ARGV[o])
  local back = 0
  if allow > 0 and fc > allow then
    back = math.floor(math.min(tonumber(ARGV[o + 1]) * 2 ^ math.min(fc - allow - 1, 31), tonumber(ARGV[o + 3])))
    if back > 0 then redis.call('SET', KEYS[1], '1', 'PX', string.format('%d', back)) end
  end
  return {tostring(fc), string.format('%d', back)}
end
if mode == 'fail' then return fail(4) end
if mode == 'check' or mode == 'token' then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return {'backoff', tostring(left)} end
end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local minute = tostring(math.floor(tonumber(redis.call('TIME')[1]) / 60))
  local rk = p .. (mode == 'room' and 'r:' or 'j:') .. a .. ':' .. minute
  local c = redis.call('INCR', rk)
  if c == 1 then redis.call('PEXPIRE', rk, 61000) end
  if c > limit then return {'over'} end
end
if mode == 'token' then
  local f = fail(5)
  return {'failed', f[1], f[2]}
end
return {'ok'}
"#;

/// Counts a connection from an address against the cap over the nodes holding connections from it, except the
/// dead ones (whose fields are dropped). KEYS[1]: the address's hash. ARGV: this node, cap, TTL ms, dead nodes
/// (comma-separated).
const COUNT_CONN: &str = r#"
local dead = {}
for d in string.gmatch(ARGV[4], '[^,]+') do dead[d] = true end
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  if dead[all[i]] then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + (tonumber(all[i + 1]) or 0)
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// KEYS[1]: the address's hash. ARGV: this node.
const UNCOUNT_CONN: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"#;

/// Sets this node's count of one address (0 drops it), dropping dead nodes' fields. KEYS[1]: the address's hash.
/// ARGV: this node, count, TTL ms, dead nodes (comma-separated).
const SET_COUNT: &str = r#"
for d in string.gmatch(ARGV[4], '[^,]+') do redis.call('HDEL', KEYS[1], d) end
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"#;

/// The heartbeat: this node is alive for TTL ms more (with TTL 0, dead from now: SIGTERM); answers the nodes
/// alive and the nodes dead (comma-separated), on Redis's clock, and forgets nodes dead for longer than FORGET ms.
/// KEYS[1]: the nodes hash. ARGV: this node, TTL ms, FORGET ms.
const BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + tonumber(ARGV[2])))
local alive, dead = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local lapse = tonumber(all[i + 1]) or 0
  if lapse > now then
    table.insert(alive, all[i])
  elseif now - lapse > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(dead, all[i])
  end
end
return {table.concat(alive, ','), table.concat(dead, ',')}
"#;

const RESUME: &str = r#"
local k = KEYS[1]
local id = redis.call('HGET', k, 'r:' .. ARGV[1])
if not id then return {'unknown'} end
local m = redis.call('HGET', k, 'm:' .. id)
if not m then
  redis.call('HDEL', k, 'r:' .. ARGV[1])
  return {'unknown'}
end
local info = cjson.decode(m)
info.node = ARGV[3]
redis.call('HSET', k, 'm:' .. id, cjson.encode(info), 'r:' .. ARGV[2], id)
redis.call('HDEL', k, 'r:' .. ARGV[1], 'g:' .. id)
local seq = redis.call('HINCRBY', k, 'v', 1)
redis.call('PEXPIRE', k, ARGV[4])
redis.call('PUBLISH', ARGV[5], cjson.encode({t = 'move', n = ARGV[3], s = seq, id = id}))
local all = redis.call('HGETALL', k)
local members = {}
local pw = ''
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'm:' then
    table.insert(members, string.sub(f, 3))
    table.insert(members, all[i + 1])
  elseif f == 'pw' then
    pw = all[i + 1]
  end
end
return {'ok', tostring(seq), pw, id, info.name, unpack(members)}
"#;

const LEAVE: &str = r#"
local k = KEYS[1]
local m = redis.call('HGET', k, 'm:' .. ARGV[1])
if not m then return 0 end
if cjson.decode(m).node ~= ARGV[4] then return 0 end
redis.call('HDEL', k, 'm:' .. ARGV[1], 'r:' .. ARGV[2], 'g:' .. ARGV[1])
local seq = redis.call('HINCRBY', k, 'v', 1)
redis.call('PUBLISH', ARGV[3], cjson.encode({t = 'left', n = ARGV[4], s = seq, id = ARGV[1]}))
for _, f in ipairs(redis.call('HKEYS', k)) do
  if string.sub(f, 1, 2) == 'm:' then return 1 end
end
redis.call('DEL', k)
return 1
"#;

const RETOKEN: &str = r#"
local k = KEYS[1]
redis.call('HDEL', k, 'r:' .. ARGV[2])
if redis.call('HEXISTS', k, 'm:' .. ARGV[1]) == 1 then
  redis.call('HSET', k, 'r:' .. ARGV[3], ARGV[1])
end
return 1
"#;

const RENAME: &str = r#"
local k = KEYS[1]
local m = redis.call('HGET', k, 'm:' .. ARGV[1])
if not m then return 0 end
local info = cjson.decode(m)
info.name = ARGV[2]
redis.call('HSET', k, 'm:' .. ARGV[1], cjson.encode(info))
redis.call('PUBLISH', ARGV[4], cjson.encode({t = 'name', n = ARGV[3], id = ARGV[1], name = ARGV[2]}))
return 1
"#;

/// Members whose node's liveness key is gone get a grace mark; past the grace period they are removed and
/// announced as left. ARGV: grace ms, channel, the nodes alive (comma-separated, from this node's heartbeat just
/// before), room TTL ms.
const SWEEP: &str = r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('PEXPIRE', k, ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', k)
local map = {}
for i = 1, #all, 2 do map[all[i]] = all[i + 1] end
local alive = {}
for a in string.gmatch(ARGV[3], '[^,]+') do alive[a] = true end
local gone = 0
for f, v in pairs(map) do
  if string.sub(f, 1, 2) == 'm:' then
    local id = string.sub(f, 3)
    local node = cjson.decode(v).node
    local g = map['g:' .. id]
    if not alive[node] then
      if not g then
        redis.call('HSET', k, 'g:' .. id, now)
      elseif now - tonumber(g) >= tonumber(ARGV[1]) then
        redis.call('HDEL', k, f, 'g:' .. id)
        for f2, v2 in pairs(map) do
          if string.sub(f2, 1, 2) == 'r:' and v2 == id then redis.call('HDEL', k, f2) end
        end
        local seq = redis.call('HINCRBY', k, 'v', 1)
        redis.call('PUBLISH', ARGV[2], cjson.encode({t = 'left', s = seq, id = id}))
        gone = gone + 1
      end
    elseif g then
      redis.call('HDEL', k, 'g:' .. id)
    end
  end
end
return gone
"#;

/// Writes a node's local members back (after Redis lost its data). ARGV: node, room TTL ms, password, then
/// id, name, token triples.
const RESTORE: &str = r#"
local k = KEYS[1]
if ARGV[3] ~= '' and redis.call('HEXISTS', k, 'pw') == 0 then redis.call('HSET', k, 'pw', ARGV[3]) end
for i = 4, #ARGV, 3 do
  if redis.call('HEXISTS', k, 'm:' .. ARGV[i]) == 0 then
    redis.call('HSET', k, 'm:' .. ARGV[i], cjson.encode({name = ARGV[i + 1], node = ARGV[1]}))
  end
  redis.call('HSET', k, 'r:' .. ARGV[i + 2], ARGV[i])
end
redis.call('PEXPIRE', k, ARGV[2])
return 1
"#;

struct Scripts {
    admit: Script,
    address: Script,
    beat: Script,
    resume: Script,
    leave: Script,
    retoken: Script,
    rename: Script,
    sweep: Script,
    restore: Script,
    count_conn: Script,
    uncount_conn: Script,
    set_count: Script,
}

impl Scripts {
    /// With `sharded`, the scripts publish room events with `SPUBLISH` (the channel is in the room's slot).
    fn new(sharded: bool) -> Self {
        let publishing = |lua: &str| {
            if sharded {
                Script::from_lua(lua.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
            } else {
                Script::from_lua(lua)
            }
        };
        Scripts {
            admit: publishing(ADMIT),
            address: Script::from_lua(ADDRESS),
            beat: Script::from_lua(BEAT),
            resume: publishing(RESUME),
            leave: publishing(LEAVE),
            retoken: Script::from_lua(RETOKEN),
            rename: publishing(RENAME),
            sweep: publishing(SWEEP),
            restore: Script::from_lua(RESTORE),
            count_conn: Script::from_lua(COUNT_CONN),
            uncount_conn: Script::from_lua(UNCOUNT_CONN),
            set_count: Script::from_lua(SET_COUNT),
        }
    }
}

struct Driver {
    node: String,
    client: Client,
    subscriber: SubscriberClient,
    scripts: Scripts,
    stats: Arc<RedisStats>,
    /// Rooms with local members: subscribed, refreshed and swept by this node.
    rooms: Arc<Mutex<HashSet<String>>>,
    grace: Duration,
    /// Set on every reconnection of the command client: the rooms are written back at the next heartbeat.
    restore_needed: AtomicBool,
    /// Connected to a Redis Cluster: room channels are shard channels (`SSUBSCRIBE`/`SPUBLISH`).
    sharded: bool,
    /// The nodes dead at the last heartbeat (comma-separated): their connections no longer count.
    dead: Mutex<String>,
    /// Addresses whose count this node may have set since its last rewrite (each rewrite clears the rest).
    touched: Mutex<HashSet<std::net::IpAddr>>,
    /// Left the cluster (draining): no more heartbeats, which would make it alive again.
    stopped: AtomicBool,
}

/// Sets up the two Redis clients and the driver tasks. Fails only for a bad URL; an unreachable Redis is retried
/// with back-off (joins meanwhile are refused `unavailable`).
pub(crate) fn start(inner: &Arc<Inner>, settings: &RedisSettings) -> Result<Link, RedisError> {
    let config = Config::from_url(&settings.url).map_err(|e| {
        RedisError::Url(format!(
            "--redis {}: {e} (expected redis://[user:password@]host:port[/db], rediss://..., \
             redis-cluster://host:port[?node=host:port...] or redis-sentinel://host:port/?sentinelServiceName=NAME)",
            redact(&settings.url)
        ))
    })?;
    let sharded = config.server.is_clustered();
    let policy = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
    let build = || {
        Builder::from_config(config.clone())
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = 4096;
            })
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 1;
            })
            .set_policy(policy.clone())
            .clone()
    };
    let client = build()
        .build()
        .map_err(|e| RedisError::Client(e.to_string()))?;
    let subscriber = build()
        .build_subscriber_client()
        .map_err(|e| RedisError::Client(e.to_string()))?;
    let node = {
        let n: u32 = rand::random();
        format!("{n:08x}")
    };
    let stats = Arc::new(RedisStats::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let driver = Arc::new(Driver {
        node: node.clone(),
        client,
        subscriber,
        scripts: Scripts::new(sharded),
        stats: stats.clone(),
        rooms: Arc::new(Mutex::new(HashSet::new())),
        grace: settings.resume_grace,
        restore_needed: AtomicBool::new(false),
        sharded,
        dead: Mutex::new(String::new()),
        touched: Mutex::new(HashSet::new()),
        stopped: AtomicBool::new(false),
    });
    {
        let d = driver.clone();
        let mut reconnects = driver.client.reconnect_rx();
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                d.restore_needed.store(true, Relaxed);
            }
        });
    }
    // The connection tasks run (and reconnect) for the life of the process: their handles are not awaited.
    drop(driver.client.connect());
    drop(driver.subscriber.connect());
    if sharded {
        // fred's own re-subscription sends a plain SUBSCRIBE first, which fails with no plain channel: the
        // driver re-subscribes its rooms' shard channels itself, one per slot.
        let d = driver.clone();
        let mut reconnects = driver.subscriber.reconnect_rx();
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                let mut rooms: Vec<String> = d.lock_rooms().iter().cloned().collect();
                // A cluster that is still settling may refuse some: tried again for a few seconds.
                for _ in 0..10 {
                    let mut failed = Vec::new();
                    for room in rooms {
                        if !d.lock_rooms().contains(&room) {
                            continue;
                        }
                        if let Err(e) = d.subscriber.ssubscribe(channel(&room)).await {
                            d.failed("resubscribe", &e);
                            failed.push(room);
                        }
                    }
                    if failed.is_empty() {
                        break;
                    }
                    rooms = failed;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
    } else {
        drop(driver.subscriber.manage_subscriptions());
    }
    let weak = Arc::downgrade(inner);
    tokio::spawn(run_requests(driver.clone(), weak.clone(), rx));
    tokio::spawn(run_events(driver.clone(), weak.clone()));
    tokio::spawn(run_heartbeat(driver, weak, tx.clone()));
    tracing::info!(
        node = %node,
        "signaling cluster: node {node}, Redis at {}",
        redact(&settings.url)
    );
    Ok(Link { node, tx, stats })
}

/// The URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn hash_password(salt: &str, password: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(password.as_bytes())
        .finalize();
    hex_of(&digest)
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What an address script's refusal of a join (`check` or `token` mode) means: backing off, or out of joins this
/// minute; any other reply is the store failing.
fn address_refusal(reply: &[String]) -> Admission {
    match reply.first().map(String::as_str) {
        Some("backoff") => {
            let left: u64 = reply.get(1).and_then(|l| l.parse().ok()).unwrap_or(1);
            Admission::Backoff(Duration::from_millis(left.max(1)))
        }
        Some("over") => Admission::Throttled(Throttle::Joins),
        _ => Admission::Unavailable,
    }
}

/// The `fail` arguments of the address script: allowance, first back-off, memory and longest back-off (ms).
fn failure_args(f: &FailureLimits) -> [String; 4] {
    [
        f.backoff_after.to_string(),
        f.first_backoff.as_millis().to_string(),
        f.memory.as_millis().max(1).to_string(),
        f.max_backoff.as_millis().to_string(),
    ]
}

/// Parses the `{id, json}` pairs a script returns into members.
fn members_of(pairs: &[String]) -> Vec<Member> {
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let v: serde_json::Value = serde_json::from_str(&pair[1]).ok()?;
            Some(Member {
                id: pair[0].clone(),
                name: v.get("name")?.as_str()?.to_owned(),
                node: v.get("node")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

impl Driver {
    fn connected(&self) -> bool {
        self.client.is_connected() && self.subscriber.is_connected()
    }

    fn failed(&self, what: &str, e: &Error) {
        self.stats.errors.fetch_add(1, Relaxed);
        tracing::debug!("Redis {what} failed: {e}");
    }

    // The fields of one `ClusterRequest::Admit`, as they go into the script.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        room: &str,
        id: &str,
        name: &str,
        resume: &str,
        password: Option<&str>,
        capacity: usize,
        require_password: bool,
        rates: (Option<std::net::IpAddr>, u32, u32),
        failures: FailureLimits,
    ) -> Admission {
        let (ip, joins_per_min, rooms_per_min) = rates;
        // The address's back-off and join rate first (its own slot); a join that has waited its room's delay was
        // counted the first time.
        if let Some(ip) = ip {
            let limit = if failures.delayed { 0 } else { joins_per_min };
            match self.address(ip, "check", &[limit.to_string()]).await {
                Ok(r) if r.first().map(String::as_str) == Some("ok") => {}
                Ok(r) => return address_refusal(&r),
                Err(e) => {
                    self.failed("admission", &e);
                    return Admission::Unavailable;
                }
            }
        }
        let key = room_key(room);
        let ttl = room_ttl(self.grace).as_millis().to_string();
        let mut salt = hex_of(&rand::random::<[u8; 16]>());
        let mut needs_grant = ip.is_some() && rooms_per_min > 0;
        // At most three times: again with the salt of a room that has a password, again with the new-room grant.
        for _ in 0..3 {
            let hash = password.map_or_else(String::new, |p| hash_password(&salt, p));
            let args: Vec<String> = vec![
                id.to_owned(),
                name.to_owned(),
                self.node.clone(),
                resume.to_owned(),
                capacity.to_string(),
                ttl.clone(),
                salt.clone(),
                hash,
                if require_password { "1" } else { "0" }.to_owned(),
                channel(room),
                room_failures_key(room),
                failures.room_delay_after.to_string(),
                failures.room_memory.as_millis().max(1).to_string(),
                if failures.delayed { "1" } else { "0" }.to_owned(),
                if needs_grant { "1" } else { "0" }.to_owned(),
            ];
            let reply: Result<Vec<String>, Error> = self
                .scripts
                .admit
                .evalsha_with_reload(&self.client, key.clone(), args)
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.failed("admission", &e);
                    return Admission::Unavailable;
                }
            };
            match reply.first().map(String::as_str) {
                Some("ok") if reply.len() >= 3 => {
                    let seq = reply[1].parse().unwrap_or(0);
                    let password = (!reply[2].is_empty()).then(|| reply[2].clone());
                    return Admission::Admitted {
                        seq,
                        members: members_of(&reply[3..]),
                        password,
                    };
                }
                Some("salt") if reply.len() == 2 => {
                    // Without a password too: asked again with the room's salt, it counts as a wrong one.
                    salt = reply[1].clone();
                }
                Some("new-room") => {
                    // The room is created by this join: one new room of the address (its slot), then again. Should
                    // another node create it meanwhile, the grant was spent for nothing (counted, never exceeded).
                    let Some(ip) = ip else {
                        return Admission::Unavailable;
                    };
                    match self.address(ip, "room", &[rooms_per_min.to_string()]).await {
                        Ok(r) if r.first().map(String::as_str) == Some("ok") => needs_grant = false,
                        Ok(r) if r.first().map(String::as_str) == Some("over") => {
                            return Admission::Throttled(Throttle::NewRooms);
                        }
                        Ok(_) => return Admission::Unavailable,
                        Err(e) => {
                            self.failed("admission", &e);
                            return Admission::Unavailable;
                        }
                    }
                }
                Some("wrong-password") if reply.len() == 2 => {
                    let room_failures = reply[1].parse().unwrap_or(0);
                    let (failures, backoff) = match ip {
                        Some(ip) => self.count_failure(ip, &failures).await,
                        None => (0, 0),
                    };
                    return Admission::WrongPassword {
                        failures,
                        room_failures,
                        backoff: (backoff > 0).then(|| Duration::from_millis(backoff)),
                    };
                }
                Some("delay") => return Admission::Delay,
                Some("wrong-password") | Some("password-required") => {
                    return Admission::Refused(ErrorCode::WrongPassword);
                }
                Some("room-full") => return Admission::Refused(ErrorCode::RoomFull),
                _ => return Admission::Unavailable,
            }
        }
        Admission::Refused(ErrorCode::WrongPassword)
    }

    /// Runs the address script (the keys of `ip`'s slot) in `mode` with its mode's arguments.
    async fn address(
        &self,
        ip: std::net::IpAddr,
        mode: &str,
        extra: &[String],
    ) -> Result<Vec<String>, Error> {
        let tag = addr_tag(ip);
        let mut args = vec![mode.to_owned(), RATE_PREFIX.to_owned(), tag.clone()];
        args.extend_from_slice(extra);
        self.scripts
            .address
            .evalsha_with_reload(&self.client, format!("{RATE_PREFIX}fb:{tag}"), args)
            .await
    }

    /// Counts a failed join of `ip` (a wrong password, a bad join token) cluster-wide: its failures so far and the
    /// back-off (ms) it starts, if any. When Redis fails here the join failed all the same: it is answered,
    /// uncounted.
    async fn count_failure(&self, ip: std::net::IpAddr, f: &FailureLimits) -> (u32, u64) {
        match self.address(ip, "fail", &failure_args(f)).await {
            Ok(r) if r.len() == 2 => (r[0].parse().unwrap_or(0), r[1].parse().unwrap_or(0)),
            Ok(_) => (0, 0),
            Err(e) => {
                self.failed("failure count", &e);
                (0, 0)
            }
        }
    }

    /// A bad join token of `ip`: refused while the address backs off or has no join left this minute (across the
    /// cluster), else counted with its other failed joins.
    async fn bad_token(
        &self,
        ip: std::net::IpAddr,
        joins_per_min: u32,
        f: &FailureLimits,
    ) -> Admission {
        let mut extra = vec![joins_per_min.to_string()];
        extra.extend(failure_args(f));
        match self.address(ip, "token", &extra).await {
            Ok(r) => match r.first().map(String::as_str) {
                Some("failed") if r.len() == 3 => {
                    let backoff: u64 = r[2].parse().unwrap_or(0);
                    Admission::BadToken {
                        failures: r[1].parse().unwrap_or(0),
                        backoff: (backoff > 0).then(|| Duration::from_millis(backoff)),
                    }
                }
                _ => address_refusal(&r),
            },
            Err(e) => {
                self.failed("failure count", &e);
                Admission::Unavailable
            }
        }
    }

    async fn resume(&self, room: &str, token: &str, new_token: &str) -> Resumption {
        let args = vec![
            token.to_owned(),
            new_token.to_owned(),
            self.node.clone(),
            room_ttl(self.grace).as_millis().to_string(),
            channel(room),
        ];
        let reply: Result<Vec<String>, Error> = self
            .scripts
            .resume
            .evalsha_with_reload(&self.client, room_key(room), args)
            .await;
        match reply {
            Ok(r) if r.first().map(String::as_str) == Some("ok") && r.len() >= 5 => {
                Resumption::Resumed {
                    seq: r[1].parse().unwrap_or(0),
                    password: (!r[2].is_empty()).then(|| r[2].clone()),
                    id: r[3].clone(),
                    name: r[4].clone(),
                    members: members_of(&r[5..]),
                }
            }
            Ok(_) => Resumption::Unknown,
            Err(e) => {
                self.failed("resume", &e);
                Resumption::Unavailable
            }
        }
    }

    async fn script(&self, script: &Script, room: &str, args: Vec<String>, what: &str) {
        let r: Result<Value, Error> = script
            .evalsha_with_reload(&self.client, room_key(room), args)
            .await;
        if let Err(e) = r {
            self.failed(what, &e);
        }
    }

    async fn handle(&self, inner: &Weak<Inner>, req: ClusterRequest) {
        let now_connected = self.connected();
        match req {
            ClusterRequest::Subscribe { room } => {
                self.lock_rooms().insert(room.clone());
                let r = if self.sharded {
                    self.subscriber.ssubscribe(channel(&room)).await
                } else {
                    self.subscriber.subscribe(channel(&room)).await
                };
                if let Err(e) = r {
                    self.failed("subscribe", &e);
                }
            }
            ClusterRequest::Unsubscribe { room } => {
                self.lock_rooms().remove(&room);
                let r = if self.sharded {
                    self.subscriber.sunsubscribe(channel(&room)).await
                } else {
                    self.subscriber.unsubscribe(channel(&room)).await
                };
                if let Err(e) = r {
                    self.failed("unsubscribe", &e);
                }
            }
            ClusterRequest::Admit {
                conn,
                room,
                id,
                name,
                resume,
                password,
                capacity,
                require_password,
                ip,
                joins_per_min,
                rooms_per_min,
                failures,
            } => {
                let answer = if now_connected {
                    self.admit(
                        &room,
                        &id,
                        &name,
                        &resume,
                        password.as_deref(),
                        capacity,
                        require_password,
                        (ip, joins_per_min, rooms_per_min),
                        *failures,
                    )
                    .await
                } else {
                    Admission::Unavailable
                };
                answer_admission(inner, conn, answer);
            }
            ClusterRequest::BadToken {
                conn,
                ip,
                joins_per_min,
                failures,
            } => {
                let answer = if now_connected {
                    self.bad_token(ip, joins_per_min, &failures).await
                } else {
                    Admission::Unavailable
                };
                answer_admission(inner, conn, answer);
            }
            ClusterRequest::Resume {
                conn,
                room,
                token,
                new_token,
                ..
            } => {
                let answer = if now_connected {
                    self.resume(&room, &token, &new_token).await
                } else {
                    Resumption::Unavailable
                };
                if let Some(inner) = inner.upgrade() {
                    inner.with_state(|st, now| st.rooms.handle_resumption(now, conn, answer));
                }
            }
            ClusterRequest::CountConnection { conn, ip, limit } => {
                let answer = if now_connected {
                    self.count_connection(ip, limit).await
                } else {
                    ConnectionCount::Unavailable
                };
                if answer == ConnectionCount::Unavailable {
                    self.limit_fallback();
                }
                if let Some(inner) = inner.upgrade() {
                    inner.with_state(|st, now| st.rooms.handle_connection_count(now, conn, answer));
                }
            }
            ClusterRequest::UncountConnection { ip } if !now_connected => {
                let _ = ip;
                self.stats.ips_dirty.store(true, Relaxed);
            }
            ClusterRequest::UncountConnection { ip } => {
                let r: Result<Value, Error> = self
                    .scripts
                    .uncount_conn
                    .evalsha_with_reload(&self.client, ips_key(ip), vec![self.node.clone()])
                    .await;
                if let Err(e) = r {
                    self.failed("connection uncount", &e);
                    self.stats.ips_dirty.store(true, Relaxed);
                }
            }
            _ if !now_connected => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
            ClusterRequest::Leave { room, id, token } => {
                let args = vec![id, token, channel(&room), self.node.clone()];
                self.script(&self.scripts.leave, &room, args, "leave").await;
            }
            ClusterRequest::Retoken { room, id, old, new } => {
                self.script(&self.scripts.retoken, &room, vec![id, old, new], "retoken")
                    .await;
            }
            ClusterRequest::Rename { room, id, name } => {
                let args = vec![id, name, self.node.clone(), channel(&room)];
                self.script(&self.scripts.rename, &room, args, "rename")
                    .await;
            }
            ClusterRequest::Forward {
                room,
                to,
                from,
                kind,
                payload,
            } => {
                let text = wire::forward(&self.node, &to, &from, kind, &payload);
                let r: Result<i64, Error> = if self.sharded {
                    self.client.spublish(channel(&room), text).await
                } else {
                    self.client.publish(channel(&room), text).await
                };
                match r {
                    Ok(_) => {
                        self.stats.published.fetch_add(1, Relaxed);
                    }
                    Err(e) => self.failed("publish", &e),
                }
            }
        }
    }

    fn dead_nodes(&self) -> String {
        self.dead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn lock_touched(&self) -> std::sync::MutexGuard<'_, HashSet<std::net::IpAddr>> {
        self.touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn count_connection(&self, ip: std::net::IpAddr, limit: u32) -> ConnectionCount {
        let args = vec![
            self.node.clone(),
            limit.to_string(),
            ADDR_TTL.as_millis().to_string(),
            self.dead_nodes(),
        ];
        let r: Result<i64, Error> = self
            .scripts
            .count_conn
            .evalsha_with_reload(&self.client, ips_key(ip), args)
            .await;
        match r {
            Ok(1) => {
                self.lock_touched().insert(ip);
                ConnectionCount::Counted
            }
            Ok(_) => ConnectionCount::Refused,
            Err(e) => {
                self.failed("connection count", &e);
                ConnectionCount::Unavailable
            }
        }
    }

    /// A connection admitted on this node's own cap: counted, logged once per outage, rewritten later.
    fn limit_fallback(&self) {
        self.stats.limit_fallbacks.fetch_add(1, Relaxed);
        self.stats.ips_dirty.store(true, Relaxed);
        if !self.stats.fallback_logged.swap(true, Relaxed) {
            tracing::warn!(
                "signaling cluster: Redis cannot count connections: the per-address cap \
                 (--max-connections-per-ip) holds per node until it is back"
            );
        }
    }

    /// Writes this node's per-address connection counts whole (the core's own figures are the truth): one
    /// script per address (each address is its own slot), and a zero for every address it no longer holds.
    async fn rewrite_counts(&self, counts: Vec<(std::net::IpAddr, u32)>) -> Result<(), Error> {
        let ttl = ADDR_TTL.as_millis().to_string();
        let dead = self.dead_nodes();
        let now: HashSet<std::net::IpAddr> = counts.iter().map(|(ip, _)| *ip).collect();
        let gone: Vec<std::net::IpAddr> = self
            .lock_touched()
            .iter()
            .filter(|ip| !now.contains(ip))
            .copied()
            .collect();
        let all = counts.into_iter().chain(gone.into_iter().map(|ip| (ip, 0)));
        for (ip, n) in all {
            let args = vec![self.node.clone(), n.to_string(), ttl.clone(), dead.clone()];
            let _: Value = self
                .scripts
                .set_count
                .evalsha_with_reload(&self.client, ips_key(ip), args)
                .await?;
            let mut touched = self.lock_touched();
            if n > 0 {
                touched.insert(ip);
            } else {
                touched.remove(&ip);
            }
        }
        Ok(())
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn restore(&self, rooms: Vec<RoomSnapshot>) {
        let ttl = room_ttl(self.grace).as_millis().to_string();
        for r in rooms {
            let mut args = vec![
                self.node.clone(),
                ttl.clone(),
                r.password.unwrap_or_default(),
            ];
            for (id, name, token) in r.members {
                args.extend([id, name, token]);
            }
            self.script(&self.scripts.restore, &r.room, args, "restore")
                .await;
        }
    }

    async fn beat(&self) -> Result<(), Error> {
        let args = vec![
            self.node.clone(),
            NODE_TTL.as_millis().to_string(),
            DEAD_FORGET.as_millis().to_string(),
        ];
        let lists: Vec<String> = self
            .scripts
            .beat
            .evalsha_with_reload(&self.client, NODES_KEY, args)
            .await?;
        let alive = lists.first().cloned().unwrap_or_default();
        *self
            .dead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            lists.get(1).cloned().unwrap_or_default();
        let rooms: Vec<String> = self.lock_rooms().iter().cloned().collect();
        let grace = self.grace.as_millis().to_string();
        let ttl = room_ttl(self.grace).as_millis().to_string();
        for room in rooms {
            let args = vec![grace.clone(), channel(&room), alive.clone(), ttl.clone()];
            let gone: i64 = self
                .scripts
                .sweep
                .evalsha_with_reload(&self.client, room_key(&room), args)
                .await?;
            if gone > 0 {
                self.stats.sweeps_left.fetch_add(gone as u64, Relaxed);
                tracing::info!(
                    room,
                    "signaling cluster: {gone} peer(s) of a dead node left room {room:?}"
                );
            }
        }
        Ok(())
    }
}

fn answer_admission(inner: &Weak<Inner>, conn: ConnId, answer: Admission) {
    if let Some(inner) = inner.upgrade() {
        inner.with_state(|st, now| st.rooms.handle_admission(now, conn, answer));
    }
}

async fn run_requests(driver: Arc<Driver>, inner: Weak<Inner>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Request(req) => driver.handle(&inner, req).await,
            Job::RewriteCounts => {
                let Some(strong) = inner.upgrade() else { break };
                let counts = strong.with_state(|st, _| st.rooms.cluster_ip_counts());
                drop(strong);
                if let Err(e) = driver.rewrite_counts(counts).await {
                    driver.failed("connection counts", &e);
                    driver.stats.ips_dirty.store(true, Relaxed);
                } else {
                    driver.stats.fallback_logged.store(false, Relaxed);
                }
            }
            Job::Stop => {
                driver.stopped.store(true, Relaxed);
                // Dead from now: the other nodes start the grace period of its peers and stop counting its
                // connections (they are about to close) at their next heartbeat.
                let args = vec![
                    driver.node.clone(),
                    "0".to_owned(),
                    DEAD_FORGET.as_millis().to_string(),
                ];
                let _: Result<Value, Error> = driver
                    .scripts
                    .beat
                    .evalsha_with_reload(&driver.client, NODES_KEY, args)
                    .await;
                tracing::info!("signaling cluster: node {} left the cluster", driver.node);
                break;
            }
        }
    }
}

/// Room channel messages into the core, a batch per lock.
async fn run_events(driver: Arc<Driver>, inner: Weak<Inner>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = driver.subscriber.message_rx();
    loop {
        let first = match rx.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                driver.stats.dropped.fetch_add(n, Relaxed);
                tracing::warn!("signaling cluster: {n} room events lost (this node fell behind)");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        driver.stats.received.fetch_add(batch.len() as u64, Relaxed);
        let events: Vec<_> = batch
            .into_iter()
            .filter_map(|m| {
                let room = room_of_channel(&m.channel)?.to_owned();
                let text = m.value.as_str()?;
                let event = wire::parse(&text);
                if event.is_none() {
                    tracing::debug!("signaling cluster: malformed event on {}", m.channel);
                }
                Some((room, event?))
            })
            .collect();
        let Some(inner) = inner.upgrade() else { break };
        inner.with_state(|st, now| {
            for (room, event) in events {
                st.rooms.handle_cluster_event(now, &room, event);
            }
        });
    }
}

/// Liveness key, room TTLs and the sweep, every [`HEARTBEAT`]; notices reconnections (and restores the rooms
/// into a Redis that came back empty).
async fn run_heartbeat(driver: Arc<Driver>, inner: Weak<Inner>, tx: mpsc::Sender<Job>) {
    let mut was_up = false;
    let mut down_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(HEARTBEAT);
    let refresh_every = (ADDR_REFRESH.as_millis() / HEARTBEAT.as_millis()).max(1) as u64;
    let mut beats: u64 = 0;
    loop {
        ticker.tick().await;
        if inner.strong_count() == 0 || driver.stopped.load(Relaxed) {
            break;
        }
        beats += 1;
        if beats.is_multiple_of(refresh_every) {
            // Renews the TTL of this node's address counts (and drops any it no longer holds).
            driver.stats.ips_dirty.store(true, Relaxed);
        }
        let up = driver.connected();
        let reconnected = driver.restore_needed.swap(false, Relaxed);
        if up && (!was_up || reconnected) {
            if down_since.is_some() || reconnected {
                driver.stats.reconnects.fetch_add(1, Relaxed);
                tracing::warn!(
                    "signaling cluster: Redis is reachable again; restoring this node's rooms"
                );
            }
            // Write back what this node holds: a Redis that restarted has forgotten it.
            let snapshot = inner
                .upgrade()
                .map(|i| i.with_state(|st, _| st.rooms.cluster_snapshot()))
                .unwrap_or_default();
            driver.restore(snapshot).await;
            driver.stats.ips_dirty.store(true, Relaxed);
        }
        if up
            && driver.stats.ips_dirty.swap(false, Relaxed)
            && tx.try_send(Job::RewriteCounts).is_err()
        {
            driver.stats.ips_dirty.store(true, Relaxed);
        }
        if !up && was_up {
            tracing::error!(
                "signaling cluster: Redis unreachable: local calls go on, new joins are refused (unavailable) \
                 until it is back"
            );
        }
        if !up && down_since.is_none() {
            down_since = Some(Instant::now());
        }
        if up {
            down_since = None;
        }
        was_up = up;
        let ok = up
            && driver
                .beat()
                .await
                .map_err(|e| driver.failed("heartbeat", &e))
                .is_ok();
        driver
            .stats
            .up
            .store(ok || (up && driver.connected()), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_hashes_salted() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_ne!(hash_password("a", "pw"), hash_password("b", "pw"));
        assert_eq!(hash_password("a", "pw").len(), 64);
        let m = members_of(&[
            "p-1".into(),
            r#"{"name":"Ann","node":"n1"}"#.into(),
            "p-2".into(),
            "junk".into(),
        ]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].node, "n1");
    }

    /// The slot of a key in a Redis Cluster: CRC16 (XMODEM) of its hash tag (or of the whole key) mod 16384.
    fn slot(key: &str) -> u16 {
        let tag = match (
            key.find('{'),
            key.find('{').and_then(|s| key[s + 1..].find('}')),
        ) {
            (Some(s), Some(len)) if len > 0 => &key[s + 1..s + 1 + len],
            _ => key,
        };
        let mut crc: u16 = 0;
        for b in tag.bytes() {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn the_keys_of_one_script_share_a_slot() {
        // Known slots (CLUSTER KEYSLOT): "foo" is 12182, "123456789" is 12739.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("x{123456789}y"), 12739);
        for room in ["a", "room-1", "Z_9-x"] {
            let s = slot(&room_key(room));
            assert_eq!(slot(&channel(room)), s, "the channel is in the room's slot");
            assert_eq!(
                slot(&room_failures_key(room)),
                s,
                "the failure count is in the room's slot"
            );
            assert_eq!(room_of_channel(&channel(room)), Some(room));
        }
        assert_ne!(
            slot(&room_key("a")),
            slot(&room_key("b")),
            "rooms spread over slots"
        );
        for ip in ["127.0.0.2", "2001:db8::"] {
            let ip: std::net::IpAddr = ip.parse().expect("address");
            let tag = addr_tag(ip);
            let s = slot(&ips_key(ip));
            for key in [
                format!("{RATE_PREFIX}fb:{tag}"),
                format!("{RATE_PREFIX}fi:{tag}"),
                format!("{RATE_PREFIX}j:{tag}:29000000"),
                format!("{RATE_PREFIX}r:{tag}:29000000"),
            ] {
                assert_eq!(slot(&key), s, "{key} is in the address's slot");
            }
        }
        assert_eq!(
            room_of_channel("pc:ch:a"),
            None,
            "an untagged channel is not ours"
        );
    }
}
