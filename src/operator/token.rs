//! Webhook tokens: generated once into a Secret owned by the source, rotated only on request.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

/// Keys and annotations of the generated token Secret `<source>-webhook-token`.
pub const TOKEN_KEY: &str = "token";
pub const URL_KEY: &str = "url";
pub const PREVIOUS_TOKEN_KEY: &str = "previous-token";
/// The value of the source's rotate annotation this token answers, so a restart or resync
/// never rotates again.
pub const ROTATION_KEY_ANNOTATION: &str = "hookgate.dev/rotation-key";
pub const ROTATED_AT_ANNOTATION: &str = "hookgate.dev/rotated-at";
pub const PREVIOUS_EXPIRES_ANNOTATION: &str = "hookgate.dev/previous-expires-at";

pub use crate::token::Token;

/// The full webhook URL for a token.
pub fn webhook_url(public_url: &str, token: &str) -> String {
    format!("{}/h/{}", public_url.trim_end_matches('/'), token)
}

/// Reads a key of a Secret from `data` or, for objects not yet normalised, `stringData`.
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
}

/// The token state kept in the generated Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    pub current: Token,
    pub rotation_key: String,
    pub rotated_at: Option<String>,
    pub previous: Option<(Token, i64)>,
}

impl StoredToken {
    pub fn read(secret: &Secret) -> Option<StoredToken> {
        let current = Token::from_secret_value(&secret_value(secret, TOKEN_KEY)?)?;
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let previous = secret_value(secret, PREVIOUS_TOKEN_KEY)
            .and_then(|v| Token::from_secret_value(&v))
            .zip(
                annotations
                    .get(PREVIOUS_EXPIRES_ANNOTATION)
                    .and_then(|v| v.parse::<i64>().ok()),
            );
        Some(StoredToken {
            current,
            rotation_key: annotations
                .get(ROTATION_KEY_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            rotated_at: annotations.get(ROTATED_AT_ANNOTATION).cloned(),
            previous,
        })
    }

    /// The Secret's `data` and annotations for this state.
    pub fn render(
        &self,
        public_url: &str,
    ) -> (BTreeMap<String, ByteString>, BTreeMap<String, String>) {
        let mut data = BTreeMap::new();
        data.insert(
            TOKEN_KEY.into(),
            ByteString(self.current.expose().as_bytes().to_vec()),
        );
        data.insert(
            URL_KEY.into(),
            ByteString(webhook_url(public_url, self.current.expose()).into_bytes()),
        );
        let mut annotations = BTreeMap::new();
        annotations.insert(ROTATION_KEY_ANNOTATION.into(), self.rotation_key.clone());
        if let Some(at) = &self.rotated_at {
            annotations.insert(ROTATED_AT_ANNOTATION.into(), at.clone());
        }
        if let Some((prev, expires)) = &self.previous {
            data.insert(
                PREVIOUS_TOKEN_KEY.into(),
                ByteString(prev.expose().as_bytes().to_vec()),
            );
            annotations.insert(PREVIOUS_EXPIRES_ANNOTATION.into(), expires.to_string());
        }
        (data, annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_token_round_trips_through_a_secret() {
        let stored = StoredToken {
            current: Token::new("current-token"),
            rotation_key: "2026-11-28".into(),
            rotated_at: Some("2026-11-28T10:00:00Z".into()),
            previous: Some((Token::new("old-token"), 1_800_000_000)),
        };
        let (data, annotations) = stored.render("https://hooks.example.com/");
        assert_eq!(data["url"].0, b"https://hooks.example.com/h/current-token");
        let secret = Secret {
            data: Some(data),
            metadata: kube::api::ObjectMeta {
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(StoredToken::read(&secret), Some(stored));
    }
}
