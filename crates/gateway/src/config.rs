//! The gateway's configuration: a TOML file, then `KLING_AUDIT_*` environment overrides, then
//! secrets from the environment or from `*_FILE` files, all checked once at start.
//!
//! Parsing goes through [`RawConfig`] (every field optional, unknown keys refused so a typo
//! cannot silently fall back to a default) and ends in [`GatewayConfig`], whose fields hold
//! checked values only. Secrets live in [`SecretString`], whose `Debug` shows nothing. The
//! ledger directory is not part of the file: it comes from the CLI's global `--dir`, like every
//! other command, so one flag always names one ledger.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kling_api::SecretString;
use kling_audit_ledger::Durability;
use reqwest::Url;
use serde::Deserialize;

/// Kling's current base URL for servers outside China (kling-api.md 3).
pub const DEFAULT_UPSTREAM: &str = "https://api-singapore.klingai.com";
/// Where the gateway listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The file name of the actor store inside the keys directory.
pub const ACTORS_FILE_NAME: &str = "actors.json";

/// Why a configuration was refused. Every message names the key or variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (line, column, key).
        message: String,
    },
    /// An environment variable holds a value of the wrong form.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A secret file named by a `*_FILE` variable or `*_file` key could not be read.
    #[error("cannot read secret file {path} (from {source_name}): {source}")]
    SecretFile {
        /// The variable or key that named the file.
        source_name: String,
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {reason}")]
    Invalid {
        /// The config key (`section.key`) or variable at fault.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// How callers authenticate to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Each caller holds gateway-issued actor keys; the gateway verifies their JWTs and signs
    /// upstream with the organisation's key.
    Actors,
    /// Callers hold real Kling keys; their `Authorization` header is forwarded unchanged and
    /// the actor is the keyed fingerprint of the JWT `iss` (or of the API key).
    Passthrough,
}

/// What the gateway does when the audit ledger cannot take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refuse with 503/5001 and forward nothing (the default).
    FailClosed,
    /// Forward unrecorded, count it, and write `gateway.unaudited` once the ledger recovers.
    FailOpen,
}

/// What to do with a task id the gateway has no owner for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownTaskPolicy {
    /// Answer 404/1203 without forwarding (the default): only tasks created through this
    /// gateway can be read through it.
    Deny,
    /// Forward the query; the answer is recorded under the calling actor.
    Forward,
}

/// The organisation's Kling credentials used upstream. Callers never see them.
#[derive(Debug, Clone)]
pub struct OrgCredentials {
    /// The access key (JWT `iss`).
    pub access_key: String,
    /// The secret key signing the upstream JWTs.
    pub secret_key: SecretString,
    /// An opaque API key, used for new-standard routes (which take no JWT) when set.
    pub api_key: Option<SecretString>,
}

/// Where and how requests go upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `https://api-singapore.klingai.com`.
    pub url: Url,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP/TLS connect timeout. It may be longer than `timeout`, which then ends a connect
    /// early; either way a call that got no connection is answered as a connect failure.
    pub connect_timeout: Duration,
    /// The organisation's key; required in [`AuthMode::Actors`].
    pub credentials: Option<OrgCredentials>,
}

/// Caller authentication.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Actors or pass-through.
    pub mode: AuthMode,
    /// Clock skew tolerated on `nbf`/`exp`.
    pub leeway_secs: i64,
    /// Longest token lifetime accepted; `None` for no limit.
    pub max_token_lifetime_secs: Option<i64>,
    /// The actor store (default `<keys dir>/actors.json`).
    pub actors_file: PathBuf,
}

/// The audit ledger and what happens when it fails.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Witnesses that cosign each checkpoint, as `URL=VERIFIER_KEY` (checked at load).
    pub witnesses: Vec<String>,
    /// The ledger directory.
    pub dir: PathBuf,
    /// The keys directory; `None` for `<dir>.keys`.
    pub keys_dir: Option<PathBuf>,
    /// Fail closed (default) or open.
    pub on_failure: FailureMode,
    /// Sync before acknowledging (default) or buffered.
    pub durability: Durability,
    /// Let a call that is alone write its records on its own serving thread when the ledger is
    /// idle, instead of queueing them for the writer thread (on by default).
    pub inline_appends: bool,
    /// Segment size limit; `None` keeps the ledger's default.
    pub max_segment_bytes: Option<u64>,
    /// Longest upstream `message` kept in a record, in characters.
    pub message_max_chars: usize,
    /// How often to try reopening a ledger that stopped accepting records.
    pub reopen_interval: Duration,
}

/// Task ownership.
#[derive(Debug, Clone)]
pub struct TasksConfig {
    /// Unknown task ids: deny (default) or forward.
    pub unknown: UnknownTaskPolicy,
}

/// Callback interception and relay.
#[derive(Debug, Clone)]
pub struct CallbacksConfig {
    /// Base URL Kling can reach the gateway at; `None` uses `http://<bound address>`.
    pub public_url: Option<Url>,
    /// Attempts per relayed callback, at least 1.
    pub relay_attempts: u32,
    /// Timeout of one relay attempt.
    pub relay_timeout: Duration,
    /// Pause before the second attempt; doubles for each later one.
    pub relay_backoff: Duration,
    /// Kling's webhook secret (`whsec_...`) for checking callback signatures.
    pub webhook_secret: Option<SecretString>,
    /// Largest distance between `webhook-timestamp` and local time.
    pub webhook_tolerance_secs: i64,
}

/// Largest `audit.message_max_chars`: a message of that many characters (four bytes each at
/// most, six escaped) still leaves a record far under the ledger's 1 MiB.
const MESSAGE_MAX_CHARS_LIMIT: usize = 65536;

