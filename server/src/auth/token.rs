//! Tokens: what `Authenticate` hands out and every later request carries
//! (gRPC metadata `token`), as etcd's `--auth-token` chooses.
//!
//! - `simple` (the default): an opaque token this cluster signs itself —
//!   the user, the user's generation (it changes with the password, and
//!   a deleted user's tokens name a generation no user has) and an expiry
//!   `--auth-token-ttl` ahead, with an HMAC-SHA256 under the cluster's
//!   token key (made when auth is first enabled, replicated with the auth
//!   state). Any member verifies it without asking the one that issued
//!   it. etcd's simple tokens live in the issuing member's memory and
//!   renew on use; these expire at their TTL and clients re-authenticate
//!   (etcd's clients do so on `invalid auth token`).
//! - `jwt,pub-key=PATH,priv-key=PATH,sign-method=ALG[,ttl=DURATION]`: a
//!   JSON web token with etcd's claims (`username`, `revision`, `exp`),
//!   verifiable by anyone with the public key; without `priv-key` a member
//!   only verifies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::state::AuthState;
use crate::error::Error;

/// How tokens are made and checked.
pub enum Tokens {
    /// Signed by the cluster's token key.
    Simple {
        /// How long a token is good for.
        ttl: Duration,
    },
    /// JSON web tokens.
    Jwt {
        /// Signs new tokens; `None`: this member only verifies.
        signing: Option<jsonwebtoken::EncodingKey>,
        /// Verifies tokens.
        verifying: jsonwebtoken::DecodingKey,
        /// The signature algorithm.
        algorithm: jsonwebtoken::Algorithm,
        /// How long a token is good for.
        ttl: Duration,
    },
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokens::Simple { ttl } => write!(f, "simple tokens ({ttl:?})"),
            Tokens::Jwt { algorithm, ttl, .. } => write!(f, "JWT {algorithm:?} ({ttl:?})"),
        }
    }
}

/// What a simple token says.
#[derive(Serialize, Deserialize)]
struct SimpleClaims {
    user: String,
    generation: u64,
    expires_ms: u64,
}

