//! Configuration in three layers: command-line flags > `PEERCALL_*` environment variables > TOML file > defaults.
//!
//! Every setting is declared once, in the `settings!` table below. From that one table come: the clap flag
//! groups (one struct per group, so each subcommand shows only the flags it uses), the flat [`Options`] struct
//! that is also the serde shape of the TOML file, the parsing of `PEERCALL_<KEY>` variables, and the merge that
//! records where each value came from. A setting's TOML key is its flag name without the dashes in front
//! (`--relay-ip` ↔ `relay-ip`), its environment variable is `PEERCALL_` plus the key in upper case with `_` for `-`
//! (`PEERCALL_RELAY_IP`). Every value type implements `FromStr`, so a value means the same in all three layers.
//!
//! [`load`] is the pure entry point: flags, the environment as a list and a file reader in, a [`Resolved`]
//! configuration (defaults applied, cross-field rules checked) or one clear [`ConfigError`] out.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A value of one setting at one layer: `Option<T>` for single values, `Vec<T>` for repeatable ones.
pub trait Setting: Sized {
    /// Parses a `PEERCALL_*` variable; lists are comma-separated; an empty value means "not set".
    fn from_env(text: &str) -> Result<Self, String>;
    /// Converts a TOML value (a string, number or boolean; an array for lists).
    fn from_toml(value: toml::Value) -> Result<Self, String>;
    /// Whether this layer gives the setting a value.
    fn is_set(&self) -> bool;
}

fn scalar_text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expected a string, number or boolean, found {}",
            other.type_str()
        )),
    }
}

fn parse_text<T: FromStr>(text: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    text.parse::<T>().map_err(|e| format!("{text:?}: {e}"))
}

impl<T: FromStr> Setting for Option<T>
where
    T::Err: fmt::Display,
{
    fn from_env(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            Ok(None)
        } else {
            parse_text(text).map(Some)
        }
    }

    fn from_toml(value: toml::Value) -> Result<Self, String> {
        parse_text(&scalar_text(value)?).map(Some)
    }

    fn is_set(&self) -> bool {
        self.is_some()
    }
}

impl<T: FromStr> Setting for Vec<T>
where
    T::Err: fmt::Display,
{
    fn from_env(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_text)
            .collect()
    }

    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| parse_text(&scalar_text(v)?))
                .collect(),
            scalar => Ok(vec![parse_text(&scalar_text(scalar)?)?]),
        }
    }

    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

fn de_setting<'de, D: serde::Deserializer<'de>, S: Setting>(
    deserializer: D,
) -> Result<S, D::Error> {
    let value = toml::Value::deserialize(deserializer)?;
    S::from_toml(value).map_err(serde::de::Error::custom)
}

/// Where a setting's value came from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Layer {
    #[default]
    Default,
    File,
    Env,
    Flag,
}

/// For each setting (by field name), the layer that gave its value; and the config file read, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    pub layers: BTreeMap<&'static str, Layer>,
    pub file: Option<PathBuf>,
}

impl Provenance {
    pub fn layer(&self, field: &str) -> Layer {
        self.layers.get(field).copied().unwrap_or_default()
    }

    /// "flag --min-port", "PEERCALL_MIN_PORT", "config file /etc/peercall.toml" or "default".
    pub fn describe(&self, field: &str) -> String {
        match self.layer(field) {
            Layer::Flag => format!("flag --{}", key_of(field)),
            Layer::Env => format!("environment variable {}", env_var_of(field)),
            Layer::File => match &self.file {
                Some(path) => format!("config file {}", path.display()),
                None => "config file".to_owned(),
            },
            Layer::Default => "default".to_owned(),
        }
    }
}

/// The TOML key and flag name of a field: `relay_ip` → `relay-ip`.
pub fn key_of(field: &str) -> String {
    field.replace('_', "-")
}

/// The environment variable of a field: `relay_ip` → `PEERCALL_RELAY_IP`.
pub fn env_var_of(field: &str) -> String {
    format!("PEERCALL_{}", field.to_ascii_uppercase())
}

/// What a setting is when it is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredDefault {
    /// A value, written as it would be on the command line (`49152`, `0.0.0.0:8080`, `false`).
    Value(&'static str),
    /// A default that depends on other settings or on the machine, in words.
    Note(&'static str),
    /// No value: the feature is off or the list is empty.
    None,
}

const fn default_of(value: &[&'static str], note: &[&'static str]) -> DeclaredDefault {
    match (value, note) {
        ([v], _) => DeclaredDefault::Value(v),
        ([], [n]) => DeclaredDefault::Note(n),
        _ => DeclaredDefault::None,
    }
}

/// The declared default of each setting, by field name.
pub struct Defaults(&'static [(&'static str, DeclaredDefault)]);

impl Defaults {
    pub fn get(&self, field: &str) -> DeclaredDefault {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(DeclaredDefault::None, |(_, d)| *d)
    }
}

/// The `--help` line of a setting: its doc comment, joined, plus its declared default. Backticks are dropped:
/// the doc comment is also rustdoc text, where `scheme://host[:port]` needs them not to read as a link.
fn help_text(doc: &[&str], default: DeclaredDefault) -> String {
    let mut text = doc
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        .replace('`', "");
    match default {
        DeclaredDefault::Value(v) => text.push_str(&format!(" [default: {v}]")),
        DeclaredDefault::Note(n) => text.push_str(&format!(" [default: {n}]")),
        DeclaredDefault::None => {}
    }
    text
}

/// Parses a declared default. The table is ours, not input: a default that does not parse is a bug caught by
/// `every_declared_default_parses`.
fn parse_default<T: FromStr>(field: &str, text: &str) -> T
where
    T::Err: fmt::Display,
{
    match text.parse() {
        Ok(value) => value,
        Err(e) => panic!("the declared default of {field}, {text:?}, does not parse: {e}"),
    }
}

macro_rules! settings {
    ($(
        $(#[doc = $gdoc:literal])*
        group $Group:ident ($heading:literal) {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $wrap:ident<$inner:ty> [$($arg:tt)*]
                    $(= $default:literal)? $(, default $note:literal)?;
            )*
        }
    )*) => {
        $(
            $(#[doc = $gdoc])*
            #[derive(clap::Args, Debug, Default, Clone, PartialEq)]
            #[command(next_help_heading = $heading)]
            pub struct $Group {
                $(
                    $(#[doc = $doc])*
                    #[arg(long, help = help_text(&[$($doc),*], DEFAULTS.get(stringify!($field))), $($arg)*)]
                    pub $field: $wrap<$inner>,
                )*
            }

            impl $Group {
                /// The field names of this group.
                #[allow(dead_code)]
                pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

                /// Copies these flags into a flat option set.
                pub fn apply(self, options: &mut Options) {
                    $( options.$field = self.$field; )*
                }
            }
        )*

        /// Every setting at one layer; unset values are `None` or empty. Also the shape of the TOML file.
        #[derive(Deserialize, Debug, Default, Clone, PartialEq)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Options {
            $($(
                #[serde(deserialize_with = "de_setting")]
                pub $field: $wrap<$inner>,
            )*)*
        }

        /// The field names of every setting, in declaration order.
        pub const FIELDS: &[&str] = &[$($(stringify!($field)),*),*];

        /// The default of every setting, as declared in the table: the one place a default is written.
        pub const DEFAULTS: Defaults = Defaults(&[$($(
            (stringify!($field), default_of(&[$($default)?], &[$($note)?])),
        )*)*]);

        /// Typed defaults, parsed from the table's text (a unit test parses every one of them).
        #[allow(dead_code)]
        pub mod defaults {
            use super::*;
            $($($(
                #[doc = concat!("The declared default of `", stringify!($field), "`: `", $default, "`.")]
                pub fn $field() -> $inner {
                    parse_default(stringify!($field), $default)
                }
            )?)*)*
        }

        impl Options {
            /// Parses the `PEERCALL_*` variables among `vars`. Returns the options and the names of `PEERCALL_*`
            /// variables that are not settings (the caller warns about them).
            pub fn from_env<'a>(
                vars: impl IntoIterator<Item = (&'a str, &'a str)>,
            ) -> Result<(Options, Vec<String>), ConfigError> {
                let mut options = Options::default();
                let mut unknown = Vec::new();
                for (name, value) in vars {
                    let Some(rest) = name.strip_prefix("PEERCALL_") else { continue };
                    let field = rest.to_ascii_lowercase();
                    let env_error = |message: String| ConfigError::Env {
                        var: name.to_owned(),
                        message,
                    };
                    match field.as_str() {
                        $($(
                            stringify!($field) => {
                                options.$field = Setting::from_env(value).map_err(env_error)?;
                            }
                        )*)*
                        "config" => {}
                        _ => unknown.push(name.to_owned()),
                    }
                }
                Ok((options, unknown))
            }

            /// Lays `flags` over `env` over `file`, recording which layer gave each value. A list given at
            /// a higher layer replaces the lower one's list (it is not appended).
            pub fn merge(flags: Options, env: Options, file: Options) -> (Options, BTreeMap<&'static str, Layer>) {
                let mut layers = BTreeMap::new();
                let merged = Options {
                    $($(
                        $field: {
                            let (value, layer) = if flags.$field.is_set() {
                                (flags.$field, Layer::Flag)
                            } else if env.$field.is_set() {
                                (env.$field, Layer::Env)
                            } else if file.$field.is_set() {
                                (file.$field, Layer::File)
                            } else {
                                (Default::default(), Layer::Default)
                            };
                            layers.insert(stringify!($field), layer);
                            value
                        },
                    )*)*
                };
                (merged, layers)
            }
        }
    };
}

