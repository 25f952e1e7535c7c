//! Configuration from the environment, validated once at start. A bad value stops the
//! process with exit code 64 (EX_USAGE) and a message that names the variable.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Exit code for configuration errors (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

/// The variable's value, `None` when unset or empty.
pub fn env_opt(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ConfigError::new(name, "value is not valid UTF-8"))
        }
    }
}

/// Parses the variable, or returns `default` when unset.
pub fn env_parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match env_opt(name)? {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| ConfigError::new(name, format!("cannot parse {v:?}: {e}"))),
    }
}

/// Like [`env_parse`] but the value must be within `min..=max`.
pub fn env_parse_range<T>(name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display + Copy,
    T::Err: Display,
{
    let v = env_parse(name, default)?;
    if v < min || v > max {
        return Err(ConfigError::new(
            name,
            format!("{v} is out of range; allowed {min}..={max}"),
        ));
    }
    Ok(v)
}

/// A boolean: 1/0, true/false, yes/no, on/off.
pub fn env_bool(name: &str, default: bool) -> Result<bool, ConfigError> {
    match env_opt(name)?.map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::new(
                name,
                format!("expected true or false, got {v:?}"),
            )),
        },
    }
}

/// A service URL such as `http://chat:50051`; `None` when unset.
pub fn env_url(name: &str) -> Result<Option<String>, ConfigError> {
    let Some(v) = env_opt(name)? else {
        return Ok(None);
    };
    let uri: http::Uri = v
        .parse()
        .map_err(|e| ConfigError::new(name, format!("{v:?} is not a URL: {e}")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(Some(v)),
        _ => Err(ConfigError::new(
            name,
            format!("{v:?} must look like http://host:port"),
        )),
    }
}

/// `CONFAB_DATA_DIR`, default `./data`; created when missing.
pub fn data_dir() -> Result<PathBuf, ConfigError> {
    let dir = PathBuf::from(env_opt("CONFAB_DATA_DIR")?.unwrap_or_else(|| "./data".into()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        ConfigError::new(
            "CONFAB_DATA_DIR",
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    Ok(dir)
}

/// What every binary needs to serve: where to listen and how long to drain.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub shutdown_grace: Duration,
    /// Optional extra port serving `/metrics` (non-gateway services).
    pub metrics_addr: Option<SocketAddr>,
}

impl ServerConfig {
    /// Reads `--addr` (or `--addr=`) from the command line, else `CONFAB_ADDR`, else
    /// `0.0.0.0:<default_port>`; `CONFAB_SHUTDOWN_GRACE_SECS` (default 20).
    pub fn from_env(default_port: u16) -> Result<Self, ConfigError> {
        let addr = match cli_value("--addr") {
            Some(v) => parse_addr("--addr", &v)?,
            None => match env_opt("CONFAB_ADDR")? {
                Some(v) => parse_addr("CONFAB_ADDR", &v)?,
                None => SocketAddr::from(([0, 0, 0, 0], default_port)),
            },
        };
        let grace = env_parse_range("CONFAB_SHUTDOWN_GRACE_SECS", 20u64, 0, 3600)?;
        let metrics_addr = env_opt("CONFAB_METRICS_ADDR")?
            .map(|v| parse_addr("CONFAB_METRICS_ADDR", &v))
            .transpose()?;
        Ok(Self {
            addr,
            shutdown_grace: Duration::from_secs(grace),
            metrics_addr,
        })
    }
}

fn parse_addr(name: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|e| {
        ConfigError::new(
            name,
            format!("{v:?} is not host:port (e.g. 0.0.0.0:8080): {e}"),
        )
    })
}

/// `--flag value` or `--flag=value` from the command line.
pub fn cli_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_owned)
        }
    })
}

/// `--flag` present on the command line.
pub fn cli_flag(flag: &str) -> bool {
    std::env::args().skip(1).any(|a| a == flag)
}

/// Where each backend service lives; `None` means run it in-process.
#[derive(Debug, Clone, Default)]
pub struct ServiceUrls {
    pub chat: Option<String>,
    pub conversation: Option<String>,
    pub files: Option<String>,
    pub ratelimit: Option<String>,
}

impl ServiceUrls {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            chat: env_url("CONFAB_CHAT_URL")?,
            conversation: env_url("CONFAB_CONVERSATION_URL")?,
            files: env_url("CONFAB_FILES_URL")?,
            ratelimit: env_url("CONFAB_RATELIMIT_URL")?,
        })
    }
}

/// Prints the error and exits 64 on a configuration error.
pub fn or_exit<T>(binary: &str, result: Result<T, ConfigError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{binary}: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}
