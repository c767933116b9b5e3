//! Configuration of `leadroute serve`: a TOML file, environment variables and flags,
//! resolved once into [`Settings`] with the precedence flags > env > file > defaults.
//!
//! Every value is validated here, before anything starts, and an error names the key
//! and where the bad value came from (`--listen`, `LEADROUTE_LISTEN`, or
//! `` `listen` in leadroute.toml ``). An empty environment variable counts as unset.
//! See `leadroute.example.toml` for a documented file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leadroute_engine::config::{
    DEFAULT_BACKUP_CAPTURE_BYTES, DEFAULT_MAX_IN_FLIGHT_LEADS, DEFAULT_STORE_LOCK_WAIT,
};
use leadroute_engine::{Durability, PluginLimits};
use serde::Deserialize;

use crate::auth::{Auth, Token};

/// Default listen address: loopback only, so an unconfigured server is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default JSON body limit.
pub const DEFAULT_JSON_BODY_BYTES: usize = 64 * 1024;
/// Default batch body limit: 1000 leads of ~8 KiB each.
pub const DEFAULT_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default plugin upload limit.
pub const DEFAULT_PLUGIN_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default wait for in-flight requests at shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// Largest accepted `max_in_flight_leads`.
pub const MAX_IN_FLIGHT_LEADS_LIMIT: u64 = 1_000_000;
/// Shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The TOML file, as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on, `IP:PORT`. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Directory of the store; created if missing. Default `./data`.
    pub data_dir: Option<PathBuf>,
    /// Directory `POST /admin/backups` writes backup files to; created if missing.
    /// Default `backups` inside the data directory.
    pub backup_dir: Option<PathBuf>,
    /// Backup files to keep in `backup_dir`: after each backup the oldest past this
    /// many are removed (0 keeps every file; 0-100000). Default 0.
    pub backup_keep: Option<u64>,
    /// Most bytes of writes a backup keeps in memory while it reads the store; past
    /// it the backup fails (1048576-68719476736). Default 1073741824 (1 GiB).
    pub backup_capture_bytes: Option<u64>,
    /// What a 2xx survives: `"process"` (a crash of the process) or `"power"` (also a
    /// power cut; an extra `fdatasync` per group commit). Default `"power"`.
    pub durability: Option<Durability>,
    /// Log filter when `RUST_LOG` is unset, e.g. `"info"` or
    /// `"leadroute_admin_api=debug,info"`. Default `"info"`.
    pub log_level: Option<String>,
    /// `"text"` (default) or `"json"` (one JSON object per line).
    pub log_format: Option<LogFormat>,
    /// Seconds to let in-flight requests finish at shutdown before connections are
    /// closed. Default 30.
    pub shutdown_timeout_secs: Option<u64>,
    /// Seconds to keep serving after SIGTERM/SIGINT, new connections included, while
    /// `/readyz` answers 503 `draining`, before the listener closes and the drain
    /// begins: the time a load balancer needs to take the server out of rotation
    /// (0-3600). Default 0.
    pub shutdown_delay_secs: Option<u64>,
    /// Seconds to wait at start for the store's lock while another process holds the
    /// data directory (1-86400). Default 10.
    pub store_lock_wait_secs: Option<u64>,
    /// Bearer tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Request body limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// The plugin sandbox.
    #[serde(default)]
    pub plugins: PluginsConfig,
}

/// The `[plugins]` table: what one plugin call, and plugins together, may use. The
/// largest module accepted is `limits.plugin_body_bytes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Fuel per call, about one unit per wasm instruction (1000-10000000000).
    /// Default 100000000, about 11 ms of a tight loop.
    pub fuel: Option<u64>,
    /// Wall-clock limit of one call, in milliseconds (1-10000). Default 100.
    pub call_timeout_ms: Option<u64>,
    /// Most linear memory one call may use, in bytes (1 MiB-1 GiB). Default 16777216.
    pub memory_bytes: Option<usize>,
    /// Plugin instances alive at once; a call past it falls back (1-256). Default 16.
    pub max_instances: Option<u32>,
    /// Modules compiling at once; an upload past it gets 503 `compile_busy` (1-16).
    /// Default 2.
    pub max_compiles: Option<usize>,
    /// Longest an upload's compile may take, in seconds (1-600). Default 10.
    pub compile_timeout_secs: Option<u64>,
    /// Consecutive failures that open a plugin's circuit (1-1000). Default 5.
    pub circuit_threshold: Option<u32>,
}

/// The `[webhooks]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Attempts per event before it becomes a dead letter (1-100). Default 8.
    pub max_attempts: Option<u32>,
    /// Seconds an attempt may take, connecting included (1-300). Default 10.
    pub timeout_secs: Option<u64>,
}

/// The `[auth]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Opens `/admin/*` and `/v1/*`. At least 16 characters.
    pub admin_token: Option<String>,
    /// Opens `/v1/*` only. At least 16 characters; needs an admin token too.
    pub intake_token: Option<String>,
}

