//! Signature headers: any bytes as the headers of any scheme must give `Ok` or a `VerifyError`,
//! never a panic; the header parsers must accept only what they can decode; a random header
//! must essentially never verify (libFuzzer would have to forge an HMAC); and no error message
//! may quote the secret.
#![no_main]

use hookgate::api::webhook_source::{HmacAlgorithm, SignatureEncoding, SignatureScheme};
use hookgate::ingest::verify::{self, parse_standard_signatures, parse_stripe_header};
use hookgate::route::RouteSignature;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SCHEMES: [SignatureScheme; 5] = [
    SignatureScheme::Github,
    SignatureScheme::Stripe,
    SignatureScheme::StandardWebhooks,
    SignatureScheme::Shopify,
    SignatureScheme::Hmac,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Up to three header values separated by NUL, then the body.
    let mut parts = rest.splitn(4, |b| *b == 0);
    let a = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let b = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let c = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    let _ = parse_stripe_header(&a);
    if let Ok(list) = parse_standard_signatures(&a) {
        assert!(!list.is_empty() && list.iter().all(|m| m.as_slice().len() == 32));
    }

    let scheme = SCHEMES[usize::from(selector) % SCHEMES.len()];
    let signature = RouteSignature {
        scheme,
        secrets: vec![SECRET.into()],
        previous_until: None,
        tolerance_seconds: u64::from(selector >> 4) * 60,
        header: Some("x-signature".into()),
        algorithm: Some(if selector & 8 == 0 {
            HmacAlgorithm::Sha256
        } else {
            HmacAlgorithm::Sha1
        }),
        encoding: Some(if selector & 16 == 0 {
            SignatureEncoding::Hex
        } else {
            SignatureEncoding::Base64
        }),
        prefix: (selector & 32 != 0).then(|| "sha256=".into()),
    };
    let headers: [(&str, &str); 7] = [
        ("x-hub-signature-256", &a),
        ("stripe-signature", &a),
        ("x-shopify-hmac-sha256", &a),
        ("x-signature", &a),
        ("webhook-signature", &a),
        ("webhook-id", &b),
        ("webhook-timestamp", &c),
    ];
    match verify::verify(Some(&signature), &headers, body, 1_700_000_000) {
        Ok(()) => panic!("a fuzzed signature verified"),
        // Whether a message echoes the received header is checked by the unit tests: here a
        // header equal to message text (which libFuzzer's comparison tracing finds) would look
        // like an echo.
        Err(e) => assert!(!e.to_string().contains(SECRET)),
    }
});
