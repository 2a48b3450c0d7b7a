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

const NODE_PREFIX: &str = "pc:node:";
/// The set of node ids seen by their heartbeat (pruned by the counting script when a node's key is gone).
const NODES_KEY: &str = "pc:nodes";
/// Per node: a hash of client address → connections it holds, with the node's TTL.
const IPS_PREFIX: &str = "pc:ips:";
/// Per address and minute: joins (`j`) and new rooms (`r`) across the cluster.
const RATE_PREFIX: &str = "pc:rate:";
const ROOM_PREFIX: &str = "pc:room:";
const CHANNEL_PREFIX: &str = "pc:ch:";

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
        ClusterRequest::Admit { conn, .. } => {
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

fn room_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// A room key outlives its members' node keys, so a dead node's peers are swept (and announced) before it can
/// expire; when every node holding the room is gone, it expires by itself.
fn room_ttl(grace: Duration) -> Duration {
    (NODE_TTL * 3 + grace * 2).max(Duration::from_secs(60))
}

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
-- Failed joins across the cluster (ARGV[15..21]), checked like one node's: an address backing off is refused
-- first, then a room past its threshold delays the join once (ARGV[21]: it has waited).
local ip = ARGV[11]
if ip ~= '' then
  local left = redis.call('PTTL', ARGV[14] .. 'fb:' .. ip)
  if left > 0 then return {'backoff', tostring(left)} end
end
local rf = ARGV[14] .. 'fr:' .. k
if pw and ARGV[21] ~= '1' and tonumber(ARGV[19]) > 0 then
  if tonumber(redis.call('GET', rf) or '0') >= tonumber(ARGV[19]) then return {'delay'} end
end
-- Cluster-wide join rates of the address (ARGV[11]): one counter per address and minute, on Redis's clock.
local minute = ''
if ARGV[11] ~= '' then
  minute = tostring(math.floor(tonumber(redis.call('TIME')[1]) / 60))
  if tonumber(ARGV[12]) > 0 then
    local jk = ARGV[14] .. 'j:' .. ARGV[11] .. ':' .. minute
    local c = redis.call('INCR', jk)
    if c == 1 then redis.call('PEXPIRE', jk, 61000) end
    if c > tonumber(ARGV[12]) then return {'join-rate'} end
  end
end
if pw then
  if pw ~= ARGV[7] .. ':' .. ARGV[8] then
    local rc = redis.call('INCR', rf)
    redis.call('PEXPIRE', rf, ARGV[20])
    local fc, back = 0, 0
    if ip ~= '' then
      local fk = ARGV[14] .. 'fi:' .. ip
      fc = redis.call('INCR', fk)
      redis.call('PEXPIRE', fk, ARGV[18])
      local allow = tonumber(ARGV[15])
      if allow > 0 and fc > allow then
        back = math.floor(math.min(tonumber(ARGV[16]) * 2 ^ math.min(fc - allow - 1, 31), tonumber(ARGV[17])))
        redis.call('SET', ARGV[14] .. 'fb:' .. ip, '1', 'PX', string.format('%d', back))
      end
    end
    return {'wrong-password', tostring(fc), tostring(rc), string.format('%d', back)}
  end
elseif n == 0 then
  if ARGV[8] == '' and ARGV[9] == '1' then return {'password-required'} end
  if minute ~= '' and tonumber(ARGV[13]) > 0 and tonumber(ARGV[5]) > 0 then
    local rk = ARGV[14] .. 'r:' .. ARGV[11] .. ':' .. minute
    local c = redis.call('INCR', rk)
    if c == 1 then redis.call('PEXPIRE', rk, 61000) end
    if c > tonumber(ARGV[13]) then return {'new-room-rate'} end
  end
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

/// Counts a connection from an address against the cap over all live nodes. KEYS[1]: this node's hash.
/// ARGV: address, cap, node key prefix, nodes set, this node, TTL ms, hash prefix.
const COUNT_CONN: &str = r#"
local total = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
for _, n in ipairs(redis.call('SMEMBERS', ARGV[4])) do
  if n ~= ARGV[5] then
    if redis.call('EXISTS', ARGV[3] .. n) == 1 then
      total = total + tonumber(redis.call('HGET', ARGV[7] .. n, ARGV[1]) or '0')
    else
      redis.call('SREM', ARGV[4], n)
    end
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"#;

const UNCOUNT_CONN: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"#;

/// Replaces this node's per-address counts. KEYS[1]: the hash. ARGV: TTL ms, then address, count pairs.
const SET_COUNTS: &str = r#"
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
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
/// announced as left. ARGV: grace ms, channel, node key prefix, room TTL ms.
const SWEEP: &str = r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('PEXPIRE', k, ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', k)
local map = {}
for i = 1, #all, 2 do map[all[i]] = all[i + 1] end
local gone = 0
for f, v in pairs(map) do
  if string.sub(f, 1, 2) == 'm:' then
    local id = string.sub(f, 3)
    local node = cjson.decode(v).node
    local g = map['g:' .. id]
    if redis.call('EXISTS', ARGV[3] .. node) == 0 then
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
    resume: Script,
    leave: Script,
    retoken: Script,
    rename: Script,
    sweep: Script,
    restore: Script,
    count_conn: Script,
    uncount_conn: Script,
    set_counts: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            admit: Script::from_lua(ADMIT),
            resume: Script::from_lua(RESUME),
            leave: Script::from_lua(LEAVE),
            retoken: Script::from_lua(RETOKEN),
            rename: Script::from_lua(RENAME),
            sweep: Script::from_lua(SWEEP),
            restore: Script::from_lua(RESTORE),
            count_conn: Script::from_lua(COUNT_CONN),
            uncount_conn: Script::from_lua(UNCOUNT_CONN),
            set_counts: Script::from_lua(SET_COUNTS),
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
}

/// Sets up the two Redis clients and the driver tasks. Fails only for a bad URL; an unreachable Redis is retried
/// with back-off (joins meanwhile are refused `unavailable`).
pub(crate) fn start(inner: &Arc<Inner>, settings: &RedisSettings) -> Result<Link, RedisError> {
    let config = Config::from_url(&settings.url).map_err(|e| {
        RedisError::Url(format!(
            "--redis {}: {e} (expected redis://[user:password@]host:port[/db] or rediss://...)",
            redact(&settings.url)
        ))
    })?;
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
        scripts: Scripts::new(),
        stats: stats.clone(),
        rooms: Arc::new(Mutex::new(HashSet::new())),
        grace: settings.resume_grace,
        restore_needed: AtomicBool::new(false),
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
    drop(driver.subscriber.manage_subscriptions());
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
        let key = room_key(room);
        let ttl = room_ttl(self.grace).as_millis().to_string();
        let mut salt = hex_of(&rand::random::<[u8; 16]>());
        // At most twice: the second time with the salt of a room that has a password.
        for _ in 0..2 {
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
                ip.map_or_else(String::new, |ip| ip.to_string()),
                joins_per_min.to_string(),
                rooms_per_min.to_string(),
                RATE_PREFIX.to_owned(),
                failures.backoff_after.to_string(),
                failures.first_backoff.as_millis().to_string(),
                failures.max_backoff.as_millis().to_string(),
                failures.memory.as_millis().max(1).to_string(),
                failures.room_delay_after.to_string(),
                failures.room_memory.as_millis().max(1).to_string(),
                if failures.delayed { "1" } else { "0" }.to_owned(),
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
                Some("wrong-password") if reply.len() == 4 => {
                    let backoff: u64 = reply[3].parse().unwrap_or(0);
                    return Admission::WrongPassword {
                        failures: reply[1].parse().unwrap_or(0),
                        room_failures: reply[2].parse().unwrap_or(0),
                        backoff: (backoff > 0).then(|| Duration::from_millis(backoff)),
                    };
                }
                Some("backoff") if reply.len() == 2 => {
                    let left: u64 = reply[1].parse().unwrap_or(1);
                    return Admission::Backoff(Duration::from_millis(left.max(1)));
                }
                Some("delay") => return Admission::Delay,
                Some("wrong-password") | Some("password-required") => {
                    return Admission::Refused(ErrorCode::WrongPassword);
                }
                Some("room-full") => return Admission::Refused(ErrorCode::RoomFull),
                Some("join-rate") => return Admission::Throttled(Throttle::Joins),
                Some("new-room-rate") => return Admission::Throttled(Throttle::NewRooms),
                _ => return Admission::Unavailable,
            }
        }
        Admission::Refused(ErrorCode::WrongPassword)
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
                if let Err(e) = self.subscriber.subscribe(channel(&room)).await {
                    self.failed("subscribe", &e);
                }
            }
            ClusterRequest::Unsubscribe { room } => {
                self.lock_rooms().remove(&room);
                if let Err(e) = self.subscriber.unsubscribe(channel(&room)).await {
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
                    .evalsha_with_reload(&self.client, self.ips_key(), vec![ip.to_string()])
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
                let r: Result<i64, Error> = self.client.publish(channel(&room), text).await;
                match r {
                    Ok(_) => {
                        self.stats.published.fetch_add(1, Relaxed);
                    }
                    Err(e) => self.failed("publish", &e),
                }
            }
        }
    }

    fn ips_key(&self) -> String {
        format!("{IPS_PREFIX}{}", self.node)
    }

    async fn count_connection(&self, ip: std::net::IpAddr, limit: u32) -> ConnectionCount {
        let args = vec![
            ip.to_string(),
            limit.to_string(),
            NODE_PREFIX.to_owned(),
            NODES_KEY.to_owned(),
            self.node.clone(),
            NODE_TTL.as_millis().to_string(),
            IPS_PREFIX.to_owned(),
        ];
        let r: Result<i64, Error> = self
            .scripts
            .count_conn
            .evalsha_with_reload(&self.client, self.ips_key(), args)
            .await;
        match r {
            Ok(1) => ConnectionCount::Counted,
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

    /// Writes this node's per-address connection counts whole (the core's own figures are the truth).
    async fn rewrite_counts(&self, counts: Vec<(std::net::IpAddr, u32)>) -> Result<(), Error> {
        let mut args = vec![NODE_TTL.as_millis().to_string()];
        for (ip, n) in counts {
            args.extend([ip.to_string(), n.to_string()]);
        }
        let _: Value = self
            .scripts
            .set_counts
            .evalsha_with_reload(&self.client, self.ips_key(), args)
            .await?;
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
        let key = format!("{NODE_PREFIX}{}", self.node);
        let px = NODE_TTL.as_millis() as i64;
        let _: Value = self
            .client
            .set(key, "1", Some(Expiration::PX(px)), None, false)
            .await?;
        let _: Value = self.client.sadd(NODES_KEY, self.node.as_str()).await?;
        let _: Value = self.client.pexpire(self.ips_key(), px, None).await?;
        let rooms: Vec<String> = self.lock_rooms().iter().cloned().collect();
        let grace = self.grace.as_millis().to_string();
        let ttl = room_ttl(self.grace).as_millis().to_string();
        for room in rooms {
            let args = vec![
                grace.clone(),
                channel(&room),
                NODE_PREFIX.to_owned(),
                ttl.clone(),
            ];
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
                let key = format!("{NODE_PREFIX}{}", driver.node);
                let _: Result<i64, Error> = driver.client.del(key).await;
                // Its connections are about to close: they no longer count against anyone's cap.
                let _: Result<i64, Error> = driver.client.del(driver.ips_key()).await;
                let _: Result<i64, Error> =
                    driver.client.srem(NODES_KEY, driver.node.as_str()).await;
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
                let room = m.channel.strip_prefix(CHANNEL_PREFIX)?.to_owned();
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
    loop {
        ticker.tick().await;
        if inner.strong_count() == 0 {
            break;
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
}
