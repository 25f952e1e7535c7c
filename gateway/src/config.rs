//! The gateway's configuration, read once at start (exit 64 naming the variable).

use std::path::PathBuf;
use std::time::Duration;

use confab_common::config::{ConfigError, env_bool, env_opt, env_parse_range, env_url};

/// Where the OIDC signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    /// An unknown `kid` triggers at most one JWKS refetch per this interval.
    pub min_refetch: Duration,
}

impl OidcConfig {
    pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(30);
}

/// Which browser origins may call the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: only the gateway's own origin (the bundled web client).
    SameOrigin,
    /// `*`: any origin, without credentials.
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request message (uploads are chunked, so this stays small).
    pub max_message_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Open connections (each costs a socket and buffers).
    pub max_connections: usize,
    /// Ceiling on unary calls (a client's shorter `grpc-timeout` wins).
    pub unary_timeout: Duration,
    /// Time to send a request's headers (slowloris), and to send a first request.
    pub header_read_timeout: Duration,
}

/// The edge itself (everything but the backend services).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub data_dir: PathBuf,
    /// `CONFAB_SESSION_SECRET`; `None`: generated once and kept in `session.key`.
    pub session_secret: Option<Vec<u8>>,
    pub session_ttl: Duration,
    pub allow_anonymous: bool,
    pub oidc: Option<OidcConfig>,
    pub cors: CorsOrigins,
    pub trusted_proxy_hops: usize,
    pub web_dir: PathBuf,
    pub limits: Limits,
    pub redis_url: Option<String>,
    /// `RATE_LIMIT_FAIL_POLICY=closed`: a Redis outage makes the gateway unhealthy.
    pub ratelimit_fail_closed: bool,
}

pub const MIN_SECRET_BYTES: usize = 32;

impl EdgeConfig {
    /// Defaults for embedding and tests: anonymous sessions, no OIDC, no CORS.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            session_secret: None,
            session_ttl: Duration::from_secs(3600 * 24 * 30),
            allow_anonymous: true,
            oidc: None,
            cors: CorsOrigins::SameOrigin,
            trusted_proxy_hops: 0,
            web_dir: PathBuf::from("web/dist"),
            limits: Limits {
                max_message_bytes: 4 * 1024 * 1024,
                max_streams_per_connection: 200,
                max_connections: 10_000,
                unary_timeout: Duration::from_secs(120),
                header_read_timeout: Duration::from_secs(10),
            },
            redis_url: None,
            ratelimit_fail_closed: false,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let session_secret = match env_opt("CONFAB_SESSION_SECRET")? {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError::new(
                    "CONFAB_SESSION_SECRET",
                    format!(
                        "is {} bytes; use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                        s.len()
                    ),
                ));
            }
            other => other.map(String::into_bytes),
        };
        let oidc = match (
            env_opt("OIDC_ISSUER")?,
            env_opt("OIDC_AUDIENCE")?,
            env_opt("OIDC_JWKS_FILE")?,
            env_url("OIDC_JWKS_URL")?,
        ) {
            (None, None, None, None) => None,
            (None, ..) => {
                return Err(ConfigError::new(
                    "OIDC_ISSUER",
                    "is required when OIDC_AUDIENCE or OIDC_JWKS_* is set",
                ));
            }
            (Some(_), None, ..) => {
                return Err(ConfigError::new(
                    "OIDC_AUDIENCE",
                    "is required with OIDC_ISSUER",
                ));
            }
            (Some(_), Some(_), None, None) => {
                return Err(ConfigError::new(
                    "OIDC_JWKS_URL",
                    "OIDC_JWKS_URL or OIDC_JWKS_FILE is required with OIDC_ISSUER",
                ));
            }
            (Some(_), Some(_), Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "OIDC_JWKS_FILE",
                    "set OIDC_JWKS_FILE or OIDC_JWKS_URL, not both",
                ));
            }
            (Some(issuer), Some(audience), file, url) => Some(OidcConfig {
                issuer,
                audience,
                jwks: match (file, url) {
                    (Some(f), _) => JwksSource::File(PathBuf::from(f)),
                    (_, Some(u)) => JwksSource::Url(u),
                    _ => unreachable!("checked above"),
                },
                min_refetch: OidcConfig::DEFAULT_MIN_REFETCH,
            }),
        };
        let cors = match env_opt("CORS_ORIGINS")? {
            None => CorsOrigins::SameOrigin,
            Some(v) if v == "*" => CorsOrigins::Any,
            Some(v) => {
                let mut list = Vec::new();
                for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    let uri: http::Uri = o.parse().map_err(|e| {
                        ConfigError::new("CORS_ORIGINS", format!("{o:?} is not an origin: {e}"))
                    })?;
                    if uri.scheme().is_none() || uri.host().is_none() || uri.path() != "/" {
                        return Err(ConfigError::new(
                            "CORS_ORIGINS",
                            format!("{o:?} must look like https://host[:port] (no path)"),
                        ));
                    }
                    list.push(o.trim_end_matches('/').to_owned());
                }
                CorsOrigins::List(list)
            }
        };
        let limits = Limits {
            max_message_bytes: env_parse_range(
                "CONFAB_MAX_MESSAGE_BYTES",
                4 * 1024 * 1024,
                1024,
                64 * 1024 * 1024,
            )?,
            max_streams_per_connection: env_parse_range(
                "CONFAB_MAX_STREAMS_PER_CONNECTION",
                200,
                1,
                10_000,
            )?,
            max_connections: env_parse_range("CONFAB_MAX_CONNECTIONS", 10_000, 1, 1_000_000)?,
            unary_timeout: Duration::from_secs(env_parse_range(
                "CONFAB_UNARY_TIMEOUT_SECS",
                120,
                1,
                3600,
            )?),
            header_read_timeout: Duration::from_secs(env_parse_range(
                "CONFAB_HEADER_READ_TIMEOUT_SECS",
                10,
                1,
                300,
            )?),
        };
        let fail_policy = env_opt("RATE_LIMIT_FAIL_POLICY")?.unwrap_or_else(|| "open".into());
        let ratelimit_fail_closed = match fail_policy.as_str() {
            "open" => false,
            "closed" => true,
            other => {
                return Err(ConfigError::new(
                    "RATE_LIMIT_FAIL_POLICY",
                    format!("expected open or closed, got {other:?}"),
                ));
            }
        };
        Ok(Self {
            data_dir: confab_common::config::data_dir()?,
            session_secret,
            session_ttl: Duration::from_secs(
                3600 * env_parse_range("CONFAB_SESSION_TTL_HOURS", 24 * 30, 1, 24 * 365)?,
            ),
            allow_anonymous: env_bool("CONFAB_ALLOW_ANONYMOUS", true)?,
            oidc,
            cors,
            trusted_proxy_hops: env_parse_range("CONFAB_TRUSTED_PROXY_HOPS", 0, 0, 16)?,
            web_dir: PathBuf::from(env_opt("CONFAB_WEB_DIR")?.unwrap_or_else(|| "web/dist".into())),
            limits,
            redis_url: env_opt("REDIS_URL")?,
            ratelimit_fail_closed,
        })
    }
}