/// Most JSON values a request body may hold by default. A Kling request holds tens of values,
/// hundreds with long lists (its images travel as one base64 string each, which counts once);
/// parsed, a value costs the gateway some 150 bytes, so the default bounds what the parses of
/// one body can take to some 15 MB beyond its text.
pub const DEFAULT_MAX_BODY_VALUES: usize = 100_000;

/// HTTP serving limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, across all requests; when unset, the larger of
    /// 256 MiB and `max_body_bytes`.
    pub max_buffered_bytes: Option<usize>,
    /// Most JSON values (scalars, arrays and objects) a request body may hold; see
    /// [`DEFAULT_MAX_BODY_VALUES`].
    pub max_body_values: usize,
    /// Longest wait for a request's headers, and for the next request on an idle connection.
    pub header_timeout: Duration,
    /// Longest wait for a request's body, from the end of its headers.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for in-flight requests and relays at shutdown.
    pub shutdown_grace: Duration,
    /// Threads serving callers' connections; `None` picks [`ServerConfig::worker_threads`]'s
    /// default.
    pub worker_threads: Option<usize>,
}

/// Everything the gateway needs, checked.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Upstream Kling API.
    pub upstream: UpstreamConfig,
    /// Caller authentication.
    pub auth: AuthConfig,
    /// The audit ledger.
    pub audit: AuditConfig,
    /// Task ownership.
    pub tasks: TasksConfig,
    /// Callback relay.
    pub callbacks: CallbacksConfig,
    /// Serving limits.
    pub server: ServerConfig,
    /// Bearer token guarding `/metrics`; open when `None`.
    pub admin_token: Option<SecretString>,
}

/// File descriptors kept for the ledger, the upstream pool and relays, beyond connections
/// (half the limit when that is less).
pub const RESERVED_FILES: usize = 256;

/// The process's soft limit on open files, when it has one.
pub fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

impl ServerConfig {
    /// Connections the gateway serves at once: `max_connections`, lowered when the open-file
    /// limit would not leave [`RESERVED_FILES`] descriptors for everything else.
    pub fn connection_cap(&self) -> usize {
        match open_file_limit() {
            Some(limit) => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let room = limit - RESERVED_FILES.min(limit / 2);
                self.max_connections.min(room).max(1)
            }
            None => self.max_connections,
        }
    }

    /// Threads that serve callers' connections: `worker_threads`, or else one per CPU.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Bytes of request bodies the gateway holds at once.
    pub fn buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
            .unwrap_or_else(|| self.max_body_bytes.max(256 * 1024 * 1024))
    }
}

