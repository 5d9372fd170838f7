//! Bearer-token authentication (docs/ARCHITECTURE.md#sessions-api): a JWT signed with the
//! configured HS256 secret or RS256/ES256 key, algorithm pinned, `exp` required, `nbf` checked when
//! present, the same small leeway on both. The verified claims become a [`Caller`]; permissions are
//! checked by handlers, scope by `scope::ScopeCache`.
//!
//! Also issues tokens for `radacctd token`. Nothing here touches the database.

use std::path::Path;

use anyhow::Context as _;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::error::ApiError;
use crate::clock::now_secs;
use crate::config::{ApiConfig, JwtAlgorithm};

/// List, count, get and export sessions.
pub const SESSIONS_VIEW: &str = "sessions.view";
/// `GET /api/nas` and `GET /api/nas/{id}`: every NAS's health. Granted explicitly, to
/// resellers too (the figures are the whole network's).
pub const NAS_VIEW: &str = "nas.view";
/// See every reseller's sessions (a reseller then has the admin's scope).
pub const SESSIONS_VIEW_ALL: &str = "sessions.view_all";
/// Ask who had an address at a moment (`GET /api/attribution`), within the caller's scope;
/// with the admin role, also read the audit of those queries (`GET /api/attribution/audit`).
pub const SESSIONS_ATTRIBUTION: &str = "sessions.attribution";
/// `GET /api/events`: the session events stream, within the caller's scope (`nas.rebooted`
/// only for callers who see every session).
pub const EVENTS_VIEW: &str = "events.view";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Reseller,
}

impl Role {
    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reseller => "reseller",
        }
    }
}

/// The claims radacctd reads (others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch. Required.
    pub exp: u64,
    pub role: Role,
    /// Required for resellers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_id: Option<i64>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: Option<String>,
    pub role: Role,
    pub reseller_id: Option<i64>,
    pub permissions: Vec<String>,
}

impl Caller {
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// 403 `<permission> denied` unless the token grants it (admins too: the role only widens
    /// the scope).
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("{permission} denied")))
        }
    }

    /// Admins and holders of `sessions.view_all` see every session.
    pub fn sees_everything(&self) -> bool {
        self.role == Role::Admin || self.has(SESSIONS_VIEW_ALL)
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// Verifies bearer tokens.
pub struct Authenticator {
    /// `None` when no key is configured: every token is refused.
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("configured", &self.key.is_some())
            .finish()
    }
}

impl Authenticator {
    pub fn from_config(config: &ApiConfig) -> anyhow::Result<Authenticator> {
        let alg = algorithm(config.jwt_algorithm);
        let key = match (config.jwt_algorithm, &config.jwt_public_key) {
            (JwtAlgorithm::HS256, _) => {
                let secret = config.jwt_secret.expose();
                if secret.is_empty() {
                    tracing::warn!("api.jwt_secret is not set: every API token will be refused");
                    None
                } else {
                    if secret.len() < 32 {
                        tracing::warn!("api.jwt_secret is shorter than 32 bytes (RFC 7518 §3.2)");
                    }
                    Some(DecodingKey::from_secret(secret.as_bytes()))
                }
            }
            (other, Some(path)) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading api.jwt_public_key {}", path.display()))?;
                let key = match other {
                    JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    _ => DecodingKey::from_ec_pem(&pem),
                }
                .with_context(|| {
                    format!(
                        "api.jwt_public_key {} is not a PEM public key",
                        path.display()
                    )
                })?;
                Some(key)
            }
            (_, None) => anyhow::bail!("api.jwt_algorithm RS256/ES256 needs api.jwt_public_key"),
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = config.jwt_leeway_secs;
        validation.validate_exp = true;
        // `nbf` is optional; when present it is checked with the same leeway as `exp`.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &config.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.set_required_spec_claims(&["exp", "aud"]);
            }
            None => validation.validate_aud = false,
        }
        Ok(Authenticator { key, validation })
    }

    /// The caller a bearer token stands for, or 401.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let Some(key) = &self.key else {
            return Err(ApiError::Unauthorized("invalid token"));
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => ApiError::Unauthorized("token expired"),
                    ErrorKind::ImmatureSignature => ApiError::Unauthorized("token not yet valid"),
                    _ => ApiError::Unauthorized("invalid token"),
                }
            })?;
        let c = data.claims;
        if c.role == Role::Reseller && c.reseller_id.is_none() {
            return Err(ApiError::Unauthorized("invalid token"));
        }
        Ok(Caller {
            subject: c.sub,
            role: c.role,
            reseller_id: c.reseller_id,
            permissions: c.permissions,
        })
    }

    /// The caller of a request, from its `Authorization: Bearer …` header.
    pub fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::Unauthorized("missing token"));
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed token"))?;
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                t.trim()
            }
            _ => return Err(ApiError::Unauthorized("malformed token")),
        };
        self.verify(token)
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        state.auth().authenticate(parts)
    }
}

/// Where `radacctd token` gets its signing key.
#[derive(Debug, Clone, Copy)]
pub enum SigningKey<'a> {
    /// The configured HS256 `api.jwt_secret`.
    ConfiguredSecret,
    /// A PEM private key file, for RS256 or ES256.
    PrivateKey(&'a Path, JwtAlgorithm),
}