settings! {
    /// Flags of the HTTP(S) port.
    group HttpFlags ("Web, health and metrics (HTTP port)") {
        /// Address of the web client, the signaling WebSocket (/ws), /healthz and /metrics
        http: Option<SocketAddr> [value_name = "ADDR"] = "0.0.0.0:8080";
        /// PEM certificate chain: serve HTTPS (and TURNS, unless --turn-cert is given) with it
        tls_cert: Option<PathBuf> [value_name = "FILE"];
        /// PEM private key of --tls-cert
        tls_key: Option<PathBuf> [value_name = "FILE"];
        /// Serve HTTPS with a certificate made at start for localhost and this machine's addresses (its SHA-256
        /// fingerprint is printed). Browsers allow the camera only on HTTPS or localhost
        tls_self_signed: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Reverse proxy whose X-Forwarded-For / Forwarded header names the client, for every per-address limit
        /// and log line; repeatable
        trusted_proxy: Vec<IpNet> [value_name = "CIDR"];
        /// Separate plain-HTTP address serving /metrics and the detailed /healthz, e.g. 127.0.0.1:9464; without
        /// it they are served on --http to loopback clients and to --metrics-token only
        metrics_listen: Option<SocketAddr> [value_name = "ADDR"];
        /// Bearer token that unlocks /metrics and the detailed /healthz on --http (Authorization: Bearer TOKEN)
        metrics_token: Option<Secret> [value_name = "TOKEN"];
    }

    /// Automatic HTTPS: certificates from an ACME CA (RFC 8555), for HTTPS and TURNS.
    group AcmeFlags ("Automatic HTTPS (ACME)") {
        /// Domain name to get a certificate for from an ACME CA (Let's Encrypt by default) and serve HTTPS and
        /// TURNS with; repeatable. Its DNS must point at this machine, and the CA must reach port 443 (or 80, see
        /// --acme-challenge) from the internet
        domain: Vec<String> [value_name = "NAME"];
        /// Contact e-mail address of the ACME account (the CA writes about expiring certificates and problems)
        acme_email: Option<String> [value_name = "EMAIL"];
        /// ACME directory URL of the CA
        acme_directory: Option<String> [value_name = "URL"] = "https://acme-v02.api.letsencrypt.org/directory";
        /// Use Let's Encrypt's staging directory (untrusted certificates, generous rate limits: for trying out)
        acme_staging: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// How the CA checks that this machine answers for the domain: tls-alpn-01 (on the HTTPS port, 443 from
        /// the internet), http-01 (on the --http-redirect port, 80 from the internet), or auto (http-01 only when
        /// --http-redirect is on port 80 and --http is not on 443)
        acme_challenge: Option<AcmeChallenge> [value_name = "TYPE"] = "auto";
        /// PEM CA certificate(s) trusted for the HTTPS of --acme-directory besides the web's roots: for testing
        /// and private CAs
        acme_ca_file: Option<PathBuf> [value_name = "FILE"];
        /// Directory for state kept across restarts: the ACME account key and certificates (private keys 0600)
        state_dir: Option<PathBuf> [value_name = "DIR"],
            default "$STATE_DIRECTORY (systemd's StateDirectory=), else $XDG_DATA_HOME/peercall or ~/.local/share/peercall";
        /// Plain-HTTP address that redirects every request to HTTPS (and answers ACME HTTP-01), e.g. 0.0.0.0:80
        http_redirect: Option<SocketAddr> [value_name = "ADDR"],
            default "0.0.0.0:80 with --domain and --http left at its default (skipped with a warning when it cannot be bound), else none";
    }

    /// Flags of the signaling server.
    group SignalFlags ("Signaling") {
        /// Host name put in the STUN/TURN URLs handed to browsers
        public_host: Option<String> [value_name = "HOST"], default "the host the browser used";
        /// Most participants in one room (a full mesh)
        room_capacity: Option<usize> [value_name = "N"] = "6";
        /// Most rooms open at once
        max_rooms: Option<usize> [value_name = "N"] = "10000";
        /// Largest signaling message, in bytes
        max_message_bytes: Option<usize> [value_name = "BYTES"] = "65536";
        /// Signaling messages per second per connection
        max_messages_per_sec: Option<u32> [value_name = "N"] = "50";
        /// Signaling connections per client IP address
        max_connections_per_ip: Option<u32> [value_name = "N"] = "20";
        /// Every room needs a password, set by its first participant
        require_room_password: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Only admit joins carrying an HMAC-signed token made with this secret (for apps embedding peercall)
        join_token_secret: Option<Secret> [value_name = "SECRET"];
        /// Lifetime of the TURN credentials handed to browsers, in seconds
        credential_ttl: Option<u64> [value_name = "SECONDS"] = "21600";
        /// Seconds a dropped peer may take to reconnect and keep its place
        resume_grace: Option<u64> [value_name = "SECONDS"] = "20";
        /// Seconds between WebSocket pings
        ping_interval: Option<u64> [value_name = "SECONDS"] = "15";
        /// Seconds without an answer before a connection is closed
        ping_timeout: Option<u64> [value_name = "SECONDS"] = "30";
        /// Web origin (`scheme://host[:port]`) allowed to open /ws besides peercall's own pages and --public-host,
        /// or * for any; repeatable
        allowed_origin: Vec<AllowedOrigin> [value_name = "ORIGIN"];
        /// Joins per minute from one client address (IPv6: per /64); resuming a session is free; 0 = unlimited
        max_joins_per_min: Option<u32> [value_name = "N"] = "60";
        /// New rooms per minute from one client address (IPv6: per /64); 0 = unlimited
        max_new_rooms_per_min: Option<u32> [value_name = "N"] = "20";
        /// Failed joins (wrong password, bad token) one address may make before its joins back off (1 s,
        /// doubling); 0 = no back-off
        failed_joins_before_backoff: Option<u32> [value_name = "N"] = "5";
        /// Longest back-off after failed joins, in seconds
        max_join_backoff: Option<u64> [value_name = "SECONDS"] = "600";
        /// Failed password joins after which every join to that room waits 1 s before it is checked; 0 = never
        room_failed_joins_before_delay: Option<u32> [value_name = "N"] = "10";
        /// Redis shared by every signaling node of a cluster (redis://, rediss://; a Redis Cluster:
        /// redis-cluster://HOST:PORT?node=HOST:PORT; through Sentinel:
        /// redis-sentinel://HOST:PORT/?sentinelServiceName=NAME): rooms span the nodes; without it this node serves
        /// its rooms alone
        redis: Option<RedisUrl> [value_name = "URL"];
    }

    /// Where `peercall signal` sends browsers for TURN.
    group ExternalTurnFlags ("External TURN server (peercall signal)") {
        /// Shared secret (--auth-secret) of the TURN server browsers should use; without it they get no relay
        turn_secret: Option<Secret> [value_name = "SECRET"];
        /// UDP/TCP port of that TURN server, reached at --public-host or the host the browser used
        turn_port: Option<u16> [value_name = "PORT"] = "3478";
        /// TURNS (TLS) port of that TURN server
        turn_tls_port: Option<u16> [value_name = "PORT"];
        /// TURN server URL handed to browsers instead of the one on --public-host (turn:HOST:PORT or
        /// turns:HOST:PORT, ?transport=udp|tcp); repeatable, every one sharing --turn-secret
        turn_server: Vec<TurnUrl> [value_name = "URL"];
    }

    /// Flags of the STUN/TURN server.
    group TurnFlags ("STUN/TURN") {
        /// UDP and TCP address of the STUN/TURN server; repeatable
        listen: Vec<SocketAddr> [value_name = "ADDR"] = "0.0.0.0:3478";
        /// TURNS (TLS over TCP) address, used when a certificate is configured; repeatable
        tls_listen: Vec<SocketAddr> [value_name = "ADDR"], default "port 5349 on each --listen address";
        /// PEM certificate chain for TURNS
        turn_cert: Option<PathBuf> [value_name = "FILE"], default "--tls-cert";
        /// PEM private key of --turn-cert
        turn_key: Option<PathBuf> [value_name = "FILE"], default "--tls-key";
        /// Address relayed traffic leaves from; repeatable
        relay_ip: Vec<IpAddr> [value_name = "IP"],
            default "the --listen address, or this host's addresses when listening on 0.0.0.0";
        /// Address advertised for relays when the host sits behind a 1:1 NAT, as PUBLIC or PUBLIC/PRIVATE;
        /// repeatable
        external_ip: Vec<ExternalIp> [value_name = "PUBLIC[/PRIVATE]"];
        /// Authentication realm
        realm: Option<String> [value_name = "REALM"] = "peercall";
        /// Static long-term credential NAME:PASSWORD; repeatable
        user: Vec<UserPass> [value_name = "NAME:PASSWORD"];
        /// Shared secret of the "TURN REST API" credential scheme (coturn's use-auth-secret); repeatable, to rotate
        /// secrets
        auth_secret: Vec<Secret> [value_name = "SECRET"],
            default "under serve, a random secret shared with the signaling server";
        /// Allow relaying to this private or special range; repeatable
        allow_peer: Vec<IpNet> [value_name = "CIDR"];
        /// Also refuse relaying to this range; repeatable
        deny_peer: Vec<IpNet> [value_name = "CIDR"];
        /// Allow relaying to loopback addresses (tests and single-host setups)
        allow_loopback_peers: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Lowest relay port
        min_port: Option<u16> [value_name = "PORT"] = "49152";
        /// Highest relay port
        max_port: Option<u16> [value_name = "PORT"] = "65535";
        /// Allocations one user may hold at once
        user_quota: Option<u32> [value_name = "N"] = "32";
        /// Allocations (and EVEN-PORT reservations) one client address may hold at once, whatever the username
        /// (IPv6 counted by /64); sized for a household or a carrier NAT
        client_quota: Option<u32> [value_name = "N"] = "256";
        /// Allocations the whole server may hold at once
        total_quota: Option<u32> [value_name = "N"] = "20000";
        /// Permissions (peer IP addresses) one allocation may hold; more get 508
        max_permissions: Option<u32> [value_name = "N"] = "32";
        /// Channel bindings one allocation may hold; more get 508
        max_channels: Option<u32> [value_name = "N"] = "32";
        /// Seconds a new TCP/TLS connection has to send its first complete STUN message (TLS handshake included)
        tcp_first_message_timeout: Option<u64> [value_name = "SECONDS"] = "10";
        /// Seconds a TCP/TLS connection without an allocation may stay silent before it is closed
        tcp_idle_timeout: Option<u64> [value_name = "SECONDS"] = "60";
        /// TCP/TLS connections one client address may hold open (IPv6 counted by /64)
        tcp_per_address: Option<u32> [value_name = "N"] = "64";
        /// TCP/TLS connections the server holds open in total; more are closed at accept
        tcp_connections: Option<u32> [value_name = "N"] = "4096";
        /// Longest allocation lifetime a client may ask for, in seconds
        max_lifetime: Option<u64> [value_name = "SECONDS"] = "3600";
        /// Unauthenticated requests per second accepted from one source address
        unauth_rate: Option<u32> [value_name = "N"] = "100";
        /// Threads relaying UDP, each with its own SO_REUSEPORT sockets (coturn's --relay-threads); 0 = one per CPU
        relay_threads: Option<u32> [value_name = "N"] = "0";
    }

    /// Flags of the native peer.
    group JoinFlags ("Native peer (peercall join)") {
        /// Display name in the room
        name: Option<String> [value_name = "NAME"] = "peercall-bot";
        /// Room password, when the room has one
        password: Option<Secret> [value_name = "PASSWORD"];
        /// VP8 IVF file to send, looped; repeatable: encodings of one video at different bitrates, of which each
        /// peer gets the highest its bandwidth estimate allows
        video: Vec<PathBuf> [value_name = "FILE.ivf"], default "the embedded test clip";
        /// Ogg/Opus file to send, looped
        audio: Option<PathBuf> [value_name = "FILE.ogg"], default "the embedded test clip";
        /// Send no video
        no_video: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Send no audio
        no_audio: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Directory to record every remote participant's video (IVF) and audio (Ogg/Opus) into
        record: Option<PathBuf> [value_name = "DIR"];
        /// Leave after this many seconds
        duration: Option<u64> [value_name = "SECONDS"], default "until Ctrl-C";
        /// Fail unless this many peers connected with media both ways (without --duration: leave as soon as
        /// they did, fail after 30 s)
        expect_peers: Option<usize> [value_name = "N"];
        /// Chat message to send to everyone once connected
        say: Option<String> [value_name = "TEXT"];
        /// Use relay (TURN) candidates only, like the browser's &relay=1
        relay: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Reach TURN servers only over TCP and TLS, not UDP (without it, relays are gathered over every
        /// transport the server offers, as a browser does)
        turn_tcp: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// PEM certificates to trust besides the public web roots, for a wss:// or turns: server with a private
        /// CA or a self-signed certificate
        ca_file: Option<PathBuf> [value_name = "FILE.pem"];
        /// Machine-readable output: one JSON object per line
        json: Option<bool> [value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true"] = "false";
        /// Seconds between the status lines of each peer
        stats_interval: Option<u64> [value_name = "SECONDS"] = "5";
    }

    /// Logging flags.
    group LogFlags ("Logging") {
        /// Log level or tracing filter, e.g. debug or info,peercall_turn=trace (RUST_LOG is used when this is not
        /// given as a flag)
        log_level: Option<String> [value_name = "FILTER"] = "info";
        /// Log format: human or json
        log_format: Option<LogFormat> [value_name = "FORMAT"] = "human";
    }
}

/// `--acme-challenge`: which ACME challenge proves control of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01, unless only port 80 can be reached (see [`Resolved::acme_challenge_in_use`]).
    #[default]
    Auto,
    /// TLS-ALPN-01 (RFC 8737) on the HTTPS port.
    TlsAlpn01,
    /// HTTP-01 on the `--http-redirect` port.
    Http01,
}

impl FromStr for AcmeChallenge {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(AcmeChallenge::Auto),
            "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
            "http-01" => Ok(AcmeChallenge::Http01),
            _ => Err("expected auto, tls-alpn-01 or http-01".to_owned()),
        }
    }
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcmeChallenge::Auto => "auto",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        })
    }
}