impl GatewayConfig {
    /// Settings that are valid but leave some calls unable to go upstream, said for the
    /// operator (`config check` prints them, the gateway logs them at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.auth.mode != AuthMode::Actors {
            return found;
        }
        // Actors mode without the organisation's key pair is refused by `load` itself.
        match &self.upstream.credentials {
            Some(c) if c.api_key.is_none() => found.push(
                "KLING_API_KEY is not set (nor upstream.api_key_file): calls on the \
                 new-standard routes (POST /text-to-video/<version>, GET /tasks, ...) are \
                 answered 500 / 5000 and not forwarded; the classic /v1/ routes work"
                    .to_owned(),
            ),
            _ => {}
        }
        if let Some(limit) = open_file_limit() {
            if self.server.connection_cap() < self.server.max_connections {
                found.push(format!(
                    "server.max_connections is {} but the open-file limit (ulimit -n) is {limit}; \
                     the ledger and the upstream connections need file descriptors too, so the \
                     gateway serves at most {} connections at once. Raise the limit or lower \
                     server.max_connections",
                    self.server.max_connections,
                    self.server.connection_cap()
                ));
            }
        }
        found
    }

    /// A configuration with every default, an upstream and the organisation's key pair, for
    /// tests and the demo. The actor store sits in the ledger's keys directory.
    pub fn new(
        ledger_dir: impl Into<PathBuf>,
        upstream: Url,
        access_key: impl Into<String>,
        secret_key: SecretString,
    ) -> Self {
        let dir = ledger_dir.into();
        let actors_file = kling_audit_ledger::default_keys_dir(&dir).join(ACTORS_FILE_NAME);
        let mut cfg = Self::defaults(dir, None, actors_file, upstream);
        cfg.upstream.credentials = Some(OrgCredentials {
            access_key: access_key.into(),
            secret_key,
            api_key: None,
        });
        cfg
    }

    fn defaults(dir: PathBuf, keys_dir: Option<PathBuf>, actors_file: PathBuf, url: Url) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream: UpstreamConfig {
                url,
                timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(10),
                credentials: None,
            },
            auth: AuthConfig {
                mode: AuthMode::Actors,
                leeway_secs: 10,
                max_token_lifetime_secs: None,
                actors_file,
            },
            audit: AuditConfig {
                dir,
                keys_dir,
                on_failure: FailureMode::FailClosed,
                durability: Durability::Sync,
                inline_appends: true,
                max_segment_bytes: None,
                message_max_chars: 256,
                reopen_interval: Duration::from_secs(5),
                witnesses: Vec::new(),
            },
            tasks: TasksConfig {
                unknown: UnknownTaskPolicy::Deny,
            },
            callbacks: CallbacksConfig {
                public_url: None,
                relay_attempts: 3,
                relay_timeout: Duration::from_secs(5),
                relay_backoff: Duration::from_millis(500),
                webhook_secret: None,
                webhook_tolerance_secs: kling_api::webhook::DEFAULT_TOLERANCE_SECS,
            },
            server: ServerConfig {
                max_body_bytes: 64 * 1024 * 1024,
                max_buffered_bytes: None,
                max_body_values: DEFAULT_MAX_BODY_VALUES,
                header_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_secs(30),
                max_connections: 4096,
                shutdown_grace: Duration::from_secs(30),
                worker_threads: None,
            },
            admin_token: None,
        }
    }

    /// The keys directory in use.
    pub fn keys_dir(&self) -> PathBuf {
        self.audit
            .keys_dir
            .clone()
            .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&self.audit.dir))
    }

    /// Checks cross-field rules that the builder form ([`GatewayConfig::new`]) can break.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_base_url("upstream.url", &self.upstream.url)?;
        if let Some(url) = &self.callbacks.public_url {
            check_base_url("callbacks.public_url", url)?;
        }
        if self.auth.mode == AuthMode::Actors && self.upstream.credentials.is_none() {
            return Err(ConfigError::invalid(
                "KLING_ACCESS_KEY / KLING_SECRET_KEY",
                "auth.mode = \"actors\" re-signs every request with the organisation's Kling \
                 key: set KLING_ACCESS_KEY and KLING_SECRET_KEY (or KLING_SECRET_KEY_FILE), \
                 or upstream.access_key and upstream.secret_key_file",
            ));
        }
        if let Some(c) = &self.upstream.credentials {
            if c.access_key.is_empty() || c.secret_key.is_empty() {
                return Err(ConfigError::invalid(
                    "KLING_ACCESS_KEY / KLING_SECRET_KEY",
                    "the organisation's access key and secret key must both be non-empty",
                ));
            }
        }
        if let Some(secret) = &self.callbacks.webhook_secret {
            kling_api::webhook::decode_secret(secret.expose()).map_err(|_| {
                ConfigError::invalid(
                    "callbacks.webhook_secret",
                    "must be the console's webhook secret: whsec_ followed by base64",
                )
            })?;
        }
        let positive = [
            ("upstream.timeout_ms", self.upstream.timeout),
            ("upstream.connect_timeout_ms", self.upstream.connect_timeout),
            ("callbacks.relay_timeout_ms", self.callbacks.relay_timeout),
            ("audit.reopen_interval_ms", self.audit.reopen_interval),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        // A connect timeout above the upstream timeout is accepted, not refused: the upstream
        // timeout bounds the connect too, and a call cut short while connecting is still
        // answered as the connect failure it is, so the setting is harmless, and refusing it
        // would stop a gateway that started before from starting.
        if self.callbacks.relay_attempts == 0 || self.callbacks.relay_attempts > 20 {
            return Err(ConfigError::invalid(
                "callbacks.relay_attempts",
                "must be between 1 and 20",
            ));
        }
        if self.auth.leeway_secs < 0 || self.auth.leeway_secs > 3600 {
            return Err(ConfigError::invalid(
                "auth.leeway_secs",
                "must be between 0 and 3600",
            ));
        }
        if matches!(self.auth.max_token_lifetime_secs, Some(v) if v <= 0) {
            return Err(ConfigError::invalid(
                "auth.max_token_lifetime_secs",
                "must be positive (leave it out for no limit)",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if matches!(self.server.max_buffered_bytes, Some(v) if v < self.server.max_body_bytes) {
            return Err(ConfigError::invalid(
                "server.max_buffered_bytes",
                "must be at least server.max_body_bytes, or one body could never be read",
            ));
        }
        if self.server.max_body_values < 1000 {
            return Err(ConfigError::invalid(
                "server.max_body_values",
                "must be at least 1000",
            ));
        }
        if self.server.header_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "server.header_timeout_ms",
                "must be at least 1 (slow or idle clients would otherwise hold connections forever)",
            ));
        }
        if self.server.body_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "server.body_timeout_ms",
                "must be at least 1 (slow clients would otherwise hold connections forever)",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if matches!(self.server.worker_threads, Some(n) if n == 0 || n > 1024) {
            return Err(ConfigError::invalid(
                "server.worker_threads",
                "must be from 1 to 1024; leave it unset for one per CPU",
            ));
        }
        // Messages are kept in records, which the ledger caps at 1 MiB each.
        if !(1..=MESSAGE_MAX_CHARS_LIMIT).contains(&self.audit.message_max_chars) {
            return Err(ConfigError::invalid(
                "audit.message_max_chars",
                "must be from 1 to 65536",
            ));
        }
        if matches!(&self.admin_token, Some(t) if t.expose().len() < 16) {
            return Err(ConfigError::invalid(
                "admin.token",
                "must be at least 16 characters (or leave it out to serve /metrics openly)",
            ));
        }
        kling_audit_ledger::check_keys_outside(&self.audit.dir, &self.keys_dir()).map_err(|e| {
            ConfigError::invalid("--keys-dir (KLING_AUDIT_KEYS_DIR)", e.to_string())
        })?;
        check_actors_file(&self.audit.dir, &self.auth.actors_file)
    }
}

/// Refuses an actor store inside the ledger directory (docs/gateway.md): it holds the actors'
/// secret keys, which would be copied and shipped with the ledger.
fn check_actors_file(ledger_dir: &Path, actors_file: &Path) -> Result<(), ConfigError> {
    if !kling_audit_ledger::paths::is_within(ledger_dir, actors_file) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "auth.actors_file (KLING_AUDIT_AUTH_ACTORS_FILE)",
        format!(
            "{} is inside the ledger directory {}: the actor store holds the actors' secret \
             keys, which would be copied and shipped with the ledger. Name a file outside the \
             ledger directory, or leave the setting out to keep the store in the keys directory",
            actors_file.display(),
            ledger_dir.display()
        ),
    ))
}

fn check_base_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            key,
            format!(
                "must be an http:// or https:// URL, got scheme {:?}",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none() {
        return Err(ConfigError::invalid(key, "must name a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must be a base URL without query or fragment",
        ));
    }
    // Kling takes no HTTP Basic credentials, and a password in a URL ends up in places
    // secrets must not go; the organisation's keys have their own settings.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must not carry a user name or password; give the organisation's keys as \
             KLING_ACCESS_KEY / KLING_SECRET_KEY (or their *_FILE settings)",
        ));
    }
    Ok(())
}

