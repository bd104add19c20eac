//! Signature verification on the raw body, before parsing (DESIGN §2, issue #6).
//!
//! NOT IMPLEMENTED YET: this is the hook only. A route without `signature` passes. A route
//! that requires a scheme is refused with 401 for every request, because accepting requests
//! whose signature nobody checked would let anyone who learns the URL forge events while the
//! operator believes they are verified. Issue #6 replaces [`verify`]'s body with the schemes
//! (github, stripe, standardWebhooks, shopify, hmac), constant-time MAC comparison and the
//! replay window; the call site in the server stays as it is.

use crate::mapping::Headers;
use crate::route::RouteSignature;

/// Why a request was refused; the message goes to the sender and to `recentErrors` (stage
/// `auth`), so it never contains a secret or a received signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "signature type {0} is configured for this source but this version of hookgate cannot verify it yet; requests are refused rather than accepted unverified"
    )]
    SchemeNotImplemented(&'static str),
}

/// Checks a request's signature against the route's settings.
pub fn verify(
    signature: Option<&RouteSignature>,
    _headers: &dyn Headers,
    _body: &[u8],
    _now_unix: i64,
) -> Result<(), VerifyError> {
    let Some(signature) = signature else {
        return Ok(());
    };
    Err(VerifyError::SchemeNotImplemented(scheme_name(
        signature.scheme,
    )))
}

/// Whether [`verify`] can check this scheme (none yet: issue #6). Lets callers warn at
/// start-up instead of letting the first 401 be the surprise.
pub fn is_implemented(_scheme: crate::api::webhook_source::SignatureScheme) -> bool {
    false
}

pub fn scheme_name(scheme: crate::api::webhook_source::SignatureScheme) -> &'static str {
    use crate::api::webhook_source::SignatureScheme as S;
    match scheme {
        S::Github => "github",
        S::Stripe => "stripe",
        S::StandardWebhooks => "standardWebhooks",
        S::Shopify => "shopify",
        S::Hmac => "hmac",
    }
}
