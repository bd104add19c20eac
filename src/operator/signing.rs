//! The signing secret of a source's `signature`, and its rotation window.
//!
//! A rotation is declared, not detected: `signature.secretRef` names the new secret,
//! `previousSecretRef` the one being replaced and `previousSecretExpiresAt` (an absolute RFC 3339
//! time) when the old one stops being accepted. Until then the route carries both (the current
//! one first), so a sender can switch at any moment within the window. At its end the ingest
//! stops accepting the old one by itself (the route carries the time, as it does for a previous
//! token), and the operator, requeued for that moment, publishes the route without it, reports
//! it on status and records an Event. Nothing in the spec has to change for the window to close,
//! and re-applying the same manifest from Git never reopens it.
//!
//! Why declared rather than detected (the operator noticing the Secret's value change and
//! keeping the old value for a while): the operator does not watch users' Secrets (it re-reads
//! them every `--secret-resync`), so a changed value would be refused for up to that long
//! before it was noticed, and the old value would have to be copied into a Secret of the
//! operator's. Declared, both secrets are in force before the sender switches.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;

use super::conditions::Verdict;
use super::source::parse_duration_secs;
use super::{Context, Error, token};
use crate::api::SecretKeyRef;
use crate::api::webhook_source::{Signature, WebhookSource};
use crate::route::RouteSignature;

pub const SIGNATURE_READY: &str = "SignatureReady";
const DEFAULT_SECRET_KEY: &str = "secret";
const DEFAULT_TOLERANCE: u64 = 300;

/// Where a declared rotation window stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// No previous secret declared.
    None,
    /// The previous secret is accepted until this time.
    Open(Timestamp),
    /// The window closed at this time; the previous secret is not accepted.
    Closed(Timestamp),
    /// The expiry cannot be read (the CRD's rule refuses this; an object stored before it
    /// existed lands here): the previous secret is not accepted.
    Invalid,
}

/// Pure: the window of `signature` at `now`.
pub fn window(signature: &Signature, now: Timestamp) -> Window {
    let (Some(_), Some(at)) = (
        &signature.previous_secret_ref,
        signature.previous_secret_expires_at.as_deref(),
    ) else {
        return Window::None;
    };
    match at.parse::<Timestamp>() {
        Ok(at) if at > now => Window::Open(at),
        Ok(at) => Window::Closed(at),
        Err(_) => Window::Invalid,
    }
}

/// A window's end as the route carries it: unix seconds, rounded up because the ingest
/// compares whole seconds and must not cut the window short.
pub fn end_unix(until: Timestamp) -> i64 {
    until.as_second() + i64::from(until.subsec_nanosecond() > 0)
}

/// What the signature step found.
pub struct SigningOutcome {
    /// The secrets to publish; `None` withdraws the route (no usable current secret).
    pub route: Option<RouteSignature>,
    pub verdict: Option<Verdict>,
    /// While the previous secret is in the route: when it stops being accepted.
    pub previous_until: Option<Timestamp>,
    /// When to reconcile again to close the window on time.
    pub requeue: Option<Duration>,
}

