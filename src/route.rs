//! The compiled route: everything the ingest needs to serve one WebhookSource.
//!
//! The operator builds one route per source and publishes it; the ingest watches routes and
//! never reads the user's resources or Secrets. A route carries signing secrets, so its carrier
//! is a Secret in the operator's own namespace (see `crate::operator` where it is written): the
//! ingest then needs read access to Secrets in that one namespace and nowhere else.
//!
//! Tokens travel only as SHA-256 hashes: the ingest looks a request up by the hash of the token
//! it presents, so a route (or a memory dump of the ingest) never reveals a working URL.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::mapping::MappingSpec;
use crate::api::webhook_source::{HmacAlgorithm, SignatureEncoding, SignatureScheme, Sink};

/// The label on every route carrier Secret; the ingest watches with this selector.
pub const ROUTE_LABEL: &str = "hookgate.dev/route";
/// The data key of the route JSON inside its carrier Secret.
pub const ROUTE_KEY: &str = "route.json";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub namespace: String,
    pub name: String,
    /// The source's `metadata.generation` this route was built from.
    pub generation: i64,
    /// Hashes of the tokens that open this route: the current one and, during a rotation's
    /// grace period, the previous one with its expiry.
    pub tokens: Vec<TokenHash>,
    pub enabled: bool,
    pub max_body_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// 0 turns deduplication off.
    pub dedup_window_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<RouteSignature>,
    /// The accepted mappings, in name order. Each was compiled by the operator before it was
    /// published, so the ingest's compile of the same spec succeeds.
    #[serde(default)]
    pub mappings: Vec<RouteMapping>,
    /// None: the ingest's default sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<Sink>,
    /// What the sink's Secret references resolved to (HTTP headers, NATS credentials): the
    /// ingest cannot read Secrets in the source's namespace, so the operator copies them here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_secrets: Option<SinkSecrets>,
}

#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SinkSecrets {
    /// `http.headersSecretRef`: each key of the Secret a request header.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `nats.credentialsSecretRef`: how the NATS sink authenticates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsAuth>,
}

impl fmt::Debug for SinkSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkSecrets")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("nats", &self.nats)
            .finish()
    }
}

/// One way of authenticating to a NATS server, read from the keys of the Secret that
/// `nats.credentialsSecretRef` names.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum NatsAuth {
    /// A credentials file (user JWT and NKey seed), key `creds`.
    Creds(String),
    /// An NKey seed (`SU...`), key `nkey`.
    Nkey(String),
    /// Key `token`.
    Token(String),
    /// Keys `user` and `password`.
    UserPassword { user: String, password: String },
}

impl NatsAuth {
    /// The kind, for logs and messages: never the value.
    pub fn kind(&self) -> &'static str {
        match self {
            NatsAuth::Creds(_) => "credentials file",
            NatsAuth::Nkey(_) => "nkey",
            NatsAuth::Token(_) => "token",
            NatsAuth::UserPassword { .. } => "user and password",
        }
    }
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsAuth({} <redacted>)", self.kind())
    }
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenHash {
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// Unix seconds after which this token no longer opens the route (previous tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl fmt::Debug for TokenHash {
    // A hash is not the token, but there is no reason to print it either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHash")
            .field("sha256", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSignature {
    pub scheme: SignatureScheme,
    /// Signing secrets accepted now: the current one first, then any still in a rotation window.
    pub secrets: Vec<String>,
    /// Unix seconds from which only `secrets[0]` is accepted: the end of a rotation window. The
    /// ingest enforces it itself (like a previous token's `expiresAt`), so the old secret stops
    /// on time even while no operator is running to republish the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<i64>,
    pub tolerance_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<HmacAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl fmt::Debug for RouteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSignature")
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("previous_until", &self.previous_until)
            .field("tolerance_seconds", &self.tolerance_seconds)
            .field("header", &self.header)
            .finish()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteMapping {
    pub name: String,
    pub generation: i64,
    pub spec: MappingSpec,
}

/// Lowercase hex SHA-256, the form tokens take in routes.
pub fn token_sha256_hex(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_lowercase_hex_sha256() {
        // sha256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            token_sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_output_never_shows_hashes_or_signing_secrets() {
        let sig = RouteSignature {
            scheme: SignatureScheme::Github,
            secrets: vec!["very-secret-signing-key".into()],
            previous_until: None,
            tolerance_seconds: 300,
            header: None,
            algorithm: None,
            encoding: None,
            prefix: None,
        };
        let hash = TokenHash {
            sha256: token_sha256_hex("tok"),
            expires_at: None,
        };
        let sink = SinkSecrets {
            headers: [("Authorization".into(), "Bearer header-secret".into())].into(),
            nats: Some(NatsAuth::UserPassword {
                user: "nats-user-name".into(),
                password: "nats-password".into(),
            }),
        };
        let printed = format!("{sig:?} {hash:?} {sink:?}");
        for secret in [
            "very-secret-signing-key",
            "header-secret",
            "nats-user-name",
            "nats-password",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(!printed.contains(&hash.sha256), "{printed}");
    }
}