/// etcd's JWT claims.
#[derive(Serialize, Deserialize)]
struct JwtClaims {
    username: String,
    revision: u64,
    exp: u64,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

type HmacSha256 = Hmac<Sha256>;

impl Tokens {
    /// Parses `--auth-token` (`simple`, or `jwt,...`); `ttl` is
    /// `--auth-token-ttl`, which a JWT's own `ttl=` overrides.
    pub fn parse(spec: &str, ttl: Duration) -> Result<Tokens, String> {
        let mut parts = spec.split(',').map(str::trim);
        match parts.next() {
            Some("simple") | Some("") | None => Ok(Tokens::Simple { ttl }),
            Some("jwt") => {
                let (mut public, mut private, mut method, mut ttl) = (None, None, None, ttl);
                for p in parts {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| format!("--auth-token: {p:?} is not key=value"))?;
                    match k {
                        "pub-key" => public = Some(v.to_string()),
                        "priv-key" => private = Some(v.to_string()),
                        "sign-method" => method = Some(v.to_string()),
                        "ttl" => {
                            ttl = crate::config::parse_duration(v)
                                .map_err(|e| format!("--auth-token ttl: {e}"))?
                        }
                        other => return Err(format!("--auth-token: unknown option {other:?}")),
                    }
                }
                let method = method.ok_or("--auth-token jwt needs sign-method")?;
                let algorithm: jsonwebtoken::Algorithm = method
                    .parse()
                    .map_err(|_| format!("auth: invalid auth signature method {method:?}"))?;
                let public = public.ok_or("auth: missing key data (jwt needs pub-key)")?;
                let read = |p: &str| {
                    std::fs::read(p).map_err(|e| format!("--auth-token: cannot read {p}: {e}"))
                };
                let pem = read(&public)?;
                use jsonwebtoken::Algorithm::*;
                let verifying = match algorithm {
                    RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                        jsonwebtoken::DecodingKey::from_rsa_pem(&pem)
                    }
                    ES256 | ES384 => jsonwebtoken::DecodingKey::from_ec_pem(&pem),
                    EdDSA => jsonwebtoken::DecodingKey::from_ed_pem(&pem),
                    HS256 | HS384 | HS512 => Ok(jsonwebtoken::DecodingKey::from_secret(&pem)),
                }
                .map_err(|e| format!("--auth-token pub-key {public}: {e}"))?;
                let signing = match private {
                    None => None,
                    Some(p) => {
                        let pem = read(&p)?;
                        Some(
                            match algorithm {
                                RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                                    jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                                }
                                ES256 | ES384 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
                                EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
                                HS256 | HS384 | HS512 => {
                                    Ok(jsonwebtoken::EncodingKey::from_secret(&pem))
                                }
                            }
                            .map_err(|e| format!("--auth-token priv-key {p}: {e}"))?,
                        )
                    }
                };
                Ok(Tokens::Jwt {
                    signing,
                    verifying,
                    algorithm,
                    ttl,
                })
            }
            Some(other) => Err(format!("--auth-token: unknown token type {other:?}")),
        }
    }

    /// A token for `user`, who exists in `state`.
    pub fn assign(&self, state: &AuthState, user: &str) -> Result<String, Error> {
        let u = state.users.get(user).ok_or(Error::AuthFailed)?;
        match self {
            Tokens::Simple { ttl } => {
                if state.token_key.is_empty() {
                    // Auth brought in from etcd, its key not yet made by
                    // the leader (`node::token_key`): moments away, so an
                    // error clients retry.
                    return Err(Error::Timeout);
                }
                let claims = SimpleClaims {
                    user: user.to_string(),
                    generation: u.generation,
                    expires_ms: (now() + *ttl).as_millis() as u64,
                };
                let body =
                    postcard::to_stdvec(&claims).map_err(|e| Error::Internal(e.to_string()))?;
                let mut mac = HmacSha256::new_from_slice(&state.token_key)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                mac.update(&body);
                let sig = mac.finalize().into_bytes();
                Ok(format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(&body),
                    URL_SAFE_NO_PAD.encode(sig)
                ))
            }
            Tokens::Jwt {
                signing,
                algorithm,
                ttl,
                ..
            } => {
                let key = signing.as_ref().ok_or_else(|| {
                    Error::Internal("auth: token signing attempted with verify-only key".into())
                })?;
                let claims = JwtClaims {
                    username: user.to_string(),
                    revision: state.revision,
                    exp: (now() + *ttl).as_secs(),
                };
                jsonwebtoken::encode(&jsonwebtoken::Header::new(*algorithm), &claims, key)
                    .map_err(|e| Error::Internal(e.to_string()))
            }
        }
    }

    /// The user a token was made for, if it is good under `state`.
    pub fn verify(&self, state: &AuthState, token: &str) -> Result<String, Error> {
        match self {
            Tokens::Simple { .. } => {
                if state.token_key.is_empty() {
                    return Err(Error::InvalidAuthToken);
                }
                let (body, sig) = token.split_once('.').ok_or(Error::InvalidAuthToken)?;
                let body = URL_SAFE_NO_PAD
                    .decode(body)
                    .map_err(|_| Error::InvalidAuthToken)?;
                let sig = URL_SAFE_NO_PAD
                    .decode(sig)
                    .map_err(|_| Error::InvalidAuthToken)?;
                let mut mac = HmacSha256::new_from_slice(&state.token_key)
                    .map_err(|_| Error::InvalidAuthToken)?;
                mac.update(&body);
                mac.verify_slice(&sig)
                    .map_err(|_| Error::InvalidAuthToken)?;
                let claims: SimpleClaims =
                    postcard::from_bytes(&body).map_err(|_| Error::InvalidAuthToken)?;
                if claims.expires_ms <= now().as_millis() as u64 {
                    return Err(Error::InvalidAuthToken);
                }
                match state.users.get(&claims.user) {
                    Some(u) if u.generation == claims.generation => Ok(claims.user),
                    _ => Err(Error::InvalidAuthToken),
                }
            }
            Tokens::Jwt {
                verifying,
                algorithm,
                ..
            } => {
                let mut v = jsonwebtoken::Validation::new(*algorithm);
                v.leeway = 0;
                let data = jsonwebtoken::decode::<JwtClaims>(token, verifying, &v)
                    .map_err(|_| Error::InvalidAuthToken)?;
                let user = data.claims.username;
                if state.users.contains_key(&user) {
                    Ok(user)
                } else {
                    Err(Error::InvalidAuthToken)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::state::User;

    fn state() -> AuthState {
        let mut s = AuthState {
            enabled: true,
            token_key: b"0123456789abcdef0123456789abcdef".to_vec(),
            ..AuthState::default()
        };
        s.users.insert(
            "alice".into(),
            User {
                password_hash: None,
                roles: Default::default(),
                generation: 3,
            },
        );
        s
    }

    #[test]
    fn simple_tokens_are_checked_and_expire() {
        let t = Tokens::Simple {
            ttl: Duration::from_secs(60),
        };
        let s = state();
        let tok = t.assign(&s, "alice").unwrap();
        assert_eq!(t.verify(&s, &tok).unwrap(), "alice");
        // Any change to the token is refused.
        let mut bad = tok.clone().into_bytes();
        bad[3] ^= 1;
        let bad = String::from_utf8_lossy(&bad).into_owned();
        assert_eq!(t.verify(&s, &bad), Err(Error::InvalidAuthToken));
        // No key yet (auth imported from etcd): nothing is issued, and a
        // token made with an empty key is never taken.
        let mut keyless = s.clone();
        keyless.token_key.clear();
        assert_eq!(t.assign(&keyless, "alice"), Err(Error::Timeout));
        let forged = {
            let body = postcard::to_stdvec(&SimpleClaims {
                user: "alice".into(),
                generation: 3,
                expires_ms: u64::MAX,
            })
            .unwrap();
            let mut mac = HmacSha256::new_from_slice(b"").unwrap();
            mac.update(&body);
            let sig = mac.finalize().into_bytes();
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&body),
                URL_SAFE_NO_PAD.encode(sig)
            )
        };
        assert_eq!(t.verify(&keyless, &forged), Err(Error::InvalidAuthToken));
        // Another cluster's key.
        let mut other = s.clone();
        other.token_key = b"another key another key another!".to_vec();
        assert_eq!(t.verify(&other, &tok), Err(Error::InvalidAuthToken));
        // A changed password (generation) or deleted user.
        let mut changed = s.clone();
        changed.users.get_mut("alice").unwrap().generation = 9;
        assert_eq!(t.verify(&changed, &tok), Err(Error::InvalidAuthToken));
        let mut gone = s.clone();
        gone.users.clear();
        assert_eq!(t.verify(&gone, &tok), Err(Error::InvalidAuthToken));
        // Expired.
        let t0 = Tokens::Simple {
            ttl: Duration::ZERO,
        };
        let old = t0.assign(&s, "alice").unwrap();
        assert_eq!(t.verify(&s, &old), Err(Error::InvalidAuthToken));
        assert_eq!(t.verify(&s, "garbage"), Err(Error::InvalidAuthToken));
    }

    #[test]
    fn jwt_tokens_with_an_ec_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (pubp, privp) = (dir.path().join("pub.pem"), dir.path().join("priv.pem"));
        std::fs::write(&pubp, key.public_key_pem()).unwrap();
        std::fs::write(&privp, key.serialize_pem()).unwrap();
        let spec = format!(
            "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=1m",
            pubp.display(),
            privp.display()
        );
        let t = Tokens::parse(&spec, Duration::from_secs(300)).unwrap();
        let s = state();
        let tok = t.assign(&s, "alice").unwrap();
        assert_eq!(tok.split('.').count(), 3, "a JWT");
        assert_eq!(t.verify(&s, &tok).unwrap(), "alice");
        let verify_only = Tokens::parse(
            &format!("jwt,pub-key={},sign-method=ES256", pubp.display()),
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(verify_only.verify(&s, &tok).unwrap(), "alice");
        assert!(verify_only.assign(&s, "alice").is_err());
        assert!(
            Tokens::parse("jwt,pub-key=/nonexistent,sign-method=ES256", Duration::ZERO).is_err()
        );
        assert!(Tokens::parse("jwt,sign-method=XX9", Duration::ZERO).is_err());
        assert!(Tokens::parse("magic", Duration::ZERO).is_err());
    }
}
