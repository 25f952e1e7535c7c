//! Who is calling: anonymous session tokens the gateway signs itself (HMAC-SHA256), and
//! optionally OIDC bearer JWTs verified against the issuer's JWKS. Both arrive as
//! `authorization: Bearer <token>`; session tokens start with [`SESSION_PREFIX`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_common::Identity;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::{EdgeConfig, JwksSource, MIN_SECRET_BYTES, OidcConfig};

/// Session tokens: `cs1.<base64url(claims)>.<base64url(hmac)>`.
pub const SESSION_PREFIX: &str = "cs1.";
/// Anonymous user ids: `anon-` + 32 hex chars.
pub const ANON_PREFIX: &str = "anon-";
/// Keys are refreshed at least this often (rotation).
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
const CLOCK_LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: call POST /auth/session and send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed authorization header; expected `Bearer <token>`")]
    Malformed,
    #[error("session token is invalid")]
    BadSession,
    #[error("session has expired; call POST /auth/session for a new one")]
    Expired,
    #[error("bearer token rejected: {0}")]
    BadJwt(String),
    #[error("token subject is not a valid user id")]
    BadSubject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionClaims {
    sub: String,
    #[serde(default)]
    anon: bool,
    /// Expiry, Unix milliseconds.
    exp: u64,
}

/// A verified caller (before the client address is attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub anonymous: bool,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedSession {
    pub token: String,
    pub user_id: String,
    pub expires_at_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Signs and verifies session tokens.
pub struct SessionKeys {
    secret: Vec<u8>,
    ttl: Duration,
}

impl SessionKeys {
    pub fn new(secret: Vec<u8>, ttl: Duration) -> Self {
        Self { secret, ttl }
    }

    /// The configured secret, or the one kept in `<data_dir>/session.key` (created with
    /// mode 0600 on first start).
    pub fn load(config: &EdgeConfig) -> anyhow::Result<Self> {
        let secret = match &config.session_secret {
            Some(s) => s.clone(),
            None => load_or_create_secret(&config.data_dir.join("session.key"))?,
        };
        Ok(Self::new(secret, config.session_ttl))
    }

    fn mac(&self, payload_b64: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(SESSION_PREFIX.as_bytes());
        mac.update(payload_b64.as_bytes());
        mac
    }

    /// A token for `user_id`, expiring after the TTL (or at `not_after_ms` if sooner).
    pub fn issue(
        &self,
        user_id: &str,
        anonymous: bool,
        not_after_ms: Option<u64>,
    ) -> IssuedSession {
        let mut exp = now_ms() + self.ttl.as_millis() as u64;
        if let Some(limit) = not_after_ms {
            exp = exp.min(limit);
        }
        let claims = SessionClaims {
            sub: user_id.to_owned(),
            anon: anonymous,
            exp,
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        IssuedSession {
            token: format!("{SESSION_PREFIX}{payload}.{sig}"),
            user_id: user_id.to_owned(),
            expires_at_ms: exp,
        }
    }

    /// A new anonymous user.
    pub fn issue_anonymous(&self) -> IssuedSession {
        let id = format!("{ANON_PREFIX}{}", uuid::Uuid::new_v4().simple());
        self.issue(&id, true, None)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let rest = token
            .strip_prefix(SESSION_PREFIX)
            .ok_or(AuthError::BadSession)?;
        let (payload, sig) = rest.split_once('.').ok_or(AuthError::BadSession)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::BadSession)?;
        self.mac(payload)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSession)?;
        let claims: SessionClaims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::BadSession)?;
        if claims.exp <= now_ms() {
            return Err(AuthError::Expired);
        }
        if !Identity::is_valid_user_id(&claims.sub) {
            return Err(AuthError::BadSubject);
        }
        Ok(Principal {
            user_id: claims.sub,
            anonymous: claims.anon,
            expires_at_ms: claims.exp,
        })
    }
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= MIN_SECRET_BYTES => return Ok(bytes),
        Ok(_) => anyhow::bail!(
            "{} is shorter than {MIN_SECRET_BYTES} bytes; delete it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut secret = vec![0u8; 32];
    rand::fill(&mut secret[..]);
    let hex = hex_encode(&secret).into_bytes();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(&hex)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a session secret");
            Ok(hex)
        }
        // Another process won the race: use its secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Deserialize)]