/// The TOML file as written: every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `listen = "127.0.0.1:8080"`.
    pub listen: Option<String>,
    /// `[upstream]`.
    pub upstream: RawUpstream,
    /// `[auth]`.
    pub auth: RawAuth,
    /// `[audit]`.
    pub audit: RawAudit,
    /// `[tasks]`.
    pub tasks: RawTasks,
    /// `[callbacks]`.
    pub callbacks: RawCallbacks,
    /// `[server]`.
    pub server: RawServer,
    /// `[admin]`.
    pub admin: RawAdmin,
}

/// `[upstream]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    /// The access key is an identifier, not a secret, so it may sit in the file.
    pub access_key: Option<String>,
    /// Secrets are read from files only; the file itself never holds them.
    pub secret_key_file: Option<PathBuf>,
    pub api_key_file: Option<PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAuth {
    pub mode: Option<String>,
    pub leeway_secs: Option<i64>,
    pub max_token_lifetime_secs: Option<i64>,
    pub actors_file: Option<PathBuf>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAudit {
    pub on_failure: Option<String>,
    pub durability: Option<String>,
    pub inline_appends: Option<bool>,
    pub max_segment_bytes: Option<u64>,
    pub message_max_chars: Option<usize>,
    pub reopen_interval_ms: Option<u64>,
    /// `witnesses = ["<add-checkpoint URL>=<cosigner verifier key>", ...]`.
    pub witnesses: Option<Vec<String>>,
}

/// `[tasks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawTasks {
    pub unknown: Option<String>,
}

/// `[callbacks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawCallbacks {
    pub public_url: Option<String>,
    pub relay_attempts: Option<u32>,
    pub relay_timeout_ms: Option<u64>,
    pub relay_backoff_ms: Option<u64>,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_tolerance_secs: Option<i64>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawServer {
    pub max_body_bytes: Option<usize>,
    pub max_buffered_bytes: Option<usize>,
    pub max_body_values: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub shutdown_grace_ms: Option<u64>,
    pub worker_threads: Option<usize>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAdmin {
    pub token_file: Option<PathBuf>,
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
}

/// Where [`load`] reads from. Tests pass their own environment instead of the process's.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// The environment (`std::env::vars()` in the binary).
    pub env: HashMap<String, String>,
    /// Command-line values.
    pub overrides: Overrides,
    /// The ledger directory (`--dir`).
    pub dir: PathBuf,
    /// The keys directory (`--keys-dir`), if given.
    pub keys_dir: Option<PathBuf>,
}

/// Reads, overrides, resolves secrets and validates.
///
/// Precedence, lowest first: defaults, the file, `KLING_AUDIT_<SECTION>_<KEY>` variables,
/// command-line flags. Secrets: `KLING_SECRET_KEY` or `KLING_SECRET_KEY_FILE` (then
/// `upstream.secret_key_file`), and likewise `KLING_API_KEY`, `KLING_AUDIT_WEBHOOK_SECRET`,
/// `KLING_AUDIT_ADMIN_TOKEN`.
///
/// # Errors
/// The first [`ConfigError`] found; nothing is started.
pub fn load(sources: &Sources) -> Result<GatewayConfig, ConfigError> {
    let mut raw = match &sources.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            parse_toml(&text, path)?
        }
        None => RawConfig::default(),
    };
    apply_env(&mut raw, &sources.env)?;
    if let Some(listen) = &sources.overrides.listen {
        raw.listen = Some(listen.clone());
    }
    if let Some(upstream) = &sources.overrides.upstream {
        raw.upstream.url = Some(upstream.clone());
    }
    resolve(raw, sources)
}

/// Where the actor store is, from the file and environment alone: actor commands need no
/// upstream key, so nothing else is resolved or checked.
///
/// # Errors
/// An unreadable or invalid file, or a bad environment value.
pub fn actors_file(sources: &Sources) -> Result<PathBuf, ConfigError> {
    let mut raw = match &sources.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            parse_toml(&text, path)?
        }
        None => RawConfig::default(),
    };
    apply_env(&mut raw, &sources.env)?;
    let path = raw.auth.actors_file.unwrap_or_else(|| {
        sources
            .keys_dir
            .clone()
            .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&sources.dir))
            .join(ACTORS_FILE_NAME)
    });
    // `actors add` writes secret keys there: refused as the gateway would refuse it.
    check_actors_file(&sources.dir, &path)?;
    Ok(path)
}

/// Parses TOML text (errors name `path`).
///
/// # Errors
/// [`ConfigError::Parse`] for bad TOML, unknown keys or wrong types.
pub fn parse_toml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

fn env_parse<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &str,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(var) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ConfigError::Env {
            var: var.to_owned(),
            reason: format!("expected {expected}, got {v:?}"),
        }),
    }
}

fn env_str(env: &HashMap<String, String>, var: &str) -> Option<String> {
    env.get(var).cloned()
}

