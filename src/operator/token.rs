//! Webhook tokens: generated once into a Secret owned by the source, rotated only on request.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
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

/// A webhook token. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// 32 bytes from the OS CSPRNG, URL-safe base64 without padding (43 characters).
    pub fn generate() -> Token {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn from_secret_value(bytes: &[u8]) -> Option<Token> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        (!text.is_empty()).then(|| Token(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn sha256_hex(&self) -> String {
        crate::route::token_sha256_hex(&self.0)
    }

    /// `…abcd`: what status may show of a URL's token.
    pub fn redacted(&self) -> String {
        let tail: String = self
            .0
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("****{tail}")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

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
    fn generated_tokens_are_43_url_safe_characters_and_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn debug_and_redacted_forms_hide_the_token() {
        let t = Token("abcdefghijklmnop1234".into());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.redacted(), "****1234");
    }

    #[test]
    fn stored_token_round_trips_through_a_secret() {
        let stored = StoredToken {
            current: Token("current-token".into()),
            rotation_key: "2026-11-28".into(),
            rotated_at: Some("2026-11-28T10:00:00Z".into()),
            previous: Some((Token("old-token".into()), 1_800_000_000)),
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