struct JwtClaims {
    sub: Option<String>,
    exp: Option<u64>,
}

struct KeyCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

/// Verifies OIDC bearer JWTs: signature by a JWKS key, issuer, audience, expiry.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    cache: tokio::sync::RwLock<KeyCache>,
    /// Serialises refetches (one in flight; others wait and reuse it).
    refetch: tokio::sync::Mutex<()>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            config,
            http,
            cache: tokio::sync::RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            refetch: tokio::sync::Mutex::new(()),
        }
    }

    /// Loads the keys once at start; a file that cannot be read is a startup error,
    /// an unreachable URL is retried on first use.
    pub async fn preload(&self) -> anyhow::Result<()> {
        match self.refresh().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(self.config.jwks, JwksSource::Url(_)) => {
                tracing::warn!(error = %e, "OIDC JWKS not loaded yet; retrying on first use");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        let text = match &self.config.jwks {
            JwksSource::File(p) => tokio::fs::read_to_string(p)
                .await
                .map_err(|e| anyhow::anyhow!("reading OIDC_JWKS_FILE {}: {e}", p.display()))?,
            JwksSource::Url(u) => {
                self.http
                    .get(u)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| anyhow::anyhow!("fetching OIDC_JWKS_URL: {e}"))?
                    .text()
                    .await?
            }
        };
        Ok(serde_json::from_str(&text)?)
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let set = self.fetch().await;
        let mut cache = self.cache.write().await;
        cache.fetched_at = Some(Instant::now());
        let set = set?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(alg) = jwk_algorithm(jwk) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            keys.insert(kid, (key, alg));
        }
        tracing::info!(keys = keys.len(), "OIDC signing keys loaded");
        cache.keys = keys;
        Ok(())
    }

    async fn key_for(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE);
            if fresh && let Some(k) = lookup(&cache.keys, kid) {
                return Some(k);
            }
        }
        // Unknown kid (rotation) or stale keys: refetch, at most once per interval.
        let _guard = self.refetch.lock().await;
        let due = {
            let cache = self.cache.read().await;
            if let Some(k) = lookup(&cache.keys, kid)
                && cache.fetched_at.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE)
            {
                return Some(k);
            }
            cache
                .fetched_at
                .is_none_or(|t| t.elapsed() >= self.config.min_refetch)
        };
        if due && let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "OIDC JWKS refresh failed; keeping the old keys");
        }
        lookup(&self.cache.read().await.keys, kid)
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::BadJwt(format!("malformed: {e}")))?;
        let kid = header.kid.clone().unwrap_or_default();
        let (key, alg) = self
            .key_for(&kid)
            .await
            .ok_or_else(|| AuthError::BadJwt("unknown signing key".into()))?;
        if header.alg != alg {
            return Err(AuthError::BadJwt("algorithm does not match the key".into()));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_LEEWAY_SECS;
        let data = jsonwebtoken::decode::<JwtClaims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError::BadJwt(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidSignature => "bad signature",
                    _ => "invalid",
                }
                .into(),
            )
        })?;
        let sub = data.claims.sub.ok_or(AuthError::BadSubject)?;
        // Anonymous ids are ours; an IdP subject must not be able to claim one.
        if !Identity::is_valid_user_id(&sub) || sub.starts_with(ANON_PREFIX) {
            return Err(AuthError::BadSubject);
        }
        Ok(Principal {
            user_id: sub,
            anonymous: false,
            expires_at_ms: data.claims.exp.unwrap_or(0).saturating_mul(1000),
        })
    }
}

fn lookup(
    keys: &HashMap<String, (DecodingKey, Algorithm)>,
    kid: &str,
) -> Option<(DecodingKey, Algorithm)> {
    if let Some(k) = keys.get(kid) {
        return Some(k.clone());
    }
    // A token without kid is accepted only when the set has exactly one key.
    if kid.is_empty() && keys.len() == 1 {
        return keys.values().next().cloned();
    }
    None
}