/// Reads the signing Secret(s) a source names.
pub async fn resolve(
    source: &WebhookSource,
    ns: &str,
    now: Timestamp,
    ctx: &Context,
) -> Result<SigningOutcome, Error> {
    let none = SigningOutcome {
        route: None,
        verdict: None,
        previous_until: None,
        requeue: None,
    };
    let Some(sig) = &source.spec.signature else {
        return Ok(none);
    };
    let Some(reference) = &sig.secret_ref else {
        return Ok(SigningOutcome {
            verdict: Some(Verdict::fail(
                SIGNATURE_READY,
                "SignatureSecretMissing",
                "signature.secretRef is required",
            )),
            ..none
        });
    };
    let current = match read(ns, reference, ctx).await? {
        Ok(value) => value,
        Err(problem) => {
            return Ok(SigningOutcome {
                verdict: Some(Verdict::fail(
                    SIGNATURE_READY,
                    "SignatureSecretNotFound",
                    format!("signature.secretRef: {problem}"),
                )),
                ..none
            });
        }
    };
    let mut route = RouteSignature {
        scheme: sig.scheme,
        secrets: vec![current],
        previous_until: None,
        tolerance_seconds: sig
            .tolerance
            .as_deref()
            .and_then(parse_duration_secs)
            .unwrap_or(DEFAULT_TOLERANCE),
        header: sig.header.clone(),
        algorithm: sig.algorithm,
        encoding: sig.encoding,
        prefix: sig.prefix.clone(),
    };
    let from = format!("signing secret from Secret {}", reference.name);
    let previous = sig.previous_secret_ref.as_ref();
    let previous_name = previous.map(|p| p.name.as_str()).unwrap_or_default();
    let (verdict, previous_until, requeue) = match window(sig, now) {
        Window::None => (
            Verdict::ok(SIGNATURE_READY, "SecretFound", from),
            None,
            None,
        ),
        Window::Closed(at) => (
            Verdict::ok(
                SIGNATURE_READY,
                "SecretFound",
                format!(
                    "{from}; the previous one (Secret {previous_name}) stopped being accepted at {at}"
                ),
            ),
            None,
            None,
        ),
        Window::Invalid => (
            Verdict::fail(
                SIGNATURE_READY,
                "InvalidRotationWindow",
                "signature.previousSecretExpiresAt is not an RFC 3339 time: the previous signing secret is not accepted",
            ),
            None,
            None,
        ),
        Window::Open(until) => {
            // Requeued for the expiry; a short floor keeps a timer firing a little early
            // from spinning.
            let left = Duration::from_millis(
                u64::try_from(until.duration_since(now).as_millis()).unwrap_or(0),
            )
            .max(Duration::from_millis(200));
            match read(ns, previous.expect("an open window has a reference"), ctx).await? {
                Ok(value) => {
                    route.secrets.push(value);
                    route.previous_until = Some(end_unix(until));
                    (
                        Verdict::ok(
                            SIGNATURE_READY,
                            "RotationWindow",
                            format!(
                                "{from}; the previous one (Secret {previous_name}) is also accepted until {until}"
                            ),
                        ),
                        Some(until),
                        Some(left),
                    )
                }
                // The current secret still serves: senders that already switched keep
                // working, and the condition says why the others get 401.
                Err(problem) => (
                    Verdict::fail(
                        SIGNATURE_READY,
                        "PreviousSignatureSecretNotFound",
                        format!(
                            "signature.previousSecretRef: {problem}; only the current signing secret is accepted"
                        ),
                    ),
                    None,
                    Some(left),
                ),
            }
        }
    };
    Ok(SigningOutcome {
        route: Some(route),
        verdict: Some(verdict),
        previous_until,
        requeue,
    })
}

/// A signing secret's value, or why there is none (the message names the Secret and key,
/// never a value).
async fn read(
    ns: &str,
    reference: &SecretKeyRef,
    ctx: &Context,
) -> Result<Result<String, String>, Error> {
    let key = reference.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY);
    let found = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&reference.name)
        .await
        .map_err(Error::GetSecret)?;
    let value = found
        .as_ref()
        .and_then(|s| token::secret_value(s, key))
        .and_then(|v| String::from_utf8(v).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    Ok(match (found, value) {
        (_, Some(v)) => Ok(v),
        (None, None) => Err(format!(
            "Secret {} not found in namespace {ns}",
            reference.name
        )),
        (Some(_), None) => Err(format!(
            "Secret {} has no non-empty key {key}",
            reference.name
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::webhook_source::SignatureScheme;

    fn signature(expires: Option<&str>) -> Signature {
        Signature {
            scheme: SignatureScheme::Github,
            secret_ref: Some(SecretKeyRef {
                name: "new".into(),
                key: None,
            }),
            previous_secret_ref: expires.map(|_| SecretKeyRef {
                name: "old".into(),
                key: None,
            }),
            previous_secret_expires_at: expires.map(Into::into),
            tolerance: None,
            header: None,
            algorithm: None,
            encoding: None,
            prefix: None,
        }
    }

    #[test]
    fn the_window_is_open_until_the_declared_time_and_closed_from_it() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let expiry = "2026-12-01T00:00:00Z";
        assert_eq!(window(&signature(None), at(expiry)), Window::None);
        assert_eq!(
            window(&signature(Some(expiry)), at("2026-11-30T23:59:59Z")),
            Window::Open(at(expiry))
        );
        assert_eq!(
            window(&signature(Some(expiry)), at(expiry)),
            Window::Closed(at(expiry))
        );
        // Offsets are honoured: 01:00+01:00 is midnight UTC.
        assert_eq!(
            window(
                &signature(Some("2026-12-01T01:00:00+01:00")),
                at("2026-12-01T00:00:01Z")
            ),
            Window::Closed(at(expiry))
        );
        assert_eq!(
            window(&signature(Some("tomorrow")), at(expiry)),
            Window::Invalid
        );
    }
}