impl Serialize for AcmeChallenge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Let's Encrypt's staging directory (`--acme-staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Checks a `--domain` value: a DNS name an ACME CA can validate with TLS-ALPN-01 or HTTP-01 (no wildcard, no
/// IP address, no scheme or port). Returns it in lower case.
fn check_domain(name: &str) -> Result<String, String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.starts_with("*.") {
        return Err(format!(
            "{name:?}: wildcard names need the DNS-01 challenge, which peercall does not do; give each name"
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address; ACME certificates are for domain names"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} is not a domain name (letters, digits, '-' and '.', no scheme, path or port)"
        ));
    }
    Ok(name)
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected human or json".to_owned()),
        }
    }
}

/// A secret: never printed (Debug and Serialize show `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a secret cannot be empty".to_owned());
        }
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `--user NAME:PASSWORD`; the password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    pub name: String,
    pub password: String,
}

impl FromStr for UserPass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => Ok(UserPass {
                name: name.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err("expected NAME:PASSWORD".to_owned()),
        }
    }
}

impl fmt::Debug for UserPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:<redacted>", self.name)
    }
}

impl Serialize for UserPass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}:<redacted>", self.name))
    }
}

/// `--redis URL`: `redis://` or `rediss://`, `redis-cluster://` / `rediss-cluster://` for a Redis Cluster (more
/// seed nodes with `?node=HOST:PORT&node=...`), or `redis-sentinel://` / `rediss-sentinel://` for a master found
/// through Sentinel. Its password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The schemes of the client crate (fred), Redis's spelling only.
        const SCHEMES: [&str; 6] = [
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
            "redis-sentinel://",
            "rediss-sentinel://",
        ];
        if !SCHEMES.iter().any(|p| s.starts_with(p)) || s.len() > 2048 {
            return Err(
                "expected redis://[user:password@]host[:port][/db], rediss://..., \
                 redis-cluster://host:port[?node=host:port...] or \
                 redis-sentinel://host[:port]/?sentinelServiceName=NAME"
                    .to_owned(),
            );
        }
        Ok(RedisUrl(s.to_owned()))
    }
}

impl RedisUrl {
    /// The URL with its password replaced.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        match (s.find("://"), s.rfind('@')) {
            (Some(i), Some(at)) if at > i => format!("{}://<redacted>@{}", &s[..i], &s[at + 1..]),
            _ => s.clone(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// `--turn-server URL`: `turn:HOST[:PORT][?transport=udp|tcp]` or `turns:HOST[:PORT][?transport=tcp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnUrl(pub String);

impl FromStr for TurnUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || "expected turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]".to_owned();
        let rest = s
            .strip_prefix("turn:")
            .or_else(|| s.strip_prefix("turns:"))
            .ok_or_else(bad)?;
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !matches!(query, "" | "transport=udp" | "transport=tcp")
            || peercall_signal::ice::normalize_host(hostport).is_none()
        {
            return Err(bad());
        }
        Ok(TurnUrl(s.to_owned()))
    }
}

/// `--allowed-origin ORIGIN|*` is the signaling crate's own type.
pub use peercall_signal::AllowedOrigin;
/// `--external-ip PUBLIC[/PRIVATE]` is the TURN crate's own type; printed as text by `--print-config`.
pub use peercall_turn::ExternalIp;

fn serialize_as_text<S: serde::Serializer, T: fmt::Display>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// A configuration problem found at start; its Display is one line naming the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}{}{}: {message}",
        line.map(|l| format!(", line {l}")).unwrap_or_default(),
        key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
    File {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid {key} (from {from}): {message}")]
    Invalid {
        key: String,
        from: String,
        message: String,
    },
}

/// Parses the text of a TOML config file. Errors name the file, the line and the key.
pub fn parse_file(text: &str, path: &Path) -> Result<Options, ConfigError> {
    toml::from_str::<Options>(text).map_err(|e| {
        let mut message = e.message().trim().to_owned();
        let (line, mut key) = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                let line_text = text[line_start..].lines().next().unwrap_or("");
                let key = line_text
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                    .filter(|k| !k.is_empty() && !k.starts_with('['));
                (Some(line_no), key)
            }
            None => (None, None),
        };
        // serde's "unknown field `x`, expected one of <every key>" is long: keep the first part, suggest a key.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let unknown = rest.split('`').next().unwrap_or("").to_owned();
            message = format!("unknown key `{unknown}`");
            if let Some(near) = nearest_key(&unknown) {
                message.push_str(&format!(" (did you mean `{near}`?)"));
            }
            message.push_str("; every key is listed in docs/configuration.md");
            key = Some(unknown);
        }
        ConfigError::File {
            path: path.to_owned(),
            line,
            key,
            message,
        }
    })
}

