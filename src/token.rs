//! Webhook URL tokens: generation, hashing, redaction. One type for the operator (which
//! generates and stores them) and the ingest and standalone mode (which look requests up by
//! their hash).

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A webhook URL token. `Debug` and `Display` never show it: the only way to the text is
/// [`Token::expose`], which makes every place that reveals a token easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// 32 bytes from the OS CSPRNG, URL-safe base64 without padding (43 characters).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// A token read from a Secret value: trimmed, UTF-8, not empty.
    pub fn from_secret_value(bytes: &[u8]) -> Option<Token> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        (!text.is_empty()).then(|| Token(text.to_owned()))
    }

    /// The token itself, for building the URL shown to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn sha256_hex(&self) -> String {
        crate::route::token_sha256_hex(&self.0)
    }

    /// The URL form shown in status: everything but the last 4 characters redacted.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `****` plus the last 4 characters (all hidden when the token is shorter than 12).
pub fn redact(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 12 {
        return "****".into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("****{tail}")
}

/// The SHA-256 of what a request presented, as raw bytes (the table's key).
pub fn digest(presented: &[u8]) -> [u8; 32] {
    Sha256::digest(presented).into()
}

/// Decodes a route's lowercase hex hash; `None` when it is not 64 hex digits.
pub fn decode_hex_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_the_token_and_redaction_keeps_four() {
        let t = Token::new("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.redacted(), "****wxyz");
        assert_eq!(
            Token::new("short").redacted(),
            "****",
            "short tokens are hidden whole"
        );
    }

    #[test]
    fn hex_hash_round_trips_with_the_route_form() {
        let hex = crate::route::token_sha256_hex("abc");
        assert_eq!(decode_hex_hash(&hex), Some(digest(b"abc")));
        assert_eq!(decode_hex_hash("zz"), None);
    }
}