/// Applies `KLING_AUDIT_*` overrides onto the parsed file.
fn apply_env(raw: &mut RawConfig, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    const MS: &str = "a whole number of milliseconds";
    if let Some(v) = env_str(env, "KLING_AUDIT_LISTEN") {
        raw.listen = Some(v);
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_UPSTREAM_URL") {
        raw.upstream.url = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_UPSTREAM_TIMEOUT_MS", MS)? {
        raw.upstream.timeout_ms = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_UPSTREAM_CONNECT_TIMEOUT_MS", MS)? {
        raw.upstream.connect_timeout_ms = Some(v);
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_AUTH_MODE") {
        raw.auth.mode = Some(v);
    }
    if let Some(v) = env_parse(
        env,
        "KLING_AUDIT_AUTH_LEEWAY_SECS",
        "a whole number of seconds",
    )? {
        raw.auth.leeway_secs = Some(v);
    }
    if let Some(v) = env_parse(
        env,
        "KLING_AUDIT_AUTH_MAX_TOKEN_LIFETIME_SECS",
        "a whole number of seconds",
    )? {
        raw.auth.max_token_lifetime_secs = Some(v);
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_AUTH_ACTORS_FILE") {
        raw.auth.actors_file = Some(PathBuf::from(v));
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_AUDIT_ON_FAILURE") {
        raw.audit.on_failure = Some(v);
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_AUDIT_DURABILITY") {
        raw.audit.durability = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_AUDIT_INLINE_APPENDS", "true or false")? {
        raw.audit.inline_appends = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_AUDIT_MAX_SEGMENT_BYTES", "a byte count")? {
        raw.audit.max_segment_bytes = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_AUDIT_MESSAGE_MAX_CHARS", "a count")? {
        raw.audit.message_max_chars = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_AUDIT_REOPEN_INTERVAL_MS", MS)? {
        raw.audit.reopen_interval_ms = Some(v);
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_AUDIT_WITNESSES") {
        raw.audit.witnesses = Some(v.split_whitespace().map(str::to_owned).collect());
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_TASKS_UNKNOWN") {
        raw.tasks.unknown = Some(v);
    }
    if let Some(v) = env_str(env, "KLING_AUDIT_CALLBACKS_PUBLIC_URL") {
        raw.callbacks.public_url = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_CALLBACKS_RELAY_ATTEMPTS", "a count")? {
        raw.callbacks.relay_attempts = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_CALLBACKS_RELAY_TIMEOUT_MS", MS)? {
        raw.callbacks.relay_timeout_ms = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_CALLBACKS_RELAY_BACKOFF_MS", MS)? {
        raw.callbacks.relay_backoff_ms = Some(v);
    }
    if let Some(v) = env_parse(
        env,
        "KLING_AUDIT_CALLBACKS_WEBHOOK_TOLERANCE_SECS",
        "a whole number of seconds",
    )? {
        raw.callbacks.webhook_tolerance_secs = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_MAX_BODY_BYTES", "a byte count")? {
        raw.server.max_body_bytes = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_MAX_BUFFERED_BYTES", "a byte count")? {
        raw.server.max_buffered_bytes = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_MAX_BODY_VALUES", "a count")? {
        raw.server.max_body_values = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_HEADER_TIMEOUT_MS", MS)? {
        raw.server.header_timeout_ms = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_BODY_TIMEOUT_MS", MS)? {
        raw.server.body_timeout_ms = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_MAX_CONNECTIONS", "a whole number")? {
        raw.server.max_connections = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_SHUTDOWN_GRACE_MS", MS)? {
        raw.server.shutdown_grace_ms = Some(v);
    }
    if let Some(v) = env_parse(env, "KLING_AUDIT_SERVER_WORKER_THREADS", "a whole number")? {
        raw.server.worker_threads = Some(v);
    }
    Ok(())
}

/// A secret from `VAR`, else from the file named by `VAR_FILE`, else from the file the config
/// names. Surrounding whitespace (a trailing newline in a mounted secret) is removed.
fn secret(
    env: &HashMap<String, String>,
    var: &str,
    file_key: &str,
    file_from_config: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(v) = env.get(var) {
        return non_empty_secret(v, var);
    }
    let file_var = format!("{var}_FILE");
    let (source_name, path) = match (env.get(&file_var), file_from_config) {
        (Some(p), _) => (file_var, PathBuf::from(p)),
        (None, Some(p)) => (file_key.to_owned(), p.to_path_buf()),
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
        source_name: source_name.clone(),
        path: path.clone(),
        source,
    })?;
    non_empty_secret(&text, &source_name)
}

fn non_empty_secret(value: &str, name: &str) -> Result<Option<SecretString>, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::invalid(
            name,
            "is set but empty; remove it or give the secret",
        ));
    }
    Ok(Some(SecretString::new(trimmed)))
}

fn ms(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::invalid(key, "must be greater than 0")),
        Some(v) => Ok(Duration::from_millis(v)),
    }
}

fn parse_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim()).map_err(|e| {
        // A bare `host:port` (as `kling-audit sim` prints its address) needs its scheme.
        let hint = if text.trim().parse::<std::net::SocketAddr>().is_ok() {
            format!(
                "write http://{} for a plain-HTTP server such as `kling-audit sim`",
                text.trim()
            )
        } else {
            "write e.g. https://api-singapore.klingai.com".to_owned()
        };
        ConfigError::invalid(key, format!("{text:?} is not a URL ({e}); {hint}"))
    })?;
    check_base_url(key, &url)?;
    Ok(url)
}