/// Asymmetric algorithms only: a shared-secret (HS*) key in a JWKS is never trusted.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let declared = jwk
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
    let alg = match (&jwk.algorithm, declared) {
        (AlgorithmParameters::OctetKey(_), _) => return None,
        (_, Some(a)) => a,
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None) => match p.curve {
            jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
            _ => Algorithm::ES256,
        },
        (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
        _ => return None,
    };
    (!matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)).then_some(alg)
}

/// Both verifiers behind one call.
pub struct Authenticator {
    pub sessions: SessionKeys,
    pub oidc: Option<OidcVerifier>,
}

impl Authenticator {
    pub async fn from_config(config: &EdgeConfig) -> anyhow::Result<Self> {
        let oidc = match &config.oidc {
            Some(c) => {
                let v = OidcVerifier::new(c.clone());
                v.preload().await?;
                Some(v)
            }
            None => None,
        };
        Ok(Self {
            sessions: SessionKeys::load(config)?,
            oidc,
        })
    }

    /// The bearer token from an `authorization` header value.
    pub fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
        let Some(v) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let v = v.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        Ok(Some(token.trim()))
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(SESSION_PREFIX) {
            return self.sessions.verify(token);
        }
        match &self.oidc {
            Some(oidc) => oidc.verify(token).await,
            None => Err(AuthError::BadSession),
        }
    }

    /// The caller of a request; `Missing` when it sent no credentials.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, AuthError> {
        match Self::bearer(headers)? {
            Some(token) => self.verify(token).await,
            None => Err(AuthError::Missing),
        }
    }
}

/// The client's address: the TCP peer, or with `trusted_hops` proxies in front (the
/// ALB), the address the outermost trusted proxy saw (`X-Forwarded-For`, counted from
/// the right). Entries further left are client-controlled and never used.
pub fn client_addr(
    peer: Option<SocketAddr>,
    headers: &http::HeaderMap,
    trusted_hops: usize,
) -> Option<IpAddr> {
    let peer = peer.map(|p| p.ip());
    if trusted_hops == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // Hop 1 appended the address it saw last; hop N's is N-th from the right.
    let chosen = if forwarded.len() >= trusted_hops {
        forwarded.get(forwarded.len() - trusted_hops)
    } else {
        forwarded.first()
    };
    match chosen {
        Some(s) => s.parse::<IpAddr>().ok().or(peer),
        None => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys::new(vec![7u8; 32], Duration::from_secs(3600))
    }

    #[test]
    fn session_round_trip_and_forgery() {
        let k = keys();
        let s = k.issue_anonymous();
        let p = k.verify(&s.token).unwrap();
        assert_eq!(p.user_id, s.user_id);
        assert!(p.anonymous);
        assert!(p.user_id.starts_with(ANON_PREFIX));
        // A different secret, or a tampered payload, is refused.
        let other = SessionKeys::new(vec![8u8; 32], Duration::from_secs(3600));
        assert_eq!(other.verify(&s.token), Err(AuthError::BadSession));
        let forged_claims =
            URL_SAFE_NO_PAD.encode(br#"{"sub":"victim","anon":false,"exp":99999999999999}"#);
        let sig = s.token.rsplit('.').next().unwrap();
        let forged = format!("{SESSION_PREFIX}{forged_claims}.{sig}");
        assert_eq!(k.verify(&forged), Err(AuthError::BadSession));
        assert_eq!(k.verify("cs1.garbage"), Err(AuthError::BadSession));
    }

    #[test]
    fn expired_session_is_refused() {
        let k = keys();
        let s = k.issue("alice", false, Some(now_ms() - 1));
        assert_eq!(k.verify(&s.token), Err(AuthError::Expired));
    }

    #[test]
    fn forwarded_for_counts_trusted_hops_from_the_right() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(
            client_addr(Some(peer), &h, 0),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            client_addr(Some(peer), &h, 1),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_addr(Some(peer), &h, 2),
            Some("6.6.6.6".parse().unwrap())
        );
        assert_eq!(
            client_addr(Some(peer), &http::HeaderMap::new(), 1),
            Some("10.0.0.9".parse().unwrap())
        );
    }

    #[test]
    fn secret_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.key");
        let a = load_or_create_secret(&path).unwrap();
        let b = load_or_create_secret(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