/// The `[limits]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest JSON body, in bytes. Default 65536 (64 KiB).
    pub json_body_bytes: Option<usize>,
    /// Largest `POST /v1/leads/batch` body, in bytes. Default 8388608 (8 MiB).
    pub batch_body_bytes: Option<usize>,
    /// Largest plugin upload, in bytes. Default 8388608 (8 MiB).
    pub plugin_body_bytes: Option<usize>,
    /// Most leads in flight (admitted, not yet durably answered) across intake,
    /// batches and lead events; past it they are refused at once with 503
    /// `overloaded` and `Retry-After: 1`. A batch counts its leads. Default 256
    /// (see benches/README.md, "Overload"); 1 to 1000000.
    pub max_in_flight_leads: Option<usize>,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Values given as flags; `None` when the flag is absent.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--config`
    pub config: Option<PathBuf>,
    /// `--durability`
    pub durability: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
    /// `--log-format`
    pub log_format: Option<String>,
    /// `--max-in-flight-leads`
    pub max_in_flight_leads: Option<String>,
}

/// Body limits in force, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// JSON bodies.
    pub json_body_bytes: usize,
    /// Batch intake bodies.
    pub batch_body_bytes: usize,
    /// Plugin uploads.
    pub plugin_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_body_bytes: DEFAULT_JSON_BODY_BYTES,
            batch_body_bytes: DEFAULT_BATCH_BODY_BYTES,
            plugin_body_bytes: DEFAULT_PLUGIN_BODY_BYTES,
        }
    }
}

/// The resolved, validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Store directory.
    pub data_dir: PathBuf,
    /// Where backups are written.
    pub backup_dir: PathBuf,
    /// Backup files kept in `backup_dir` after each backup (0: every file).
    pub backup_keep: usize,
    /// Most bytes of writes a backup's read may capture.
    pub backup_capture_bytes: u64,
    /// What a 2xx survives.
    pub durability: Durability,
    /// Log filter used when `RUST_LOG` is unset.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Tokens.
    pub auth: Auth,
    /// Body limits.
    pub limits: Limits,
    /// Wait for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Serving on at shutdown, `/readyz` answering 503, before the listener closes.
    pub shutdown_delay: Duration,
    /// Longest wait at start for the store's lock.
    pub store_lock_wait: Duration,
    /// How webhook deliveries are attempted.
    pub webhooks: crate::webhooks::Policy,
    /// Most leads in flight before intake answers 503 `overloaded`.
    pub max_in_flight_leads: usize,
    /// The plugin sandbox's limits (`max_module_bytes` is the plugin body limit).
    pub plugins: PluginLimits,
    /// The file read, if any.
    pub config_file: Option<PathBuf>,
}

/// A configuration problem, naming the key and the source of the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl FileConfig {
    /// Reads and parses a TOML file; unknown keys are errors.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        FileConfig::parse(&text)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| in_words(e.to_string().trim_end()))
    }
}

/// A TOML error with serde's Rust type names (`expected u64`) said in words: the
/// reader of a config error need not know Rust.
fn in_words(message: &str) -> String {
    ["u64", "u32", "usize"]
        .iter()
        .fold(message.to_string(), |m, rust| {
            m.replace(
                &format!("expected {rust}"),
                "expected a whole number, 0 or more",
            )
        })
}

/// One candidate value and where it came from.
type Candidate<T> = Option<(Result<T, String>, String)>;

/// The first value given, by precedence; `default` when none is.
fn pick<T>(candidates: [Candidate<T>; 3], default: T) -> Result<(T, String), ConfigError> {
    match candidates.into_iter().flatten().next() {
        Some((Ok(v), from)) => Ok((v, from)),
        Some((Err(message), from)) => Err(ConfigError(format!("{from}: {message}"))),
        None => Ok((default, "the default".to_string())),
    }
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "process" => Ok(Durability::Process),
        "power" => Ok(Durability::Power),
        _ => Err(format!(
            "{s:?} is not a durability: use \"process\" or \"power\""
        )),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "{s:?} is not a log format: use \"text\" or \"json\""
        )),
    }
}

fn parse_number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn check_token(token: String, from: &str) -> Result<Token, ConfigError> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(ConfigError(format!(
            "{from}: a token must be at least {MIN_TOKEN_LEN} characters \
             (generate one with `openssl rand -hex 32`)"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "{from}: a token may only hold visible ASCII characters (no spaces)"
        )));
    }
    Ok(Token::new(token))
}

fn check_range(
    value: u64,
    from: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{from}: {value} is out of range: use {} to {}",
            range.start(),
            range.end()
        )))
    }
}

/// A numeric setting without a flag: its environment variable `env_name` beats the
/// file's `key` (`value`), which beats `default`; the value must lie in `range`.
fn env_or_file(
    env: &dyn Fn(&str) -> Option<String>,
    in_file: &dyn Fn(&str) -> String,
    (env_name, key): (&str, &str),
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let (n, from) = pick(
        [
            None,
            env(env_name).map(|v| (parse_number::<u64>(&v), env_name.to_string())),
            value.map(|v| (Ok(v), in_file(key))),
        ],
        default,
    )?;
    check_range(n, &from, range)?;
    Ok(n)
}

impl Settings {
    /// Resolves flags, the environment (looked up through `env`) and the config file
    /// (from `--config` or `LEADROUTE_CONFIG`) into validated settings.
    pub fn resolve(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        // Empty variables are unset: `FOO= leadroute serve` must not mean "empty token".
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let config_file = flags
            .config
            .clone()
            .or_else(|| env("LEADROUTE_CONFIG").map(PathBuf::from));
        let file = match &config_file {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let in_file = |key: &str| match &config_file {
            Some(path) => format!("`{key}` in {}", path.display()),
            None => key.to_string(),
        };
        let flag = |value: Option<String>, name: &str| value.map(|v| (Ok(v), name.to_string()));
        let var = |name: &str| env(name).map(|v| (Ok(v), name.to_string()));
        let from_file = |value: Option<String>, key: &str| value.map(|v| (Ok(v), in_file(key)));

        let (listen, from) = pick(
            [
                flag(flags.listen.clone(), "--listen"),
                var("LEADROUTE_LISTEN"),
                from_file(file.listen, "listen"),
            ],
            DEFAULT_LISTEN.to_string(),
        )?;
        let listen: SocketAddr = listen.trim().parse().map_err(|_| {
            ConfigError(format!(
                "{from}: {listen:?} is not an address: use IP:PORT, e.g. 127.0.0.1:8080"
            ))
        })?;

        let (data_dir, from) = pick(
            [
                flags
                    .data_dir
                    .clone()
                    .map(|v| (Ok(v), "--data-dir".to_string())),
                env("LEADROUTE_DATA_DIR")
                    .map(|v| (Ok(PathBuf::from(v)), "LEADROUTE_DATA_DIR".into())),
                file.data_dir.map(|v| (Ok(v), in_file("data_dir"))),
            ],
            PathBuf::from(DEFAULT_DATA_DIR),
        )?;
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "{from}: the data directory must not be empty"
            )));
        }
        let (backup_dir, from) = pick(
            [
                None,
                env("LEADROUTE_BACKUP_DIR")
                    .map(|v| (Ok(PathBuf::from(v)), "LEADROUTE_BACKUP_DIR".into())),
                file.backup_dir.map(|v| (Ok(v), in_file("backup_dir"))),
            ],
            data_dir.join("backups"),
        )?;
        if backup_dir.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "{from}: the backup directory must not be empty"
            )));
        }

        let (durability, _) = pick(
            [
                flags
                    .durability
                    .as_deref()
                    .map(|v| (parse_durability(v), "--durability".to_string())),
                env("LEADROUTE_DURABILITY")
                    .map(|v| (parse_durability(&v), "LEADROUTE_DURABILITY".to_string())),
                file.durability.map(|v| (Ok(v), in_file("durability"))),
            ],
            Durability::default(),
        )?;

        let (log_level, from) = pick(
            [
                flag(flags.log_level.clone(), "--log-level"),
                var("LEADROUTE_LOG_LEVEL"),
                from_file(file.log_level, "log_level"),
            ],
            "info".to_string(),
        )?;
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| ConfigError(format!("{from}: {log_level:?} is not a log filter: {e}")))?;

        let (log_format, _) = pick(
            [
                flags
                    .log_format
                    .as_deref()
                    .map(|v| (parse_log_format(v), "--log-format".to_string())),
                env("LEADROUTE_LOG_FORMAT")
                    .map(|v| (parse_log_format(&v), "LEADROUTE_LOG_FORMAT".to_string())),
                file.log_format.map(|v| (Ok(v), in_file("log_format"))),
            ],
            LogFormat::default(),
        )?;

        let shutdown_secs = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_SHUTDOWN_TIMEOUT_SECS", "shutdown_timeout_secs"),
            file.shutdown_timeout_secs,
            DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            0..=3600,
        )?;
        let shutdown_delay_secs = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_SHUTDOWN_DELAY_SECS", "shutdown_delay_secs"),
            file.shutdown_delay_secs,
            0,
            0..=3600,
        )?;
        let backup_keep = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_BACKUP_KEEP", "backup_keep"),
            file.backup_keep,
            0,
            0..=100_000,
        )?;
        let backup_capture_bytes = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_BACKUP_CAPTURE_BYTES", "backup_capture_bytes"),
            file.backup_capture_bytes,
            DEFAULT_BACKUP_CAPTURE_BYTES,
            1 << 20..=64 << 30,
        )?;
        // At least a second: a restart that begins while the old process still makes
        // its last commits durable must be able to wait for it.
        let lock_wait_secs = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_STORE_LOCK_WAIT_SECS", "store_lock_wait_secs"),
            file.store_lock_wait_secs,
            DEFAULT_STORE_LOCK_WAIT.as_secs(),
            1..=86_400,
        )?;

        let limit = |env_name: &str, value: Option<usize>, key: &str, default: usize| {
            let (n, from) = pick(
                [
                    None,
                    env(env_name).map(|v| (parse_number::<usize>(&v), env_name.to_string())),
                    value.map(|v| (Ok(v), in_file(key))),
                ],
                default,
            )?;
            check_range(n as u64, &from, 1024..=256 * 1024 * 1024)?;
            Ok::<usize, ConfigError>(n)
        };
        let limits = Limits {
            json_body_bytes: limit(
                "LEADROUTE_JSON_BODY_BYTES",
                file.limits.json_body_bytes,
                "limits.json_body_bytes",
                DEFAULT_JSON_BODY_BYTES,
            )?,
            batch_body_bytes: limit(
                "LEADROUTE_BATCH_BODY_BYTES",
                file.limits.batch_body_bytes,
                "limits.batch_body_bytes",
                DEFAULT_BATCH_BODY_BYTES,
            )?,
            plugin_body_bytes: limit(
                "LEADROUTE_PLUGIN_BODY_BYTES",
                file.limits.plugin_body_bytes,
                "limits.plugin_body_bytes",
                DEFAULT_PLUGIN_BODY_BYTES,
            )?,
        };

        let max_attempts = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_WEBHOOK_MAX_ATTEMPTS", "webhooks.max_attempts"),
            file.webhooks.max_attempts.map(u64::from),
            u64::from(crate::webhooks::Policy::default().max_attempts),
            1..=100,
        )?;
        let timeout_secs = env_or_file(
            &env,
            &in_file,
            ("LEADROUTE_WEBHOOK_TIMEOUT_SECS", "webhooks.timeout_secs"),
            file.webhooks.timeout_secs,
            crate::webhooks::Policy::default().timeout.as_secs(),
            1..=300,
        )?;
        let webhooks = crate::webhooks::Policy {
            max_attempts: max_attempts as u32,
            timeout: Duration::from_secs(timeout_secs),
            ..crate::webhooks::Policy::default()
        };
        let (max_in_flight_leads, from) = pick(
            [
                flags
                    .max_in_flight_leads
                    .as_deref()
                    .map(|v| (parse_number(v), "--max-in-flight-leads".to_string())),
                env("LEADROUTE_MAX_IN_FLIGHT_LEADS").map(|v| {
                    (
                        parse_number(&v),
                        "LEADROUTE_MAX_IN_FLIGHT_LEADS".to_string(),
                    )
                }),
                file.limits
                    .max_in_flight_leads
                    .map(|v| (Ok(v), in_file("limits.max_in_flight_leads"))),
            ],
            DEFAULT_MAX_IN_FLIGHT_LEADS,
        )?;
        check_range(
            max_in_flight_leads as u64,
            &from,
            1..=MAX_IN_FLIGHT_LEADS_LIMIT,
        )?;

        let plugins = resolve_plugins(&file.plugins, &env, &in_file, &limits)?;

        let token = |env_name: &str, value: Option<String>, key: &str| match pick(
            [None, var(env_name), from_file(value, key)],
            String::new(),
        )? {
            (t, _) if t.is_empty() => Ok(None),
            (t, from) => check_token(t, &from).map(Some),
        };
        let auth = Auth {
            admin: token(
                "LEADROUTE_ADMIN_TOKEN",
                file.auth.admin_token,
                "auth.admin_token",
            )?,
            intake: token(
                "LEADROUTE_INTAKE_TOKEN",
                file.auth.intake_token,
                "auth.intake_token",
            )?,
        };
        if auth.admin.is_none() && auth.intake.is_some() {
            return Err(ConfigError(
                "an intake token is set but no admin token (LEADROUTE_ADMIN_TOKEN or \
                 auth.admin_token): the admin API would be unreachable"
                    .into(),
            ));
        }
        if auth.admin.is_some() && auth.admin == auth.intake {
            return Err(ConfigError(
                "the admin and intake tokens are the same: intake clients would be admins".into(),
            ));
        }
        if auth.is_open() && !listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "refusing to listen on {listen} without tokens: anyone who can reach it could \
                 change the routing. Set LEADROUTE_ADMIN_TOKEN (and LEADROUTE_INTAKE_TOKEN) or \
                 [auth] in the config file, or listen on a loopback address such as 127.0.0.1"
            )));
        }

        Ok(Settings {
            listen,
            data_dir,
            backup_dir,
            backup_keep: backup_keep as usize,
            backup_capture_bytes,
            durability,
            log_level,
            log_format,
            auth,
            limits,
            shutdown_timeout: Duration::from_secs(shutdown_secs),
            shutdown_delay: Duration::from_secs(shutdown_delay_secs),
            store_lock_wait: Duration::from_secs(lock_wait_secs),
            webhooks,
            max_in_flight_leads,
            plugins,
            config_file,
        })
    }
}

/// The `[plugins]` table and its environment variables, over the engine's defaults.
fn resolve_plugins(
    file: &PluginsConfig,
    env: &dyn Fn(&str) -> Option<String>,
    in_file: &dyn Fn(&str) -> String,
    limits: &Limits,
) -> Result<PluginLimits, ConfigError> {
    let defaults = PluginLimits::default();
    // One key of `[plugins]`, and its `LEADROUTE_PLUGIN_*` variable.
    let number = |key: &str, value: Option<u64>, default: u64, range| {
        let env_name = format!("LEADROUTE_PLUGIN_{}", key.to_ascii_uppercase());
        let key = format!("plugins.{key}");
        env_or_file(env, in_file, (&env_name, &key), value, default, range)
    };
    let memory_bytes = number(
        "memory_bytes",
        file.memory_bytes.map(|v| v as u64),
        defaults.memory_bytes as u64,
        1 << 20..=1 << 30,
    )? as usize;
    Ok(PluginLimits {
        fuel: number("fuel", file.fuel, defaults.fuel, 1_000..=10_000_000_000)?,
        deadline: Duration::from_millis(number(
            "call_timeout_ms",
            file.call_timeout_ms,
            defaults.deadline.as_millis() as u64,
            1..=10_000,
        )?),
        memory_bytes,
        // What the server lets through, the sandbox takes.
        max_module_bytes: limits.plugin_body_bytes,
        compile_timeout: Duration::from_secs(number(
            "compile_timeout_secs",
            file.compile_timeout_secs,
            defaults.compile_timeout.as_secs(),
            1..=600,
        )?),
        max_compiles: number(
            "max_compiles",
            file.max_compiles.map(|v| v as u64),
            defaults.max_compiles as u64,
            1..=16,
        )? as usize,
        max_instances: number(
            "max_instances",
            file.max_instances.map(u64::from),
            u64::from(defaults.max_instances),
            1..=256,
        )? as u32,
        // Kept resident between calls: never more than a call may use.
        keep_resident_bytes: defaults.keep_resident_bytes.min(memory_bytes),
        circuit_threshold: number(
            "circuit_threshold",
            file.circuit_threshold.map(u64::from),
            u64::from(defaults.circuit_threshold),
            1..=1000,
        )? as u32,
        ..defaults
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(flags: &Flags, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(flags, &|name| vars.get(name).cloned())
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leadroute.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn nothing_configured_means_loopback_and_data() {
        let s = resolve(&Flags::default(), &[]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.backup_dir, PathBuf::from("./data/backups"));
        assert_eq!(s.durability, Durability::Power);
        assert_eq!(s.limits, Limits::default());
        assert!(s.auth.is_open());
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn max_in_flight_leads_comes_from_flag_env_or_file_and_is_checked() {
        assert_eq!(
            resolve(&Flags::default(), &[]).unwrap().max_in_flight_leads,
            DEFAULT_MAX_IN_FLIGHT_LEADS
        );
        let (_dir, path) = file("[limits]\nmax_in_flight_leads = 32\n");
        let config = path.to_str().unwrap();
        let s = resolve(&Flags::default(), &[("LEADROUTE_CONFIG", config)]).unwrap();
        assert_eq!(s.max_in_flight_leads, 32);
        let vars = [
            ("LEADROUTE_CONFIG", config),
            ("LEADROUTE_MAX_IN_FLIGHT_LEADS", "64"),
        ];
        assert_eq!(
            resolve(&Flags::default(), &vars)
                .unwrap()
                .max_in_flight_leads,
            64
        );
        let flags = Flags {
            max_in_flight_leads: Some("8".into()),
            ..Flags::default()
        };
        assert_eq!(resolve(&flags, &vars).unwrap().max_in_flight_leads, 8);

        let zero = Flags {
            max_in_flight_leads: Some("0".into()),
            ..Flags::default()
        };
        let e = resolve(&zero, &[]).unwrap_err().to_string();
        assert!(
            e.contains("--max-in-flight-leads") && e.contains("out of range"),
            "{e}"
        );
        let e = resolve(
            &Flags::default(),
            &[("LEADROUTE_MAX_IN_FLIGHT_LEADS", "lots")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("LEADROUTE_MAX_IN_FLIGHT_LEADS") && e.contains("whole number"),
            "{e}"
        );
    }

    #[test]
    fn plugin_limits_come_from_env_or_file_and_are_checked() {
        let s = resolve(&Flags::default(), &[]).unwrap();
        assert_eq!(
            format!("{:?}", s.plugins),
            format!("{:?}", PluginLimits::default())
        );
        let (_dir, path) = file(
            "[limits]\nplugin_body_bytes = 4096\n\
             [plugins]\nfuel = 5000000\ncall_timeout_ms = 40\nmemory_bytes = 1048576\n\
             max_instances = 4\nmax_compiles = 1\ncompile_timeout_secs = 30\n\
             circuit_threshold = 9\n",
        );
        let config = path.to_str().unwrap();
        let vars = [
            ("LEADROUTE_CONFIG", config),
            ("LEADROUTE_PLUGIN_MAX_COMPILES", "3"),
        ];
        let p = resolve(&Flags::default(), &vars).unwrap().plugins;
        assert_eq!(p.fuel, 5_000_000);
        assert_eq!(p.deadline, Duration::from_millis(40));
        assert_eq!(p.memory_bytes, 1 << 20);
        assert_eq!(p.max_instances, 4);
        assert_eq!(p.max_compiles, 3, "the environment beats the file");
        assert_eq!(p.compile_timeout, Duration::from_secs(30));
        assert_eq!(p.circuit_threshold, 9);
        assert_eq!(p.max_module_bytes, 4096, "the upload limit");
        assert_eq!(
            p.keep_resident_bytes,
            1 << 20,
            "at most the memory a call has"
        );

        let err = |vars: &[(&str, &str)]| resolve(&Flags::default(), vars).unwrap_err().0;
        let e = err(&[("LEADROUTE_PLUGIN_MAX_COMPILES", "0")]);
        assert!(
            e.starts_with("LEADROUTE_PLUGIN_MAX_COMPILES:") && e.contains("1 to 16"),
            "{e}"
        );
        let e = err(&[("LEADROUTE_PLUGIN_FUEL", "lots")]);
        assert!(e.starts_with("LEADROUTE_PLUGIN_FUEL:"), "{e}");
        let (_dir, path) = file("[plugins]\nmemory_bytes = 1024\n");
        let e = err(&[("LEADROUTE_CONFIG", path.to_str().unwrap())]);
        assert!(
            e.contains("`plugins.memory_bytes` in") && e.contains("out of range"),
            "{e}"
        );
        let (_dir, path) = file("[plugins]\nfuell = 1\n");
        let e = err(&[("LEADROUTE_CONFIG", path.to_str().unwrap())]);
        assert!(e.contains("unknown field `fuell`"), "{e}");
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let (_dir, path) = file(
            "listen = \"127.0.0.1:3\"\ndata_dir = \"/file\"\ndurability = \"process\"\n\
             log_level = \"warn\"\n[limits]\njson_body_bytes = 2048\n",
        );
        let config = path.to_str().unwrap();
        let vars = [
            ("LEADROUTE_CONFIG", config),
            ("LEADROUTE_LISTEN", "127.0.0.1:2"),
            ("LEADROUTE_LOG_LEVEL", "debug"),
        ];
        let flags = Flags {
            listen: Some("127.0.0.1:1".into()),
            ..Flags::default()
        };
        let s = resolve(&flags, &vars).unwrap();
        assert_eq!(s.listen.port(), 1, "flag wins");
        assert_eq!(s.log_level, "debug", "env beats file");
        assert_eq!(s.data_dir, PathBuf::from("/file"), "file beats default");
        assert_eq!(
            s.backup_dir,
            PathBuf::from("/file/backups"),
            "inside the data dir"
        );
        assert_eq!(s.durability, Durability::Process);
        assert_eq!(s.limits.json_body_bytes, 2048);
        assert_eq!(s.limits.batch_body_bytes, DEFAULT_BATCH_BODY_BYTES);
        assert_eq!(s.config_file.as_deref(), Some(path.as_path()));

        let s = resolve(&Flags::default(), &vars).unwrap();
        assert_eq!(s.listen.port(), 2, "env beats file");
        let (_backups, backups) = file("backup_dir = \"/b/file\"\n");
        let backups = backups.to_str().unwrap();
        let s = resolve(&Flags::default(), &[("LEADROUTE_CONFIG", backups)]).unwrap();
        assert_eq!(s.backup_dir, PathBuf::from("/b/file"));
        let env = [
            ("LEADROUTE_CONFIG", backups),
            ("LEADROUTE_BACKUP_DIR", "/b/env"),
        ];
        let s = resolve(&Flags::default(), &env).unwrap();
        assert_eq!(s.backup_dir, PathBuf::from("/b/env"));
        let s = resolve(&Flags::default(), &[("LEADROUTE_CONFIG", config)]).unwrap();
        assert_eq!(s.listen.port(), 3);
    }

    #[test]
    fn errors_name_the_key_and_its_source() {
        let err = |flags: &Flags, vars: &[(&str, &str)]| resolve(flags, vars).unwrap_err().0;
        let e = err(&Flags::default(), &[("LEADROUTE_LISTEN", "localhost")]);
        assert!(e.starts_with("LEADROUTE_LISTEN:"), "{e}");
        let flags = Flags {
            durability: Some("disk".into()),
            ..Flags::default()
        };
        assert!(err(&flags, &[]).starts_with("--durability:"));
        let e = err(&Flags::default(), &[("LEADROUTE_JSON_BODY_BYTES", "12")]);
        assert!(
            e.contains("LEADROUTE_JSON_BODY_BYTES") && e.contains("out of range"),
            "{e}"
        );
        let e = err(&Flags::default(), &[("LEADROUTE_ADMIN_TOKEN", "short")]);
        assert!(e.starts_with("LEADROUTE_ADMIN_TOKEN:"), "{e}");
        let e = err(&Flags::default(), &[("LEADROUTE_LOG_LEVEL", "debug=[")]);
        assert!(e.starts_with("LEADROUTE_LOG_LEVEL:"), "{e}");

        let (_dir, path) = file("listen = \"127.0.0.1:1\"\ncolour = \"red\"\n");
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let e = err(&flags, &[]);
        assert!(e.contains("colour") && e.contains("leadroute.toml"), "{e}");

        let (_dir, path) = file("[limits]\nbatch_body_bytes = 1\n");
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let e = err(&flags, &[]);
        assert!(e.contains("`limits.batch_body_bytes` in"), "{e}");
    }

    #[test]
    fn tokens_are_checked_and_open_mode_stays_on_loopback() {
        let admin = "a".repeat(20);
        let intake = "i".repeat(20);
        let s = resolve(
            &Flags::default(),
            &[
                ("LEADROUTE_ADMIN_TOKEN", &admin),
                ("LEADROUTE_INTAKE_TOKEN", &intake),
                ("LEADROUTE_LISTEN", "0.0.0.0:8080"),
            ],
        )
        .unwrap();
        assert!(!s.auth.is_open());

        let e = resolve(&Flags::default(), &[("LEADROUTE_LISTEN", "0.0.0.0:8080")]).unwrap_err();
        assert!(e.0.contains("refusing to listen on 0.0.0.0:8080"), "{e}");
        let e = resolve(&Flags::default(), &[("LEADROUTE_INTAKE_TOKEN", &intake)]).unwrap_err();
        assert!(e.0.contains("no admin token"), "{e}");
        let e = resolve(
            &Flags::default(),
            &[
                ("LEADROUTE_ADMIN_TOKEN", &admin),
                ("LEADROUTE_INTAKE_TOKEN", &admin),
            ],
        )
        .unwrap_err();
        assert!(e.0.contains("the same"), "{e}");
        // Empty variables are unset.
        let s = resolve(&Flags::default(), &[("LEADROUTE_ADMIN_TOKEN", "")]).unwrap();
        assert!(s.auth.is_open());
        assert!(resolve(&Flags::default(), &[("LEADROUTE_LISTEN", "[::1]:9")]).is_ok());
    }

    #[test]
    fn the_example_config_parses_and_sets_every_key() {
        let text = include_str!("../leadroute.example.toml");
        let f = FileConfig::parse(text).unwrap();
        assert!(f.listen.is_some() && f.data_dir.is_some() && f.durability.is_some());
        assert!(f.log_level.is_some() && f.log_format.is_some());
        assert!(f.shutdown_timeout_secs.is_some() && f.store_lock_wait_secs.is_some());
        assert!(f.shutdown_delay_secs.is_some());
        assert!(f.backup_keep.is_some() && f.backup_capture_bytes.is_some());
        let l = &f.limits;
        assert!(l.json_body_bytes.is_some() && l.batch_body_bytes.is_some());
        assert!(l.plugin_body_bytes.is_some());
        assert!(f.webhooks.max_attempts.is_some() && f.webhooks.timeout_secs.is_some());
        let p = &f.plugins;
        assert!(p.fuel.is_some() && p.call_timeout_ms.is_some() && p.memory_bytes.is_some());
        assert!(p.max_instances.is_some() && p.max_compiles.is_some());
        assert!(p.compile_timeout_secs.is_some() && p.circuit_threshold.is_some());
        // And its values are the defaults it claims to show.
        let (_dir, path) = file(text);
        let s = resolve(
            &Flags::default(),
            &[("LEADROUTE_CONFIG", path.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", s.plugins),
            format!("{:?}", PluginLimits::default())
        );
        assert_eq!(s.store_lock_wait, DEFAULT_STORE_LOCK_WAIT);
        assert_eq!(s.shutdown_delay, Duration::ZERO);
        assert_eq!(s.backup_keep, 0);
        assert_eq!(s.backup_capture_bytes, DEFAULT_BACKUP_CAPTURE_BYTES);
        // The tokens are there, commented out; uncommented they must be valid too.
        let uncommented = text
            .replace("# admin_token", "admin_token")
            .replace("# intake_token", "intake_token")
            .replace("# backup_dir", "backup_dir");
        let f = FileConfig::parse(&uncommented).unwrap();
        assert!(f.auth.admin_token.is_some() && f.auth.intake_token.is_some());
        assert!(f.backup_dir.is_some());
        let (_dir, path) = file(&uncommented);
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let s = resolve(&flags, &[]).unwrap();
        assert!(!s.auth.is_open());
    }

    #[test]
    fn the_store_lock_wait_comes_from_env_or_file_and_is_range_checked() {
        let s = resolve(&Flags::default(), &[]).unwrap();
        assert_eq!(s.store_lock_wait, Duration::from_secs(10));
        let (_dir, path) = file("store_lock_wait_secs = 30\n");
        let config = path.to_str().unwrap();
        let s = resolve(&Flags::default(), &[("LEADROUTE_CONFIG", config)]).unwrap();
        assert_eq!(s.store_lock_wait, Duration::from_secs(30));
        let vars = [
            ("LEADROUTE_CONFIG", config),
            ("LEADROUTE_STORE_LOCK_WAIT_SECS", "3600"),
        ];
        let s = resolve(&Flags::default(), &vars).unwrap();
        assert_eq!(
            s.store_lock_wait,
            Duration::from_secs(3600),
            "the environment beats the file"
        );

        let err = |vars: &[(&str, &str)]| resolve(&Flags::default(), vars).unwrap_err().0;
        let e = err(&[("LEADROUTE_STORE_LOCK_WAIT_SECS", "0")]);
        assert!(
            e.starts_with("LEADROUTE_STORE_LOCK_WAIT_SECS: 0 is out of range: use 1 to 86400"),
            "{e}"
        );
        let e = err(&[("LEADROUTE_STORE_LOCK_WAIT_SECS", "10s")]);
        assert!(
            e.starts_with("LEADROUTE_STORE_LOCK_WAIT_SECS:") && e.contains("whole number"),
            "{e}"
        );
        let (_dir, path) = file("store_lock_wait_secs = 86401\n");
        let e = err(&[("LEADROUTE_CONFIG", path.to_str().unwrap())]);
        assert!(
            e.contains("`store_lock_wait_secs` in") && e.contains("out of range"),
            "{e}"
        );
    }

    #[test]
    fn backup_retention_and_capture_come_from_env_or_file_and_are_range_checked() {
        let s = resolve(&Flags::default(), &[]).unwrap();
        assert_eq!((s.backup_keep, s.backup_capture_bytes), (0, 1 << 30));
        let (_dir, path) = file("backup_keep = 7\nbackup_capture_bytes = 268435456\n");
        let config = path.to_str().unwrap();
        let s = resolve(&Flags::default(), &[("LEADROUTE_CONFIG", config)]).unwrap();
        assert_eq!((s.backup_keep, s.backup_capture_bytes), (7, 256 << 20));
        let vars = [
            ("LEADROUTE_CONFIG", config),
            ("LEADROUTE_BACKUP_KEEP", "30"),
        ];
        let s = resolve(&Flags::default(), &vars).unwrap();
        assert_eq!(s.backup_keep, 30, "the environment beats the file");

        let err = |vars: &[(&str, &str)]| resolve(&Flags::default(), vars).unwrap_err().0;
        let e = err(&[("LEADROUTE_BACKUP_KEEP", "100001")]);
        assert!(
            e.starts_with("LEADROUTE_BACKUP_KEEP: 100001 is out of range: use 0 to 100000"),
            "{e}"
        );
        let e = err(&[("LEADROUTE_BACKUP_CAPTURE_BYTES", "1024")]);
        assert!(
            e.starts_with("LEADROUTE_BACKUP_CAPTURE_BYTES: 1024 is out of range"),
            "{e}"
        );
        let (_dir, path) = file("backup_capture_bytes = 68719476737\n");
        let e = err(&[("LEADROUTE_CONFIG", path.to_str().unwrap())]);
        assert!(
            e.contains("`backup_capture_bytes` in") && e.contains("out of range"),
            "{e}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_in_words() {
        for text in [
            "shutdown_timeout_secs = \"30\"\n",
            "[limits]\njson_body_bytes = -5\n",
        ] {
            let e = FileConfig::parse(text).unwrap_err();
            assert!(e.contains("expected a whole number, 0 or more"), "{e}");
            let key = text
                .trim_start_matches("[limits]\n")
                .split(' ')
                .next()
                .unwrap();
            assert!(e.contains(key), "the key is shown: {e}");
        }
    }

    #[test]
    fn the_shutdown_delay_comes_from_env_or_file_and_is_range_checked() {
        let s = resolve(&Flags::default(), &[]).unwrap();
        assert_eq!(s.shutdown_delay, Duration::ZERO, "no delay unless asked");
        let (_dir, path) = file("shutdown_delay_secs = 15\n");
        let config = path.to_str().unwrap();
        let s = resolve(&Flags::default(), &[("LEADROUTE_CONFIG", config)]).unwrap();
        assert_eq!(s.shutdown_delay, Duration::from_secs(15));
        let vars = [
            ("LEADROUTE_CONFIG", config),
            ("LEADROUTE_SHUTDOWN_DELAY_SECS", "5"),
        ];
        let s = resolve(&Flags::default(), &vars).unwrap();
        assert_eq!(
            s.shutdown_delay,
            Duration::from_secs(5),
            "the environment wins"
        );

        let e = resolve(
            &Flags::default(),
            &[("LEADROUTE_SHUTDOWN_DELAY_SECS", "3601")],
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("LEADROUTE_SHUTDOWN_DELAY_SECS: 3601 is out of range: use 0 to 3600"),
            "{e}"
        );
    }

    #[test]
    fn webhook_settings_come_from_env_or_file_and_are_range_checked() {
        let s = resolve(&Flags::default(), &[]).unwrap();
        assert_eq!(s.webhooks.max_attempts, 8);
        let s = resolve(
            &Flags::default(),
            &[
                ("LEADROUTE_WEBHOOK_MAX_ATTEMPTS", "3"),
                ("LEADROUTE_WEBHOOK_TIMEOUT_SECS", "2"),
            ],
        )
        .unwrap();
        assert_eq!(s.webhooks.max_attempts, 3);
        assert_eq!(s.webhooks.timeout, Duration::from_secs(2));
        let e = resolve(
            &Flags::default(),
            &[("LEADROUTE_WEBHOOK_MAX_ATTEMPTS", "0")],
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("LEADROUTE_WEBHOOK_MAX_ATTEMPTS: 0 is out of range"),
            "{e}"
        );
        let (_dir, path) = file("[webhooks]\ntimeout_secs = 900\n");
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let e = resolve(&flags, &[]).unwrap_err();
        assert!(e.0.contains("`webhooks.timeout_secs` in"), "{e}");
    }
}