fn resolve(raw: RawConfig, sources: &Sources) -> Result<GatewayConfig, ConfigError> {
    let env = &sources.env;
    let upstream_text = raw.upstream.url.as_deref().unwrap_or(DEFAULT_UPSTREAM);
    let url = parse_url("upstream.url", upstream_text)?;
    let keys_dir = sources.keys_dir.clone();
    let keys_dir_eff = keys_dir
        .clone()
        .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&sources.dir));
    let actors_file = raw
        .auth
        .actors_file
        .clone()
        .unwrap_or_else(|| keys_dir_eff.join(ACTORS_FILE_NAME));
    let mut cfg = GatewayConfig::defaults(sources.dir.clone(), keys_dir, actors_file, url);

    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    cfg.listen = listen_text.trim().parse().map_err(|_| {
        ConfigError::invalid(
            "listen",
            format!("{listen_text:?} is not an IP:port address; write e.g. 127.0.0.1:8080 (port 0 picks a free port)"),
        )
    })?;

    cfg.upstream.timeout = ms(
        "upstream.timeout_ms",
        raw.upstream.timeout_ms,
        cfg.upstream.timeout,
    )?;
    cfg.upstream.connect_timeout = ms(
        "upstream.connect_timeout_ms",
        raw.upstream.connect_timeout_ms,
        cfg.upstream.connect_timeout,
    )?;
    let access_key = env_str(env, "KLING_ACCESS_KEY")
        .or(raw.upstream.access_key.clone())
        .map(|s| s.trim().to_owned());
    let secret_key = secret(
        env,
        "KLING_SECRET_KEY",
        "upstream.secret_key_file",
        raw.upstream.secret_key_file.as_deref(),
    )?;
    let api_key = secret(
        env,
        "KLING_API_KEY",
        "upstream.api_key_file",
        raw.upstream.api_key_file.as_deref(),
    )?;
    cfg.upstream.credentials = match (access_key, secret_key) {
        (Some(access_key), Some(secret_key)) => Some(OrgCredentials {
            access_key,
            secret_key,
            api_key,
        }),
        (None, None) if api_key.is_none() => None,
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "KLING_SECRET_KEY",
                "the organisation's access key is set but its secret key is not: set \
                 KLING_SECRET_KEY or KLING_SECRET_KEY_FILE (or upstream.secret_key_file)",
            ))
        }
        _ => {
            return Err(ConfigError::invalid(
                "KLING_ACCESS_KEY",
                "a secret key or API key is set but the access key is not: set \
                 KLING_ACCESS_KEY (or upstream.access_key)",
            ))
        }
    };

    if let Some(mode) = &raw.auth.mode {
        cfg.auth.mode = match mode.as_str() {
            "actors" => AuthMode::Actors,
            "passthrough" => AuthMode::Passthrough,
            other => {
                return Err(ConfigError::invalid(
                    "auth.mode",
                    format!("{other:?} is not a mode; use \"actors\" or \"passthrough\""),
                ))
            }
        };
    }
    if let Some(v) = raw.auth.leeway_secs {
        cfg.auth.leeway_secs = v;
    }
    cfg.auth.max_token_lifetime_secs = raw.auth.max_token_lifetime_secs;

    if let Some(mode) = &raw.audit.on_failure {
        cfg.audit.on_failure = match mode.as_str() {
            "fail-closed" => FailureMode::FailClosed,
            "fail-open" => FailureMode::FailOpen,
            other => {
                return Err(ConfigError::invalid(
                    "audit.on_failure",
                    format!("{other:?} is not a mode; use \"fail-closed\" or \"fail-open\""),
                ))
            }
        };
    }
    if let Some(d) = &raw.audit.durability {
        cfg.audit.durability = d
            .parse()
            .map_err(|e: String| ConfigError::invalid("audit.durability", e))?;
    }
    if let Some(v) = raw.audit.inline_appends {
        cfg.audit.inline_appends = v;
    }
    if let Some(v) = raw.audit.max_segment_bytes {
        if v < 4096 {
            return Err(ConfigError::invalid(
                "audit.max_segment_bytes",
                "must be at least 4096",
            ));
        }
        cfg.audit.max_segment_bytes = Some(v);
    }
    if let Some(v) = raw.audit.message_max_chars {
        cfg.audit.message_max_chars = v;
    }
    cfg.audit.reopen_interval = ms(
        "audit.reopen_interval_ms",
        raw.audit.reopen_interval_ms,
        cfg.audit.reopen_interval,
    )?;
    for spec in raw.audit.witnesses.iter().flatten() {
        kling_audit_witness::pusher::WitnessTarget::parse(spec).map_err(|e| {
            ConfigError::invalid(
                "audit.witnesses",
                format!("{spec:?}: {e}; write URL=VERIFIER_KEY"),
            )
        })?;
        cfg.audit.witnesses.push(spec.clone());
    }

    if let Some(p) = &raw.tasks.unknown {
        cfg.tasks.unknown = match p.as_str() {
            "deny" => UnknownTaskPolicy::Deny,
            "forward" => UnknownTaskPolicy::Forward,
            other => {
                return Err(ConfigError::invalid(
                    "tasks.unknown",
                    format!("{other:?} is not a policy; use \"deny\" or \"forward\""),
                ))
            }
        };
    }

    if let Some(u) = &raw.callbacks.public_url {
        cfg.callbacks.public_url = Some(parse_url("callbacks.public_url", u)?);
    }
    if let Some(v) = raw.callbacks.relay_attempts {
        cfg.callbacks.relay_attempts = v;
    }
    cfg.callbacks.relay_timeout = ms(
        "callbacks.relay_timeout_ms",
        raw.callbacks.relay_timeout_ms,
        cfg.callbacks.relay_timeout,
    )?;
    if let Some(v) = raw.callbacks.relay_backoff_ms {
        cfg.callbacks.relay_backoff = Duration::from_millis(v);
    }
    if let Some(v) = raw.callbacks.webhook_tolerance_secs {
        if v <= 0 {
            return Err(ConfigError::invalid(
                "callbacks.webhook_tolerance_secs",
                "must be positive",
            ));
        }
        cfg.callbacks.webhook_tolerance_secs = v;
    }
    cfg.callbacks.webhook_secret = secret(
        env,
        "KLING_AUDIT_WEBHOOK_SECRET",
        "callbacks.webhook_secret_file",
        raw.callbacks.webhook_secret_file.as_deref(),
    )?;

    if let Some(v) = raw.server.max_body_bytes {
        cfg.server.max_body_bytes = v;
    }
    if let Some(v) = raw.server.max_buffered_bytes {
        cfg.server.max_buffered_bytes = Some(v);
    }
    if let Some(v) = raw.server.max_body_values {
        cfg.server.max_body_values = v;
    }
    if let Some(v) = raw.server.header_timeout_ms {
        cfg.server.header_timeout = Duration::from_millis(v);
    }
    if let Some(v) = raw.server.body_timeout_ms {
        cfg.server.body_timeout = Duration::from_millis(v);
    }
    if let Some(v) = raw.server.max_connections {
        cfg.server.max_connections = v;
    }
    if let Some(v) = raw.server.shutdown_grace_ms {
        cfg.server.shutdown_grace = Duration::from_millis(v);
    }
    if let Some(v) = raw.server.worker_threads {
        cfg.server.worker_threads = Some(v);
    }
    cfg.admin_token = secret(
        env,
        "KLING_AUDIT_ADMIN_TOKEN",
        "admin.token_file",
        raw.admin.token_file.as_deref(),
    )?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(file: Option<PathBuf>, env: &[(&str, &str)]) -> Sources {
        Sources {
            file,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            overrides: Overrides::default(),
            dir: PathBuf::from("ledger"),
            keys_dir: None,
        }
    }

    const KEYS: [(&str, &str); 2] = [
        ("KLING_ACCESS_KEY", "org-ak"),
        ("KLING_SECRET_KEY", "org-sk-0123456789"),
    ];

    #[test]
    fn defaults_with_env_keys() {
        let cfg = load(&sources(None, &KEYS)).unwrap();
        assert_eq!(
            cfg.upstream.url.as_str(),
            "https://api-singapore.klingai.com/"
        );
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.auth.mode, AuthMode::Actors);
        assert_eq!(cfg.audit.on_failure, FailureMode::FailClosed);
        let creds = cfg.upstream.credentials.unwrap();
        assert_eq!(creds.access_key, "org-ak");
        assert_eq!(creds.secret_key.expose(), "org-sk-0123456789");
        assert!(cfg.auth.actors_file.ends_with("ledger.keys/actors.json"));
    }

    #[test]
    fn a_missing_api_key_is_a_warning_for_the_new_standard_routes() {
        // The open-file limit of the machine running the test may add a warning of its own.
        let about_api_key = |cfg: GatewayConfig| {
            cfg.warnings()
                .into_iter()
                .filter(|w| w.contains("KLING_API_KEY"))
                .count()
        };
        assert_eq!(about_api_key(load(&sources(None, &KEYS)).unwrap()), 1);
        let mut env = KEYS.to_vec();
        env.push(("KLING_API_KEY", "org-api-key-0123"));
        assert_eq!(about_api_key(load(&sources(None, &env)).unwrap()), 0);
        let passthrough = load(&sources(None, &[("KLING_AUDIT_AUTH_MODE", "passthrough")]));
        assert_eq!(about_api_key(passthrough.unwrap()), 0);
    }

    #[test]
    fn connection_and_body_limits_are_checked() {
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_SERVER_MAX_BODY_BYTES", "4096"));
        env.push(("KLING_AUDIT_SERVER_MAX_BUFFERED_BYTES", "2048"));
        let err = load(&sources(None, &env)).unwrap_err().to_string();
        assert!(err.contains("server.max_buffered_bytes"), "{err}");
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_SERVER_HEADER_TIMEOUT_MS", "0"));
        let err = load(&sources(None, &env)).unwrap_err().to_string();
        assert!(err.contains("server.header_timeout_ms"), "{err}");
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_SERVER_MAX_CONNECTIONS", "12"));
        env.push(("KLING_AUDIT_SERVER_HEADER_TIMEOUT_MS", "1500"));
        let cfg = load(&sources(None, &env)).unwrap();
        assert_eq!(cfg.server.max_connections, 12);
        assert_eq!(cfg.server.header_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.server.buffered_bytes(), 256 * 1024 * 1024);
    }

    #[test]
    fn limits_that_keep_bodies_and_records_bounded_are_checked() {
        for (var, value, key) in [
            (
                "KLING_AUDIT_SERVER_MAX_BODY_VALUES",
                "999",
                "server.max_body_values",
            ),
            (
                "KLING_AUDIT_AUDIT_MESSAGE_MAX_CHARS",
                "65537",
                "audit.message_max_chars",
            ),
            (
                "KLING_AUDIT_AUDIT_MESSAGE_MAX_CHARS",
                "0",
                "audit.message_max_chars",
            ),
        ] {
            let mut env = KEYS.to_vec();
            env.push((var, value));
            let err = load(&sources(None, &env)).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let cfg = load(&sources(None, &KEYS)).unwrap();
        assert_eq!(cfg.server.max_body_values, DEFAULT_MAX_BODY_VALUES);
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_SERVER_MAX_BODY_VALUES", "5000"));
        env.push(("KLING_AUDIT_AUDIT_MESSAGE_MAX_CHARS", "65536"));
        let cfg = load(&sources(None, &env)).unwrap();
        assert_eq!(cfg.server.max_body_values, 5000);
        assert_eq!(cfg.audit.message_max_chars, 65536);
    }

    #[test]
    fn an_upstream_url_with_credentials_is_refused_without_echoing_them() {
        let mut env = KEYS.to_vec();
        env.push((
            "KLING_AUDIT_UPSTREAM_URL",
            "https://user:hunter2@api.example/",
        ));
        let err = load(&sources(None, &env)).unwrap_err().to_string();
        assert!(
            err.contains("upstream.url") && err.contains("user name or password"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn worker_threads_default_to_one_per_cpu_and_are_checked() {
        let cfg = load(&sources(None, &KEYS)).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(cfg.server.worker_threads(), cpus);
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_SERVER_WORKER_THREADS", "3"));
        assert_eq!(
            load(&sources(None, &env)).unwrap().server.worker_threads(),
            3
        );
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_SERVER_WORKER_THREADS", "0"));
        let err = load(&sources(None, &env)).unwrap_err().to_string();
        assert!(err.contains("server.worker_threads"), "{err}");
    }

    #[test]
    fn an_actor_store_or_keys_directory_inside_the_ledger_directory_is_refused() {
        let mut env = KEYS.to_vec();
        env.push(("KLING_AUDIT_AUTH_ACTORS_FILE", "ledger/actors.json"));
        let err = load(&sources(None, &env)).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "auth.actors_file (KLING_AUDIT_AUTH_ACTORS_FILE): ledger/actors.json is inside \
                 the ledger directory ledger: "
            ),
            "{err}"
        );
        let err = actors_file(&sources(None, &env)).unwrap_err().to_string();
        assert!(err.contains("is inside the ledger directory"), "{err}");
        // Beside the ledger is fine.
        env.pop();
        env.push(("KLING_AUDIT_AUTH_ACTORS_FILE", "ledger.actors.json"));
        load(&sources(None, &env)).unwrap();
        // Keys inside the ledger directory: refused before anything is opened.
        let mut s = sources(None, &KEYS);
        s.keys_dir = Some(PathBuf::from("ledger/./keys"));
        let err = load(&s).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "--keys-dir (KLING_AUDIT_KEYS_DIR): the keys directory ledger/./keys is inside \
                 the ledger directory ledger"
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_org_key_in_actor_mode_says_what_to_set() {
        let err = load(&sources(None, &[])).unwrap_err().to_string();
        assert!(err.contains("KLING_ACCESS_KEY"), "{err}");
        let ok = load(&sources(None, &[("KLING_AUDIT_AUTH_MODE", "passthrough")])).unwrap();
        assert_eq!(ok.auth.mode, AuthMode::Passthrough);
        assert!(ok.upstream.credentials.is_none());
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sk = dir.path().join("sk");
        std::fs::write(&sk, "file-secret-key\n").unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:9000\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
                 access_key = \"file-ak\"\nsecret_key_file = {:?}\n\
                 [audit]\non_failure = \"fail-open\"\n[callbacks]\nrelay_attempts = 5\n",
                sk.display().to_string()
            ),
        )
        .unwrap();
        let mut src = sources(
            Some(path.clone()),
            &[("KLING_AUDIT_LISTEN", "127.0.0.1:9001")],
        );
        let cfg = load(&src).unwrap();
        assert_eq!(cfg.listen.port(), 9001, "env beats the file");
        assert_eq!(cfg.upstream.url.as_str(), "http://127.0.0.1:1/");
        assert_eq!(cfg.audit.on_failure, FailureMode::FailOpen);
        assert!(
            cfg.audit.inline_appends,
            "a call alone writes its records inline by default"
        );
        assert_eq!(cfg.callbacks.relay_attempts, 5);
        let creds = cfg.upstream.credentials.unwrap();
        assert_eq!(creds.access_key, "file-ak");
        assert_eq!(creds.secret_key.expose(), "file-secret-key");
        src.overrides.listen = Some("127.0.0.1:0".into());
        assert_eq!(load(&src).unwrap().listen.port(), 0, "flags beat env");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KLING_AUDIT_LISTEN", "nowhere")], "listen"),
            (&[("KLING_AUDIT_UPSTREAM_URL", "ftp://x")], "upstream.url"),
            (&[("KLING_AUDIT_UPSTREAM_URL", "not a url")], "upstream.url"),
            (
                &[("KLING_AUDIT_AUDIT_ON_FAILURE", "maybe")],
                "audit.on_failure",
            ),
            (&[("KLING_AUDIT_AUTH_MODE", "open")], "auth.mode"),
            (
                &[("KLING_AUDIT_AUDIT_INLINE_APPENDS", "sometimes")],
                "KLING_AUDIT_AUDIT_INLINE_APPENDS",
            ),
            (
                &[("KLING_AUDIT_UPSTREAM_TIMEOUT_MS", "soon")],
                "KLING_AUDIT_UPSTREAM_TIMEOUT_MS",
            ),
            (
                &[("KLING_AUDIT_UPSTREAM_TIMEOUT_MS", "0")],
                "upstream.timeout_ms",
            ),
            (
                &[("KLING_AUDIT_CALLBACKS_RELAY_ATTEMPTS", "0")],
                "callbacks.relay_attempts",
            ),
            (
                &[("KLING_AUDIT_WEBHOOK_SECRET", "whsec_!!")],
                "callbacks.webhook_secret",
            ),
            (&[("KLING_AUDIT_ADMIN_TOKEN", "short")], "admin.token"),
            (
                &[("KLING_SECRET_KEY_FILE", "/nonexistent/sk")],
                "KLING_SECRET_KEY_FILE",
            ),
        ];
        for (env, key) in cases {
            let mut all: Vec<(&str, &str)> = env.to_vec();
            if !env.iter().any(|(k, _)| k.starts_with("KLING_SECRET_KEY")) {
                all.extend_from_slice(&KEYS);
            } else {
                all.push(KEYS[0]);
            }
            let err = load(&sources(None, &all)).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, "[upstream]\nulr = \"http://x\"\n").unwrap();
        let err = load(&sources(Some(path), &KEYS)).unwrap_err().to_string();
        assert!(err.contains("ulr"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let cfg = load(&sources(
            None,
            &[
                KEYS[0],
                KEYS[1],
                ("KLING_AUDIT_ADMIN_TOKEN", "admin-token-0123456789"),
            ],
        ))
        .unwrap();
        let text = format!("{cfg:?}");
        assert!(!text.contains("org-sk-0123456789"));
        assert!(!text.contains("admin-token-0123456789"));
    }
}