/// The known key closest to `unknown` by edit distance, if it is close.
fn nearest_key(unknown: &str) -> Option<String> {
    // Optimal string alignment distance: a swap of two neighbours (`relam` for `realm`) counts as one edit.
    fn distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[i - 2][j - 2] + 1);
                }
                d[i][j] = v;
            }
        }
        d[a.len()][b.len()]
    }
    let normalized = unknown.replace('_', "-").to_ascii_lowercase();
    FIELDS
        .iter()
        .map(|f| key_of(f))
        .map(|k| (distance(&normalized, &k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// HTTPS source for the web/signaling port.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpTls {
    Off,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    SelfSigned,
    /// A certificate for `--domain` from an ACME CA.
    Acme,
}

/// The effective configuration: every default applied, every cross-field rule checked.
/// Serializes as TOML for `--print-config` (secrets redacted).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Resolved {
    pub http: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_self_signed: bool,
    pub trusted_proxy: Vec<IpNet>,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_token: Option<Secret>,
    pub domain: Vec<String>,
    pub acme_email: Option<String>,
    pub acme_directory: String,
    pub acme_staging: bool,
    pub acme_challenge: AcmeChallenge,
    pub acme_ca_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub http_redirect: Option<SocketAddr>,
    pub public_host: Option<String>,
    pub room_capacity: usize,
    pub max_rooms: usize,
    pub max_message_bytes: usize,
    pub max_messages_per_sec: u32,
    pub max_connections_per_ip: u32,
    pub require_room_password: bool,
    pub join_token_secret: Option<Secret>,
    pub credential_ttl: u64,
    pub resume_grace: u64,
    pub ping_interval: u64,
    pub ping_timeout: u64,
    #[serde(serialize_with = "serialize_as_text")]
    pub allowed_origin: Vec<AllowedOrigin>,
    pub max_joins_per_min: u32,
    pub max_new_rooms_per_min: u32,
    pub failed_joins_before_backoff: u32,
    pub max_join_backoff: u64,
    pub room_failed_joins_before_delay: u32,
    pub redis: Option<RedisUrl>,
    pub turn_secret: Option<Secret>,
    pub turn_port: u16,
    pub turn_tls_port: Option<u16>,
    pub turn_server: Vec<TurnUrl>,
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub turn_cert: Option<PathBuf>,
    pub turn_key: Option<PathBuf>,
    pub relay_ip: Vec<IpAddr>,
    #[serde(serialize_with = "serialize_as_text")]
    pub external_ip: Vec<ExternalIp>,
    pub realm: String,
    pub user: Vec<UserPass>,
    pub auth_secret: Vec<Secret>,
    pub allow_peer: Vec<IpNet>,
    pub deny_peer: Vec<IpNet>,
    pub allow_loopback_peers: bool,
    pub min_port: u16,
    pub max_port: u16,
    pub user_quota: u32,
    pub client_quota: u32,
    pub total_quota: u32,
    pub max_permissions: u32,
    pub max_channels: u32,
    pub tcp_first_message_timeout: u64,
    pub tcp_idle_timeout: u64,
    pub tcp_per_address: u32,
    pub tcp_connections: u32,
    pub max_lifetime: u64,
    pub unauth_rate: u32,
    pub relay_threads: u32,
    pub name: String,
    pub password: Option<Secret>,
    pub video: Vec<PathBuf>,
    pub audio: Option<PathBuf>,
    pub no_video: bool,
    pub no_audio: bool,
    pub record: Option<PathBuf>,
    pub duration: Option<u64>,
    pub expect_peers: Option<usize>,
    pub say: Option<String>,
    pub relay: bool,
    pub turn_tcp: bool,
    pub ca_file: Option<PathBuf>,
    pub json: bool,
    pub stats_interval: u64,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Where each value came from.
    #[serde(skip)]
    pub provenance: Provenance,
    /// Things worth telling the operator that do not stop the start (logged once logging is up).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The TURNS port put on each `--listen` address when `--tls-listen` is not given (the table's note for
/// `tls_listen` says so in words).
pub const DEFAULT_TURNS_PORT: u16 = 5349;

impl Resolved {
    /// Applies defaults to merged options and checks the rules that involve several settings.
    pub fn new(o: Options, provenance: Provenance) -> Result<Resolved, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            key: key_of(field),
            from: provenance.describe(field),
            message,
        };
        let tls_self_signed = o.tls_self_signed.unwrap_or_else(defaults::tls_self_signed);
        match (&o.tls_cert, &o.tls_key) {
            (Some(_), None) => {
                return Err(invalid("tls_key", "--tls-cert needs --tls-key too".into()));
            }
            (None, Some(_)) => {
                return Err(invalid("tls_cert", "--tls-key needs --tls-cert too".into()));
            }
            (Some(_), Some(_)) if tls_self_signed => {
                return Err(invalid(
                    "tls_self_signed",
                    "choose either --tls-self-signed or --tls-cert/--tls-key".into(),
                ));
            }
            _ => {}
        }
        let mut domain = Vec::new();
        for name in &o.domain {
            let name = check_domain(name).map_err(|m| invalid("domain", m))?;
            if !domain.contains(&name) {
                domain.push(name);
            }
        }
        if !domain.is_empty() && (o.tls_cert.is_some() || tls_self_signed) {
            return Err(invalid(
                "domain",
                "choose either --domain (a certificate from an ACME CA) or --tls-cert/--tls-key/--tls-self-signed"
                    .into(),
            ));
        }
        if let Some(email) = &o.acme_email
            && (email.contains([' ', ',', '<', '>'])
                || email.split('@').filter(|p| !p.is_empty()).count() != 2)
        {
            return Err(invalid(
                "acme_email",
                format!("{email:?} is not an e-mail address"),
            ));
        }
        let acme_staging = o.acme_staging.unwrap_or_else(defaults::acme_staging);
        let acme_directory = match (o.acme_directory, acme_staging) {
            (Some(_), true) => {
                return Err(invalid(
                    "acme_staging",
                    "choose either --acme-staging or --acme-directory".into(),
                ));
            }
            (Some(url), false) => url,
            (None, true) => LETS_ENCRYPT_STAGING.to_owned(),
            (None, false) => defaults::acme_directory(),
        };
        if !acme_directory.starts_with("https://") || acme_directory.len() <= "https://".len() {
            return Err(invalid(
                "acme_directory",
                format!("{acme_directory:?}: an ACME directory is an https:// URL (RFC 8555)"),
            ));
        }
        let acme_challenge = o.acme_challenge.unwrap_or_else(defaults::acme_challenge);
        // The one-command setup: `--domain` alone listens on 443, and on 80 to redirect to it.
        let http = match o.http {
            Some(http) => http,
            None if !domain.is_empty() => SocketAddr::from(([0, 0, 0, 0], 443)),
            None => defaults::http(),
        };
        let http_redirect = match o.http_redirect {
            Some(addr) => Some(addr),
            None if !domain.is_empty() && o.http.is_none() => {
                Some(SocketAddr::from(([0, 0, 0, 0], 80)))
            }
            None => None,
        };
        if let Some(r) = http_redirect
            && r.port() != 0
            && r == http
        {
            return Err(invalid(
                "http_redirect",
                format!("{r} is the --http address; choose another port"),
            ));
        }
        if o.http_redirect.is_some()
            && domain.is_empty()
            && o.tls_cert.is_none()
            && !tls_self_signed
        {
            return Err(invalid(
                "http_redirect",
                "redirects go to HTTPS, and --http serves plain HTTP: give --domain, --tls-cert/--tls-key or --tls-self-signed"
                    .into(),
            ));
        }
        if acme_challenge == AcmeChallenge::Http01 && !domain.is_empty() && http_redirect.is_none()
        {
            return Err(invalid(
                "acme_challenge",
                "http-01 is answered on the --http-redirect port: give --http-redirect (port 80 from the internet)"
                    .into(),
            ));
        }
        let (turn_cert, turn_key) = match (o.turn_cert, o.turn_key) {
            (Some(c), Some(k)) => (Some(c), Some(k)),
            (Some(_), None) => {
                return Err(invalid(
                    "turn_key",
                    "--turn-cert needs --turn-key too".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "turn_cert",
                    "--turn-key needs --turn-cert too".into(),
                ));
            }
            (None, None) => (o.tls_cert.clone(), o.tls_key.clone()),
        };
        let min_port = o.min_port.unwrap_or_else(defaults::min_port);
        let max_port = o.max_port.unwrap_or_else(defaults::max_port);
        if min_port == 0 || min_port > max_port {
            let field = if provenance.layer("min_port") >= provenance.layer("max_port") {
                "min_port"
            } else {
                "max_port"
            };
            return Err(invalid(
                field,
                format!(
                    "the relay port range {min_port}-{max_port} is empty (need 1 <= min-port <= max-port)"
                ),
            ));
        }
        let realm = o.realm.unwrap_or_else(defaults::realm);
        if realm.is_empty()
            || realm.len() > 127
            || realm.chars().any(|c| c.is_control() || c == '"')
        {
            return Err(invalid(
                "realm",
                "must be 1 to 127 printable characters without quotes".into(),
            ));
        }
        if let Some(host) = &o.public_host
            && (host.is_empty() || host.contains(['/', ' ', '?', '#', '@']))
        {
            return Err(invalid(
                "public_host",
                format!("{host:?} is not a host name or IP address (no scheme, path or port)"),
            ));
        }
        let at_least = |field: &str, value: u64, min: u64, unit: &str| {
            if value < min {
                Err(invalid(
                    field,
                    format!("{value} is too small: the minimum is {min}{unit}"),
                ))
            } else {
                Ok(())
            }
        };
        let room_capacity = o.room_capacity.unwrap_or_else(defaults::room_capacity);
        at_least("room_capacity", room_capacity as u64, 2, "")?;
        let max_rooms = o.max_rooms.unwrap_or_else(defaults::max_rooms);
        at_least("max_rooms", max_rooms as u64, 1, "")?;
        let max_message_bytes = o
            .max_message_bytes
            .unwrap_or_else(defaults::max_message_bytes);
        at_least(
            "max_message_bytes",
            max_message_bytes as u64,
            1024,
            " bytes",
        )?;
        let max_messages_per_sec = o
            .max_messages_per_sec
            .unwrap_or_else(defaults::max_messages_per_sec);
        at_least("max_messages_per_sec", max_messages_per_sec.into(), 1, "")?;
        let max_connections_per_ip = o
            .max_connections_per_ip
            .unwrap_or_else(defaults::max_connections_per_ip);
        at_least(
            "max_connections_per_ip",
            max_connections_per_ip.into(),
            1,
            "",
        )?;
        let credential_ttl = o.credential_ttl.unwrap_or_else(defaults::credential_ttl);
        at_least("credential_ttl", credential_ttl, 60, " seconds")?;
        let resume_grace = o.resume_grace.unwrap_or_else(defaults::resume_grace);
        let ping_interval = o.ping_interval.unwrap_or_else(defaults::ping_interval);
        at_least("ping_interval", ping_interval, 1, " second")?;
        let ping_timeout = o.ping_timeout.unwrap_or_else(defaults::ping_timeout);
        if ping_timeout <= ping_interval {
            return Err(invalid(
                "ping_timeout",
                format!("{ping_timeout} s must be longer than --ping-interval ({ping_interval} s)"),
            ));
        }
        let max_join_backoff = o
            .max_join_backoff
            .unwrap_or_else(defaults::max_join_backoff);
        at_least("max_join_backoff", max_join_backoff, 1, " second")?;
        if o.metrics_token.as_ref().is_some_and(|t| t.0.len() < 16) {
            return Err(invalid(
                "metrics_token",
                "use at least 16 characters (a long random token)".into(),
            ));
        }
        if let (Some(m), Some(h)) = (o.metrics_listen, o.http)
            && m.port() != 0
            && m == h
        {
            return Err(invalid(
                "metrics_listen",
                format!("{m} is the --http address; choose another port"),
            ));
        }
        let user_quota = o.user_quota.unwrap_or_else(defaults::user_quota);
        at_least("user_quota", user_quota.into(), 1, "")?;
        let client_quota = o.client_quota.unwrap_or_else(defaults::client_quota);
        at_least("client_quota", client_quota.into(), 1, "")?;
        let total_quota = o.total_quota.unwrap_or_else(defaults::total_quota);
        at_least("total_quota", total_quota.into(), 1, "")?;
        let max_permissions = o.max_permissions.unwrap_or_else(defaults::max_permissions);
        at_least("max_permissions", max_permissions.into(), 1, "")?;
        let max_channels = o.max_channels.unwrap_or_else(defaults::max_channels);
        at_least("max_channels", max_channels.into(), 1, "")?;
        let tcp_first_message_timeout = o
            .tcp_first_message_timeout
            .unwrap_or_else(defaults::tcp_first_message_timeout);
        at_least(
            "tcp_first_message_timeout",
            tcp_first_message_timeout,
            1,
            " second",
        )?;
        let tcp_idle_timeout = o
            .tcp_idle_timeout
            .unwrap_or_else(defaults::tcp_idle_timeout);
        at_least("tcp_idle_timeout", tcp_idle_timeout, 1, " second")?;
        let tcp_per_address = o.tcp_per_address.unwrap_or_else(defaults::tcp_per_address);
        at_least("tcp_per_address", tcp_per_address.into(), 1, "")?;
        let tcp_connections = o.tcp_connections.unwrap_or_else(defaults::tcp_connections);
        at_least("tcp_connections", tcp_connections.into(), 1, "")?;
        let max_lifetime = o.max_lifetime.unwrap_or_else(defaults::max_lifetime);
        at_least(
            "max_lifetime",
            max_lifetime,
            600,
            " seconds (the RFC 8656 default lifetime)",
        )?;
        let unauth_rate = o.unauth_rate.unwrap_or_else(defaults::unauth_rate);
        at_least("unauth_rate", unauth_rate.into(), 1, "")?;
        let relay_threads = o.relay_threads.unwrap_or_else(defaults::relay_threads);
        if relay_threads > 64 {
            return Err(invalid(
                "relay_threads",
                format!("{relay_threads} is more than 64"),
            ));
        }
        let stats_interval = o.stats_interval.unwrap_or_else(defaults::stats_interval);
        at_least("stats_interval", stats_interval, 1, " second")?;
        if let Some(d) = o.duration {
            at_least("duration", d, 1, " second")?;
        }
        let name = o.name.unwrap_or_else(defaults::name).trim().to_string();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "a name is 1-64 characters, without control characters".into(),
            ));
        }
        let log_level = o.log_level.unwrap_or_else(defaults::log_level);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(invalid(
                "log_level",
                format!("{log_level:?} is not a level or tracing filter: {e}"),
            ));
        }
        let listen = if o.listen.is_empty() {
            vec![defaults::listen()]
        } else {
            o.listen
        };
        let tls_listen = if o.tls_listen.is_empty() {
            let mut v: Vec<SocketAddr> = listen
                .iter()
                .map(|a| SocketAddr::new(a.ip(), DEFAULT_TURNS_PORT))
                .collect();
            v.dedup();
            v
        } else {
            o.tls_listen
        };
        let mut warnings = Vec::new();
        if o.auth_secret.iter().any(|s| s.0.len() < 16) {
            warnings.push("an --auth-secret shorter than 16 characters is easy to guess; use a long random one".into());
        }
        if o.join_token_secret.as_ref().is_some_and(|s| s.0.len() < 16) {
            warnings.push("--join-token-secret shorter than 16 characters is easy to guess".into());
        }
        Ok(Resolved {
            http,
            tls_cert: o.tls_cert,
            tls_key: o.tls_key,
            tls_self_signed,
            trusted_proxy: o.trusted_proxy,
            metrics_listen: o.metrics_listen,
            metrics_token: o.metrics_token,
            domain,
            acme_email: o.acme_email,
            acme_directory,
            acme_staging,
            acme_challenge,
            acme_ca_file: o.acme_ca_file,
            state_dir: o.state_dir,
            http_redirect,
            public_host: o.public_host,
            room_capacity,
            max_rooms,
            max_message_bytes,
            max_messages_per_sec,
            max_connections_per_ip,
            require_room_password: o
                .require_room_password
                .unwrap_or_else(defaults::require_room_password),
            join_token_secret: o.join_token_secret,
            credential_ttl,
            resume_grace,
            ping_interval,
            ping_timeout,
            allowed_origin: o.allowed_origin,
            max_joins_per_min: o
                .max_joins_per_min
                .unwrap_or_else(defaults::max_joins_per_min),
            max_new_rooms_per_min: o
                .max_new_rooms_per_min
                .unwrap_or_else(defaults::max_new_rooms_per_min),
            failed_joins_before_backoff: o
                .failed_joins_before_backoff
                .unwrap_or_else(defaults::failed_joins_before_backoff),
            max_join_backoff,
            room_failed_joins_before_delay: o
                .room_failed_joins_before_delay
                .unwrap_or_else(defaults::room_failed_joins_before_delay),
            redis: o.redis,
            turn_secret: o.turn_secret,
            turn_port: o.turn_port.unwrap_or_else(defaults::turn_port),
            turn_tls_port: o.turn_tls_port,
            turn_server: o.turn_server,
            listen,
            tls_listen,
            turn_cert,
            turn_key,
            relay_ip: o.relay_ip,
            external_ip: o.external_ip,
            realm,
            user: o.user,
            auth_secret: o.auth_secret,
            allow_peer: o.allow_peer,
            deny_peer: o.deny_peer,
            allow_loopback_peers: o
                .allow_loopback_peers
                .unwrap_or_else(defaults::allow_loopback_peers),
            min_port,
            max_port,
            user_quota,
            client_quota,
            total_quota,
            max_permissions,
            max_channels,
            tcp_first_message_timeout,
            tcp_idle_timeout,
            tcp_per_address,
            tcp_connections,
            max_lifetime,
            unauth_rate,
            relay_threads,
            name,
            password: o.password,
            video: o.video,
            audio: o.audio,
            no_video: o.no_video.unwrap_or_else(defaults::no_video),
            no_audio: o.no_audio.unwrap_or_else(defaults::no_audio),
            record: o.record,
            duration: o.duration,
            expect_peers: o.expect_peers,
            say: o.say,
            relay: o.relay.unwrap_or_else(defaults::relay),
            turn_tcp: o.turn_tcp.unwrap_or_else(defaults::turn_tcp),
            ca_file: o.ca_file,
            json: o.json.unwrap_or_else(defaults::json),
            stats_interval,
            log_level,
            log_format: o.log_format.unwrap_or_else(defaults::log_format),
            provenance,
            warnings,
        })
    }

    /// The ACME challenge peercall answers: `--acme-challenge`, with `auto` made concrete.
    pub fn acme_challenge_in_use(&self) -> AcmeChallenge {
        match (self.acme_challenge, self.http_redirect) {
            (AcmeChallenge::Auto, Some(redirect))
                if redirect.port() == 80 && self.http.port() != 443 =>
            {
                AcmeChallenge::Http01
            }
            (AcmeChallenge::Auto, _) => AcmeChallenge::TlsAlpn01,
            (chosen, _) => chosen,
        }
    }

    pub fn http_tls(&self) -> HttpTls {
        if !self.domain.is_empty() {
            return HttpTls::Acme;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => HttpTls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ if self.tls_self_signed => HttpTls::SelfSigned,
            _ => HttpTls::Off,
        }
    }

    /// The effective configuration as TOML, each line followed by where its value came from.
    pub fn to_annotated_toml(&self) -> String {
        let text = toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"));
        let mut out = String::new();
        for line in text.lines() {
            let field = line
                .split_once(" = ")
                .map(|(k, _)| k.trim().replace('-', "_"));
            match field {
                Some(field) if FIELDS.contains(&field.as_str()) => {
                    out.push_str(&format!(
                        "{line:<50} # {}\n",
                        self.provenance.describe(&field)
                    ));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Reads the configuration from all three layers.
///
/// `flags` are the options given on the command line, `config_flag` the `--config` flag, `env` the process
/// environment (only `PEERCALL_*` entries are looked at) and `read_file` reads the config file. Pure apart from
/// `read_file`, so every rule is unit-tested.
pub fn load(
    flags: Options,
    config_flag: Option<PathBuf>,
    env: &[(String, String)],
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Resolved, ConfigError> {
    let (env_options, unknown_env) =
        Options::from_env(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let config_path = config_flag.or_else(|| {
        env.iter()
            .find(|(k, v)| k == "PEERCALL_CONFIG" && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    });
    let file_options = match &config_path {
        Some(path) => {
            let text = read_file(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            parse_file(&text, path)?
        }
        None => Options::default(),
    };
    let (merged, layers) = Options::merge(flags, env_options, file_options);
    let provenance = Provenance {
        layers,
        file: config_path,
    };
    let mut resolved = Resolved::new(merged, provenance)?;
    for name in unknown_env {
        resolved
            .warnings
            .push(format!("ignoring environment variable {name}: not a peercall setting (see docs/configuration.md)"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_urls_take_a_server_a_cluster_or_a_sentinel() {
        for ok in [
            "redis://127.0.0.1:6379",
            "rediss://u:p@h/1",
            "redis-cluster://127.0.0.1:7000",
            "rediss-cluster://u:p@h:7000?node=h2:7001&node=h3:7002",
            "redis-sentinel://127.0.0.1:26379/?sentinelServiceName=m",
        ] {
            assert!(ok.parse::<RedisUrl>().is_ok(), "{ok}");
        }
        let e = "http://h".parse::<RedisUrl>().expect_err("http");
        assert!(e.contains("redis-cluster://"), "lists the schemes: {e}");
        assert_eq!(
            "redis-cluster://u:secret@h:7000"
                .parse::<RedisUrl>()
                .map(|u| u.redacted()),
            Ok("redis-cluster://<redacted>@h:7000".to_owned())
        );
    }

    use super::*;
    use clap::Parser;

    /// Every flag group, as `peercall serve` plus `peercall signal` see them.
    #[derive(Parser)]
    struct AllFlags {
        #[command(flatten)]
        http: HttpFlags,
        #[command(flatten)]
        acme: AcmeFlags,
        #[command(flatten)]
        signal: SignalFlags,
        #[command(flatten)]
        external: ExternalTurnFlags,
        #[command(flatten)]
        turn: TurnFlags,
        #[command(flatten)]
        log: LogFlags,
        #[command(flatten)]
        join: JoinFlags,
    }

    fn flags(args: &[&str]) -> Options {
        let all = AllFlags::try_parse_from(std::iter::once("peercall").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("test flags {args:?} parse: {e}"));
        let mut o = Options::default();
        all.http.apply(&mut o);
        all.acme.apply(&mut o);
        all.signal.apply(&mut o);
        all.external.apply(&mut o);
        all.turn.apply(&mut o);
        all.log.apply(&mut o);
        all.join.apply(&mut o);
        o
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_file(path: &Path) -> std::io::Result<String> {
        panic!("no file should be read, asked for {}", path.display())
    }

    fn file(text: &'static str) -> impl Fn(&Path) -> std::io::Result<String> {
        move |_| Ok(text.to_owned())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let r = load(Options::default(), None, &[], &no_file).expect("defaults are valid");
        assert_eq!(r.http.to_string(), "0.0.0.0:8080");
        assert_eq!(
            r.listen,
            vec!["0.0.0.0:3478".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(
            r.tls_listen,
            vec!["0.0.0.0:5349".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(r.http_tls(), HttpTls::Off);
        assert!(!r.allow_loopback_peers);
        assert_eq!((r.min_port, r.max_port), (49152, 65535));
        assert_eq!(r.realm, "peercall");
        assert_eq!(r.room_capacity, 6);
        assert_eq!(r.max_message_bytes, 65536);
        assert_eq!(r.credential_ttl, 21600);
        assert_eq!(r.log_level, "info");
        assert_eq!(r.log_format, LogFormat::Human);
        assert!(r.auth_secret.is_empty() && r.user.is_empty());
        assert!(r.provenance.layers.values().all(|l| *l == Layer::Default));
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let text =
            "http = \"127.0.0.1:9001\"\nrealm = \"file\"\nroom-capacity = 3\nmax-rooms = 7\n";
        let r = load(
            flags(&["--http", "127.0.0.1:9003"]),
            Some("site.toml".into()),
            &env(&[
                ("PEERCALL_HTTP", "127.0.0.1:9002"),
                ("PEERCALL_REALM", "env"),
                ("PEERCALL_MAX_ROOMS", ""),
            ]),
            &file(text),
        )
        .expect("valid");
        assert_eq!(
            r.http,
            "127.0.0.1:9003".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(r.realm, "env");
        assert_eq!(r.room_capacity, 3);
        // An empty variable is "not set": the file's value stays.
        assert_eq!(r.max_rooms, 7);
        assert_eq!(r.max_message_bytes, 65536);
        assert_eq!(r.provenance.layer("http"), Layer::Flag);
        assert_eq!(r.provenance.layer("realm"), Layer::Env);
        assert_eq!(r.provenance.layer("room_capacity"), Layer::File);
        assert_eq!(r.provenance.layer("max_message_bytes"), Layer::Default);
        assert_eq!(
            r.provenance.describe("room_capacity"),
            "config file site.toml"
        );
        assert_eq!(
            r.provenance.describe("realm"),
            "environment variable PEERCALL_REALM"
        );
        assert_eq!(r.provenance.describe("http"), "flag --http");
    }

    #[test]
    fn config_path_from_flag_beats_env() {
        let seen = std::cell::RefCell::new(Vec::new());
        let read = |p: &Path| {
            seen.borrow_mut().push(p.to_owned());
            Ok(String::new())
        };
        load(
            Options::default(),
            None,
            &env(&[("PEERCALL_CONFIG", "/from/env.toml")]),
            &read,
        )
        .expect("valid");
        load(
            Options::default(),
            Some("/from/flag.toml".into()),
            &env(&[("PEERCALL_CONFIG", "/from/env.toml")]),
            &read,
        )
        .expect("valid");
        assert_eq!(
            *seen.borrow(),
            vec![
                PathBuf::from("/from/env.toml"),
                PathBuf::from("/from/flag.toml")
            ]
        );
    }

    #[test]
    fn lists_replace_lower_layers_and_split_env_on_commas() {
        let text = "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nrelay-ip = [\"10.0.0.1\"]\nuser = [\"a:b\"]\n";
        let r = load(
            flags(&["--listen", "127.0.0.1:3", "--listen", "127.0.0.1:4"]),
            Some("f.toml".into()),
            &env(&[
                ("PEERCALL_RELAY_IP", "10.0.0.2, 10.0.0.3"),
                ("PEERCALL_USER", ""),
            ]),
            &file(text),
        )
        .expect("valid");
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:3".parse().expect("a"),
            "127.0.0.1:4".parse().expect("a"),
        ];
        assert_eq!(r.listen, addrs);
        assert_eq!(
            r.relay_ip,
            vec![
                "10.0.0.2".parse::<IpAddr>().expect("ip"),
                "10.0.0.3".parse().expect("ip")
            ]
        );
        assert_eq!(r.user.len(), 1);
        assert_eq!(r.user[0].name, "a");
        // TURNS follows the TURN addresses unless given.
        assert_eq!(
            r.tls_listen,
            vec!["127.0.0.1:5349".parse::<SocketAddr>().expect("a")]
        );
    }

    #[test]
    fn booleans_in_every_layer() {
        let r = load(flags(&["--allow-loopback-peers"]), None, &[], &no_file).expect("valid");
        assert!(r.allow_loopback_peers);
        // A flag can switch off what the environment or the file switched on.
        let r = load(
            flags(&["--allow-loopback-peers=false"]),
            None,
            &env(&[("PEERCALL_ALLOW_LOOPBACK_PEERS", "true")]),
            &no_file,
        )
        .expect("valid");
        assert!(!r.allow_loopback_peers);
        let r = load(
            Options::default(),
            Some("f".into()),
            &[],
            &file("tls-self-signed = true\n"),
        )
        .expect("valid");
        assert_eq!(r.http_tls(), HttpTls::SelfSigned);
        let err = load(
            Options::default(),
            None,
            &env(&[("PEERCALL_TLS_SELF_SIGNED", "yes")]),
            &no_file,
        )
        .expect_err("yes is not a bool");
        assert!(
            err.to_string().contains("PEERCALL_TLS_SELF_SIGNED"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_key_file_and_line_and_suggests() {
        let err = parse_file(
            "http = \"127.0.0.1:1\"\nrelam = \"x\"\n",
            Path::new("/etc/peercall.toml"),
        )
        .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.starts_with("config file /etc/peercall.toml, line 2, key `relam`: unknown key"),
            "{text}"
        );
        assert!(text.contains("did you mean `realm`"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn bad_values_name_key_file_and_line() {
        for (toml_text, key, line) in [
            ("http = \"not an address\"\n", "http", 1),
            ("realm = \"r\"\nmin-port = 70000\n", "min-port", 2),
            ("listen = [\"127.0.0.1:1\", \"nope\"]\n", "listen", 1),
            ("allow-peer = [\"10.0.0.0/33\"]\n", "allow-peer", 1),
            ("user = [\"nocolon\"]\n", "user", 1),
            ("external-ip = \"1.2.3.4/x\"\n", "external-ip", 1),
            ("log-format = \"xml\"\n", "log-format", 1),
            (
                "allow-loopback-peers = \"maybe\"\n",
                "allow-loopback-peers",
                1,
            ),
            ("room-capacity = [1]\n", "room-capacity", 1),
        ] {
            let err = parse_file(toml_text, Path::new("x.toml")).expect_err(toml_text);
            let text = err.to_string();
            let want = format!("config file x.toml, line {line}, key `{key}`: ");
            assert!(
                text.starts_with(&want),
                "{toml_text:?} gave {text:?}, want prefix {want:?}"
            );
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }

    #[test]
    fn broken_toml_names_file_and_line() {
        let err = parse_file("realm = \"x\"\nthis is not toml\n", Path::new("x.toml"))
            .expect_err("syntax");
        let text = err.to_string();
        assert!(text.starts_with("config file x.toml, line 2"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = load(
            Options::default(),
            Some("/nope/p.toml".into()),
            &[],
            &|_| Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        )
        .expect_err("unreadable");
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nope/p.toml"),
            "{err}"
        );
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        for (var, value) in [
            ("PEERCALL_HTTP", "x"),
            ("PEERCALL_MIN_PORT", "-1"),
            ("PEERCALL_LISTEN", "127.0.0.1:1,bad"),
            ("PEERCALL_DENY_PEER", "10.0.0.0/99"),
            ("PEERCALL_LOG_FORMAT", "xml"),
        ] {
            let err =
                load(Options::default(), None, &env(&[(var, value)]), &no_file).expect_err(var);
            assert!(
                err.to_string()
                    .starts_with(&format!("environment variable {var}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_env_variables_warn_but_do_not_stop() {
        let r = load(
            Options::default(),
            None,
            &env(&[("PEERCALL_RELAM", "x"), ("HOME", "/root")]),
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("PEERCALL_RELAM"));
    }

    #[test]
    fn cross_field_rules_name_the_key_and_its_source() {
        let cases: &[(&[&str], &str)] = &[
            (&["--tls-cert", "c.pem"], "invalid tls-key"),
            (&["--tls-key", "k.pem"], "invalid tls-cert"),
            (
                &["--tls-cert", "c", "--tls-key", "k", "--tls-self-signed"],
                "invalid tls-self-signed",
            ),
            (&["--turn-cert", "c"], "invalid turn-key"),
            (
                &["--min-port", "6000", "--max-port", "5000"],
                "invalid min-port (from flag --min-port)",
            ),
            (&["--min-port", "0"], "invalid min-port"),
            (&["--room-capacity", "1"], "invalid room-capacity"),
            (&["--max-message-bytes", "10"], "invalid max-message-bytes"),
            (&["--credential-ttl", "5"], "invalid credential-ttl"),
            (
                &["--ping-interval", "30", "--ping-timeout", "30"],
                "invalid ping-timeout",
            ),
            (&["--realm", ""], "invalid realm"),
            (&["--public-host", "https://x"], "invalid public-host"),
            (&["--log-level", "info,,=="], "invalid log-level"),
            (&["--user-quota", "0"], "invalid user-quota"),
            (&["--max-lifetime", "10"], "invalid max-lifetime"),
        ];
        for (args, want) in cases {
            let err = load(flags(args), None, &[], &no_file).expect_err(want);
            assert!(err.to_string().starts_with(want), "{args:?}: {err}");
        }
        // The file's name appears when the bad value came from it.
        let err = load(
            Options::default(),
            Some("p.toml".into()),
            &[],
            &file("max-port = 100\n"),
        )
        .expect_err("empty range");
        assert!(
            err.to_string()
                .starts_with("invalid max-port (from config file p.toml)"),
            "{err}"
        );
    }

    #[test]
    fn domain_alone_is_the_one_command_setup() {
        let r = load(
            flags(&["--domain", "Call.Example.com."]),
            None,
            &[],
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.domain, vec!["call.example.com".to_owned()]);
        assert_eq!(r.http_tls(), HttpTls::Acme);
        assert_eq!(r.http.to_string(), "0.0.0.0:443");
        assert_eq!(
            r.http_redirect.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:80")
        );
        assert_eq!(r.acme_directory, defaults::acme_directory());
        assert_eq!(r.acme_challenge_in_use(), AcmeChallenge::TlsAlpn01);
        // An explicit --http keeps its port and brings no redirect of its own.
        let r = load(
            flags(&[
                "--domain",
                "a.example",
                "--http",
                "0.0.0.0:8443",
                "--acme-staging",
            ]),
            None,
            &[],
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.http.port(), 8443);
        assert_eq!(r.http_redirect, None);
        assert_eq!(r.acme_directory, LETS_ENCRYPT_STAGING);
        // Only port 80 reachable: auto picks HTTP-01.
        let r = load(
            flags(&[
                "--domain",
                "a.example",
                "--http",
                "0.0.0.0:8443",
                "--http-redirect",
                "0.0.0.0:80",
            ]),
            None,
            &[],
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.acme_challenge_in_use(), AcmeChallenge::Http01);
        let r = load(
            Options::default(),
            None,
            &env(&[
                ("PEERCALL_DOMAIN", "a.example,b.example"),
                ("PEERCALL_ACME_CHALLENGE", "TLS-ALPN-01"),
            ]),
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.domain.len(), 2);
        assert_eq!(r.acme_challenge, AcmeChallenge::TlsAlpn01);
        assert!(
            r.to_annotated_toml()
                .contains("acme-challenge = \"tls-alpn-01\"")
        );
    }

    #[test]
    fn acme_settings_are_checked() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--domain", "*.example.com"],
                "invalid domain (from flag --domain): \"*.example.com\": wildcard",
            ),
            (&["--domain", "203.0.113.7"], "invalid domain"),
            (&["--domain", "https://call.example.com"], "invalid domain"),
            (&["--domain", "call.example.com:443"], "invalid domain"),
            (
                &["--domain", "a.example", "--tls-self-signed"],
                "invalid domain",
            ),
            (
                &["--domain", "a.example", "--tls-cert", "c", "--tls-key", "k"],
                "invalid domain",
            ),
            (&["--acme-email", "not an address"], "invalid acme-email"),
            (&["--acme-email", "nobody"], "invalid acme-email"),
            (
                &[
                    "--acme-staging",
                    "--acme-directory",
                    "https://ca.example/dir",
                ],
                "invalid acme-staging",
            ),
            (
                &["--acme-directory", "http://ca.example/dir"],
                "invalid acme-directory",
            ),
            (
                &[
                    "--domain",
                    "a.example",
                    "--http",
                    "127.0.0.1:1",
                    "--acme-challenge",
                    "http-01",
                ],
                "invalid acme-challenge",
            ),
            (
                &[
                    "--http",
                    "127.0.0.1:8080",
                    "--http-redirect",
                    "127.0.0.1:8080",
                    "--tls-self-signed",
                ],
                "invalid http-redirect",
            ),
            (
                &["--http-redirect", "127.0.0.1:8081"],
                "invalid http-redirect (from flag --http-redirect): redirects go to HTTPS",
            ),
        ];
        for (args, want) in cases {
            let err = load(flags(args), None, &[], &no_file).expect_err(want);
            assert!(err.to_string().starts_with(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn turn_tls_defaults_to_the_http_certificate() {
        let r = load(
            flags(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]),
            None,
            &[],
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.turn_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(r.turn_key, Some(PathBuf::from("k.pem")));
        let r = load(
            flags(&[
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--turn-cert",
                "t.pem",
                "--turn-key",
                "tk.pem",
            ]),
            None,
            &[],
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.turn_cert, Some(PathBuf::from("t.pem")));
    }

    #[test]
    fn secrets_are_never_printed() {
        let r = load(
            flags(&[
                "--auth-secret",
                "s3cr3t-value-long-enough",
                "--user",
                "alice:pa55word",
            ]),
            None,
            &env(&[("PEERCALL_JOIN_TOKEN_SECRET", "j0in-secret-long-enough")]),
            &no_file,
        )
        .expect("valid");
        for text in [format!("{r:?}"), r.to_annotated_toml()] {
            assert!(
                !text.contains("s3cr3t") && !text.contains("pa55word") && !text.contains("j0in"),
                "{text}"
            );
            assert!(text.contains("alice"), "{text}");
        }
    }

    #[test]
    fn annotated_toml_is_valid_config_and_names_sources() {
        let r = load(flags(&["--realm", "example"]), None, &[], &no_file).expect("valid");
        let text = r.to_annotated_toml();
        assert!(text.contains("realm = \"example\""), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("realm = ") && l.ends_with("# flag --realm")),
            "{text}"
        );
        // What --print-config prints can be fed back as a config file.
        let again = parse_file(&text, Path::new("printed.toml")).expect("printed config parses");
        assert_eq!(again.realm.as_deref(), Some("example"));
    }

    #[test]
    fn every_setting_has_a_flag_an_env_variable_and_a_toml_key() {
        use clap::CommandFactory;
        let command = AllFlags::command();
        let longs: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(str::to_owned)
            .collect();
        assert_eq!(longs.len(), FIELDS.len(), "{longs:?}");
        for field in FIELDS {
            assert!(
                longs.contains(&key_of(field)),
                "no flag --{}",
                key_of(field)
            );
            // Each key is known to the file parser (a value of the wrong type is an error, but not "unknown key").
            if let Err(e) = parse_file(&format!("{} = {{}}\n", key_of(field)), Path::new("k.toml"))
            {
                assert!(!e.to_string().contains("unknown key"), "{e}");
            }
            // And each variable is recognised.
            let (_, unknown) =
                Options::from_env([(env_var_of(field).as_str(), "")]).expect("empty is unset");
            assert!(unknown.is_empty(), "{} not recognised", env_var_of(field));
        }
    }

    #[test]
    fn every_declared_default_parses_and_is_the_resolved_value() {
        // defaults::X() panics if the table's text does not parse as the setting's type.
        let r = load(Options::default(), None, &[], &no_file).expect("defaults are valid");
        let printed = toml::to_string(&r).expect("resolved prints");
        for field in FIELDS {
            if let DeclaredDefault::Value(text) = DEFAULTS.get(field) {
                let key = key_of(field);
                let line = printed
                    .lines()
                    .find(|l| l.starts_with(&format!("{key} = ")))
                    .unwrap_or_else(|| panic!("--print-config misses {key}"));
                let value = line[key.len() + 3..].trim_matches(['[', ']', '"']);
                assert_eq!(
                    value, text,
                    "{key}: the resolved default differs from the table's"
                );
            }
        }
    }

    #[test]
    fn the_signal_crates_library_defaults_agree_with_the_table() {
        let lib = peercall_signal::SignalConfig::default();
        assert_eq!(lib.max_joins_per_min, defaults::max_joins_per_min());
        assert_eq!(lib.max_new_rooms_per_min, defaults::max_new_rooms_per_min());
        assert_eq!(
            lib.failed_joins_before_backoff,
            defaults::failed_joins_before_backoff()
        );
        assert_eq!(lib.max_join_backoff.as_secs(), defaults::max_join_backoff());
        assert_eq!(
            lib.room_failed_joins_before_delay,
            defaults::room_failed_joins_before_delay()
        );
        assert_eq!(
            lib.max_connections_per_ip,
            defaults::max_connections_per_ip()
        );
        assert_eq!(lib.max_rooms, defaults::max_rooms());
        assert!(lib.allowed_origins.is_empty() && lib.trusted_proxies.is_empty());
    }

    #[test]
    fn origins_proxies_and_metrics_settings_parse_and_are_checked() {
        let r = load(
            flags(&[
                "--allowed-origin",
                "https://App.example.com/",
                "--allowed-origin",
                "*",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--metrics-listen",
                "127.0.0.1:9464",
                "--metrics-token",
                "a-long-enough-token",
            ]),
            None,
            &env(&[("PEERCALL_MAX_JOINS_PER_MIN", "0")]),
            &no_file,
        )
        .expect("valid");
        assert_eq!(r.allowed_origin.len(), 2);
        assert_eq!(r.max_joins_per_min, 0);
        let text = r.to_annotated_toml();
        assert!(
            text.contains("allowed-origin = [\"https://app.example.com\", \"*\"]"),
            "{text}"
        );
        assert!(!text.contains("a-long-enough-token"), "{text}");
        let err = load(
            Options::default(),
            None,
            &env(&[("PEERCALL_ALLOWED_ORIGIN", "app.example.com")]),
            &no_file,
        )
        .expect_err("no scheme");
        assert!(
            err.to_string()
                .starts_with("environment variable PEERCALL_ALLOWED_ORIGIN: "),
            "{err}"
        );
        let err = load(flags(&["--metrics-token", "short"]), None, &[], &no_file)
            .expect_err("short token");
        assert!(
            err.to_string().starts_with("invalid metrics-token"),
            "{err}"
        );
        let err = load(
            flags(&[
                "--http",
                "127.0.0.1:8080",
                "--metrics-listen",
                "127.0.0.1:8080",
            ]),
            None,
            &[],
            &no_file,
        )
        .expect_err("same port");
        assert!(
            err.to_string().starts_with("invalid metrics-listen"),
            "{err}"
        );
        let err = load(flags(&["--max-join-backoff", "0"]), None, &[], &no_file).expect_err("0");
        assert!(
            err.to_string().starts_with("invalid max-join-backoff"),
            "{err}"
        );
    }

    #[test]
    fn the_turn_crates_library_defaults_agree_with_the_table() {
        let lib = peercall_turn::TurnConfig::default();
        assert_eq!(lib.listen, vec![defaults::listen()]);
        assert_eq!(lib.realm, defaults::realm());
        assert_eq!(
            (lib.min_port, lib.max_port),
            (defaults::min_port(), defaults::max_port())
        );
        assert_eq!(
            (lib.user_quota, lib.total_quota),
            (defaults::user_quota(), defaults::total_quota())
        );
        assert_eq!(
            (lib.client_quota, lib.max_permissions, lib.max_channels),
            (
                defaults::client_quota(),
                defaults::max_permissions(),
                defaults::max_channels()
            )
        );
        let streams = lib.stream_limits;
        assert_eq!(
            (
                streams.first_message_timeout.as_secs(),
                streams.idle_timeout.as_secs(),
                streams.per_address,
                streams.total
            ),
            (
                defaults::tcp_first_message_timeout(),
                defaults::tcp_idle_timeout(),
                defaults::tcp_per_address(),
                defaults::tcp_connections()
            )
        );
        assert_eq!(lib.max_lifetime.as_secs(), defaults::max_lifetime());
        assert_eq!(lib.unauth_rate_per_sec, defaults::unauth_rate());
        assert_eq!(lib.allow_loopback_peers, defaults::allow_loopback_peers());
        assert_eq!(lib.threads as u32, defaults::relay_threads());
    }

    #[test]
    fn help_shows_the_declared_default_and_docs_agree_with_the_table() {
        use clap::CommandFactory;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let docs = std::fs::read_to_string(root.join("docs/configuration.md"))
            .expect("docs/configuration.md");
        let example = std::fs::read_to_string(root.join("peercall.example.toml"))
            .expect("peercall.example.toml");
        let command = AllFlags::command();
        for field in FIELDS {
            let key = key_of(field);
            let help = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(!help.is_empty(), "--{key} has no help text");
            assert!(
                !help.contains('`'),
                "--{key}: rustdoc backticks in --help: {help:?}"
            );
            let declared = DEFAULTS.get(field);
            match declared {
                DeclaredDefault::Value(v) | DeclaredDefault::Note(v) => assert!(
                    help.ends_with(&format!("[default: {v}]")),
                    "--{key}: help {help:?} does not end with the table's default"
                ),
                DeclaredDefault::None => assert!(!help.contains("[default"), "--{key}: {help:?}"),
            }
            assert_eq!(
                help.matches("[default").count(),
                usize::from(declared != DeclaredDefault::None),
                "--{key}: a default written in the doc comment as well as in the table: {help:?}"
            );
            // The docs table row of this setting shows the same default.
            let row = docs
                .lines()
                .find(|l| {
                    l.starts_with(&format!("| `--{key} ")) || l.starts_with(&format!("| `--{key}`"))
                })
                .unwrap_or_else(|| panic!("docs/configuration.md has no table row for --{key}"));
            let columns: Vec<&str> = row.split(" | ").collect();
            assert!(
                columns.len() >= 5,
                "docs row of --{key} has too few columns: {row}"
            );
            if let DeclaredDefault::Value(v) = declared {
                assert!(
                    columns[3].starts_with(&format!("`{v}`")),
                    "docs/configuration.md gives --{key} the default {:?}, the table {v:?}",
                    columns[3]
                );
                // The example file's commented line shows it too (scalars only; lists are examples).
                if !columns[4].contains("*repeatable*") {
                    let line = example
                        .lines()
                        .find(|l| l.starts_with(&format!("# {key} = ")))
                        .unwrap_or_else(|| {
                            panic!("peercall.example.toml has no `# {key} = ` line")
                        });
                    assert_eq!(
                        line[key.len() + 5..].trim().trim_matches('"'),
                        v,
                        "peercall.example.toml: {line}"
                    );
                }
            }
        }
    }

    #[test]
    fn docs_and_example_list_every_setting() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let docs = std::fs::read_to_string(root.join("docs/configuration.md"))
            .expect("docs/configuration.md");
        let example = std::fs::read_to_string(root.join("peercall.example.toml"))
            .expect("peercall.example.toml");
        for field in FIELDS {
            let key = key_of(field);
            assert!(
                docs.contains(&format!("`--{key}")),
                "docs/configuration.md misses --{key}"
            );
            assert!(
                docs.contains(&format!("`{}`", env_var_of(field))),
                "docs misses {}",
                env_var_of(field)
            );
            assert!(
                example.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))),
                "peercall.example.toml misses {key}"
            );
        }
    }

    #[test]
    fn example_file_parses_and_resolves_and_its_commented_values_too() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../peercall.example.toml");
        let text = std::fs::read_to_string(&path).expect("peercall.example.toml");
        let options = parse_file(&text, &path).expect("peercall.example.toml is valid");
        Resolved::new(options, Provenance::default()).expect("peercall.example.toml resolves");
        // Uncomment every `# key = value` line: the example values must be valid too.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| FIELDS.contains(&k.replace('-', "_").as_str())) =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let options = parse_file(&uncommented, &path).expect("uncommented example parses");
        let (merged, _) = Options::merge(Options::default(), Options::default(), options);
        assert!(
            merged.realm.is_some(),
            "the example sets realm once uncommented"
        );
    }
}