/// Signs `claims` (for operators and tests).
pub fn issue_token(
    config: &ApiConfig,
    claims: &Claims,
    key: SigningKey<'_>,
) -> anyhow::Result<String> {
    let (alg, key) = match key {
        SigningKey::ConfiguredSecret => {
            let secret = config.jwt_secret.expose();
            anyhow::ensure!(
                !secret.is_empty(),
                "api.jwt_secret is not set: configure it or pass --key with a private key"
            );
            (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
            )
        }
        SigningKey::PrivateKey(path, alg) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let key = match alg {
                JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                JwtAlgorithm::HS256 => anyhow::bail!("--key needs --alg RS256 or ES256"),
            }
            .with_context(|| format!("{} is not a PEM private key", path.display()))?;
            (algorithm(alg), key)
        }
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).context("signing the token")
}

/// What `radacctd token` was asked for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub role: Role,
    pub reseller_id: Option<i64>,
    pub permissions: Vec<String>,
    pub ttl_secs: u64,
    pub subject: Option<String>,
    /// A PEM private key and its algorithm; `None`: the configured HS256 secret.
    pub key: Option<(std::path::PathBuf, JwtAlgorithm)>,
}

/// Builds the claims for `req` and signs them (`radacctd token`).
pub fn token_for(config: &ApiConfig, req: &TokenRequest) -> anyhow::Result<String> {
    anyhow::ensure!(
        req.role == Role::Admin || req.reseller_id.is_some(),
        "--role reseller needs --reseller-id"
    );
    anyhow::ensure!(req.ttl_secs > 0, "--ttl must be at least 1 second");
    let claims = Claims {
        sub: req.subject.clone(),
        exp: (now_secs() as u64).saturating_add(req.ttl_secs),
        role: req.role,
        reseller_id: req.reseller_id,
        permissions: req
            .permissions
            .iter()
            .flat_map(|p| p.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
    };
    let key = match &req.key {
        None => SigningKey::ConfiguredSecret,
        Some((path, alg)) => SigningKey::PrivateKey(path, *alg),
    };
    issue_token(config, &claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> ApiConfig {
        ApiConfig {
            jwt_secret: Secret::new("0123456789abcdef0123456789abcdef"),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_claims() {
        let cfg = config();
        let token = token_for(
            &cfg,
            &TokenRequest {
                role: Role::Reseller,
                reseller_id: Some(7),
                permissions: vec!["sessions.view,sessions.view_all".into()],
                ttl_secs: 60,
                subject: Some("ops".into()),
                key: None,
            },
        )
        .expect("signs");
        let caller = Authenticator::from_config(&cfg)
            .expect("auth")
            .verify(&token)
            .expect("valid");
        assert_eq!(caller.reseller_id, Some(7));
        assert!(caller.has(SESSIONS_VIEW) && caller.sees_everything());
    }

    #[test]
    fn refused_tokens_are_unauthorized() {
        let cfg = config();
        let auth = Authenticator::from_config(&cfg).expect("auth");
        let expired = Claims {
            sub: None,
            exp: now_secs() as u64 - 3600,
            role: Role::Admin,
            reseller_id: None,
            permissions: vec![SESSIONS_VIEW.into()],
        };
        let t = issue_token(&cfg, &expired, SigningKey::ConfiguredSecret).expect("signs");
        assert_eq!(
            auth.verify(&t).expect_err("expired").to_string(),
            "token expired"
        );
        assert!(auth.verify("not.a.token").is_err());
        let reseller_without_id = Claims {
            exp: now_secs() as u64 + 60,
            role: Role::Reseller,
            ..expired
        };
        let t =
            issue_token(&cfg, &reseller_without_id, SigningKey::ConfiguredSecret).expect("signs");
        assert!(auth.verify(&t).is_err());
    }

    /// A token with these claims, signed with the test secret (`Claims` has no `nbf`).
    fn signed(cfg: &ApiConfig, claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(cfg.jwt_secret.expose().as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("signs")
    }

    #[test]
    fn not_before_in_the_future_is_refused_with_the_exp_leeway() {
        let cfg = config();
        let leeway = cfg.jwt_leeway_secs as i64;
        assert!(leeway > 10, "the test needs some leeway: {leeway}");
        let auth = Authenticator::from_config(&cfg).expect("auth");
        let with_nbf = |nbf: serde_json::Value| {
            let claims = serde_json::json!({
                "exp": now_secs() + 3600,
                "nbf": nbf,
                "role": "admin",
                "permissions": [SESSIONS_VIEW],
            });
            auth.verify(&signed(&cfg, &claims))
        };
        let refused = with_nbf((now_secs() + 3600).into()).expect_err("nbf an hour ahead");
        assert_eq!(refused.status_code(), axum::http::StatusCode::UNAUTHORIZED);
        assert_eq!(refused.to_string(), "token not yet valid");
        let refused = with_nbf((now_secs() + leeway + 60).into()).expect_err("beyond the leeway");
        assert_eq!(refused.to_string(), "token not yet valid");
        assert!(
            with_nbf((now_secs() - 60).into()).is_ok(),
            "nbf in the past"
        );
        assert!(
            with_nbf((now_secs() + leeway - 10).into()).is_ok(),
            "nbf ahead by less than the leeway (clock skew)"
        );
        assert_eq!(
            with_nbf("tomorrow".into())
                .expect_err("not a number")
                .to_string(),
            "invalid token"
        );
    }
}
