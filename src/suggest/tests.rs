//! Suggestions for the engine's sender fixtures: each guess checked, and each suggested Mapping
//! compiled and run on the payload it came from.

use jiff::Timestamp;
use serde_json::Value;

use super::*;
use crate::mapping::{self, CompiledMapping, Request, Verdict};

fn fixture(name: &str) -> Value {
    let path = format!("{}/src/mapping/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let content_type = if name.ends_with(".form") {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    mapping::parse_body(Some(content_type), &bytes).unwrap()
}

/// The CEL rules of the Mapping CRD, restated: a suggestion must pass `kubectl apply`.
fn assert_passes_crd_rules(m: &Mapping) {
    let e = &m.spec.event;
    assert!(!m.spec.source_ref.name.is_empty());
    assert!(!e.name.is_empty());
    assert!(
        e.visitor_id.is_some() || e.email.is_some() || e.external_id.is_some(),
        "no identity in {m:?}"
    );
    if let Some(p) = &e.properties {
        assert!(p.from.is_some() || p.fields.is_some());
    }
    for w in &m.spec.when {
        let set = [
            w.equals.is_some(),
            w.exists.is_some(),
            w.in_.is_some(),
            w.prefix.is_some(),
        ];
        assert_eq!(set.iter().filter(|s| **s).count(), 1);
    }
}

/// Compiles the suggestion and maps the sample with it: the sample must yield events.
fn run(
    s: &Suggestion,
    body: &Value,
    headers: &[(&str, &str)],
) -> Vec<mapping::MappedEvent<'static>> {
    assert_passes_crd_rules(&s.mapping);
    let compiled = CompiledMapping::compile("suggested", &s.mapping.spec)
        .unwrap_or_else(|e| panic!("suggestion does not compile: {e}\n{}", s.to_yaml()));
    let headers = Pairs(headers);
    let request = Request::new(body, Timestamp::UNIX_EPOCH).with_headers(&headers);
    let outcome = mapping::map_request(std::slice::from_ref(&compiled), &request);
    assert_eq!(
        outcome.verdict(),
        Verdict::Accepted,
        "{:?}\n{}",
        outcome.errors,
        s.to_yaml()
    );
    outcome.into_owned().events.into_vec()
}

/// `Headers` is implemented for the unsized slice; a sized handle lets it be a `&dyn Headers`.
struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl mapping::Headers for Pairs<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.header(name)
    }
}

fn guessed(s: &Suggestion, field: &str) -> bool {
    s.guesses.iter().any(|(f, _)| f == field)
}

#[test]
fn stripe_invoice_guesses_type_id_customer_email_and_created() {
    let body = fixture("stripe_invoice_paid.json");
    let s = suggest_from_payload("stripe", &body, &[]);
    let spec = &s.mapping.spec;
    let e = &spec.event;
    assert_eq!(e.name, "{{type}}");
    assert_eq!(e.id.as_deref(), Some("{{id}}"));
    assert_eq!(e.external_id.as_deref(), Some("{{data.object.customer}}"));
    assert_eq!(
        e.email.as_deref(),
        Some("{{data.object.customer_email | trim | lower}}")
    );
    assert_eq!(e.timestamp.as_deref(), Some("{{created}}"));
    let props = e.properties.as_ref().unwrap();
    assert_eq!(props.from.as_deref(), Some("{{data.object.metadata}}"));
    let fields = props.fields.as_ref().unwrap();
    assert_eq!(
        fields.get("amount_paid").map(String::as_str),
        Some("{{data.object.amount_paid}}")
    );
    assert!(fields.len() <= MAX_PROPERTIES);
    assert!(!fields.values().any(|t| t.contains("email")), "{fields:?}");
    assert_eq!(spec.when.len(), 1);
    assert_eq!(spec.when[0].path, "{{type}}");
    assert_eq!(spec.when[0].equals.as_deref(), Some("invoice.paid"));
    assert_eq!(
        s.mapping.metadata.name.as_deref(),
        Some("stripe-invoice-paid")
    );
    assert_eq!(spec.privacy.as_ref().unwrap().hash, ["email"]);

    let events = run(&s, &body, &[]);
    assert_eq!(events.len(), 1);
    assert_eq!(&*events[0].name, "invoice.paid");
    assert!(
        events[0]
            .external_id
            .as_deref()
            .unwrap()
            .starts_with("cus_")
    );
}

#[test]
fn github_push_takes_name_and_id_from_headers_and_sender_as_identity() {
    let body = fixture("github_push.json");
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("Content-Type", "application/json"),
    ];
    let s = suggest_from_payload("github", &body, &headers);
    let e = &s.mapping.spec.event;
    assert_eq!(e.name, "{{$header.X-GitHub-Event}}");
    assert_eq!(e.id.as_deref(), Some("{{$header.X-GitHub-Delivery}}"));
    assert_eq!(e.external_id.as_deref(), Some("{{sender.id}}"));
    assert_eq!(e.visitor_id.as_deref(), Some("{{sender.login}}"));
    assert_eq!(e.timestamp.as_deref(), Some("{{head_commit.timestamp}}"));
    assert_eq!(s.mapping.spec.when[0].equals.as_deref(), Some("push"));

    let events = run(&s, &body, &headers);
    assert_eq!(&*events[0].name, "push");
    assert_eq!(events[0].id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
}

#[test]
fn shopify_order_prefers_top_level_email_and_customer_id() {
    let body = fixture("shopify_orders_create.json");
    let headers = [("X-Shopify-Topic", "orders/create")];
    let s = suggest_from_payload("shopify", &body, &headers);
    let e = &s.mapping.spec.event;
    assert_eq!(e.name, "{{$header.X-Shopify-Topic}}");
    assert_eq!(e.id.as_deref(), Some("{{id}}"));
    assert_eq!(e.email.as_deref(), Some("{{email | trim | lower}}"));
    assert_eq!(e.external_id.as_deref(), Some("{{customer.id}}"));
    assert_eq!(e.timestamp.as_deref(), Some("{{created_at}}"));
    assert_eq!(
        s.mapping.metadata.name.as_deref(),
        Some("shopify-orders-create")
    );
    run(&s, &body, &headers);
}

#[test]
fn batch_without_top_level_identity_becomes_a_for_each() {
    let body = fixture("batch_events.json");
    let s = suggest_from_payload("app-events", &body, &[]);
    let spec = &s.mapping.spec;
    assert_eq!(spec.for_each.as_deref(), Some("{{events}}"));
    assert!(guessed(&s, "forEach"));
    assert_eq!(spec.event.name, "{{$item.type}}");
    assert_eq!(spec.event.id.as_deref(), Some("{{$item.messageId}}"));
    assert_eq!(spec.event.external_id.as_deref(), Some("{{$item.userId}}"));
    assert_eq!(
        spec.event.visitor_id.as_deref(),
        Some("{{$item.anonymousId}}")
    );
    assert_eq!(spec.event.timestamp.as_deref(), Some("{{$item.timestamp}}"));
    assert!(
        spec.when.is_empty(),
        "per-element names cannot narrow the request"
    );
    let events = run(&s, &body, &[]);
    let with_ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert!(with_ids.starts_with(&["m-1", "m-2", "m-3"]), "{with_ids:?}");
}

#[test]
fn twilio_form_hashes_the_phone_number_and_names_the_event_statically() {
    let body = fixture("twilio_sms.form");
    let s = suggest_from_payload("twilio-sms", &body, &[]);
    let e = &s.mapping.spec.event;
    assert_eq!(e.name, "twilio-sms event");
    assert_eq!(e.id.as_deref(), Some("{{MessageSid}}"));
    assert_eq!(e.external_id.as_deref(), Some("{{From | sha256}}"));
    assert!(e.timestamp.is_none());
    let fields = e.properties.as_ref().unwrap().fields.as_ref().unwrap();
    assert!(
        !fields
            .values()
            .any(|t| t.contains("From}") || t.contains("Sid")),
        "{fields:?}"
    );
    let events = run(&s, &body, &[]);
    assert_eq!(events[0].external_id.as_deref().map(str::len), Some(64));
}

#[test]
fn no_identity_field_gives_a_placeholder_that_fails_loudly() {
    let body: Value = serde_json::json!({"type": "ping", "zen": "Keep it simple", "n": 3});
    let s = suggest_from_payload("pinger", &body, &[]);
    assert_passes_crd_rules(&s.mapping);
    assert_eq!(
        s.mapping.spec.event.external_id.as_deref(),
        Some(PLACEHOLDER_IDENTITY)
    );
    let compiled = CompiledMapping::compile("s", &s.mapping.spec).unwrap();
    let request = Request::new(&body, Timestamp::UNIX_EPOCH);
    let outcome = mapping::map_request(std::slice::from_ref(&compiled), &request);
    assert_eq!(outcome.verdict(), Verdict::Unprocessable);
    assert!(s.to_yaml().contains("placeholder"));
}

#[test]
fn from_status_fields_alone_gives_the_same_event_fields_without_when() {
    let body = fixture("stripe_invoice_paid.json");
    let from_payload = suggest_from_payload("stripe", &body, &[]).mapping.spec;
    // What `/status` or `status.observedFields` carry: paths and types, no values.
    let status: Vec<ObservedField> =
        serde_json::from_value(serde_json::to_value(observe_payload(&body)).unwrap()).unwrap();
    let m = suggest_mapping("stripe", &status);
    assert_eq!(m.spec.event, from_payload.event);
    assert!(m.spec.when.is_empty());
    assert_eq!(m.metadata.name.as_deref(), Some("stripe-events"));
}

#[test]
fn empty_shape_still_compiles_and_passes_the_rules() {
    let m = suggest_mapping("quiet", &[]);
    assert_passes_crd_rules(&m);
    CompiledMapping::compile("s", &m.spec).unwrap();
}

#[test]
fn yaml_is_the_manifest_with_guesses_commented() {
    let body = fixture("stripe_invoice_paid.json");
    let s = suggest_from_payload("stripe", &body, &[]);
    let yaml = s.to_yaml();
    let back: Mapping = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back.spec, s.mapping.spec);
    assert_eq!(back.metadata.name, s.mapping.metadata.name);
    assert!(yaml.contains("kind: Mapping"));
    assert!(
        yaml.contains("#   email: from {{data.object.customer_email}}"),
        "{yaml}"
    );
    let email_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("email:"))
        .unwrap();
    assert!(email_line.ends_with("# guess"), "{email_line}");
}

#[test]
fn keys_with_dots_are_split_like_templates() {
    assert_eq!(
        split_keys(r#"metadata["order.ref"].x"#),
        ["metadata", "order.ref", "x"]
    );
    assert_eq!(split_keys("Items.0.SKU"), ["Items", "0", "SKU"]);
}

#[test]
fn status_json_of_the_admin_port_yields_the_learned_fields() {
    use crate::ingest::status::SourceStatus;
    let status = SourceStatus::default();
    status.observe(&fixture("stripe_invoice_paid.json"));
    let snapshot = status.snapshot("default", "stripe", &[]);
    // The admin port's `/status` shape: `{"sources": [snapshot + notes]}`.
    let text = serde_json::json!({"sources": [snapshot]}).to_string();
    let fields = fields_from_status(&text, "stripe").unwrap();
    assert!(fields.iter().any(|f| f.path == "{{data.object.customer}}"));
    assert_eq!(
        suggest_mapping("stripe", &fields)
            .spec
            .event
            .external_id
            .as_deref(),
        Some("{{data.object.customer}}")
    );
    let err = fields_from_status(&text, "github").unwrap_err().to_string();
    assert!(err.contains("sources: stripe"), "{err}");
    // A WebhookSource as `kubectl get -o json` prints it.
    let resource = serde_json::json!({"status": {"observedFields": fields}}).to_string();
    assert_eq!(fields_from_status(&resource, "stripe").unwrap(), fields);
    let empty = serde_json::json!({"status": {}}).to_string();
    assert!(
        fields_from_status(&empty, "stripe")
            .unwrap_err()
            .to_string()
            .contains("send it a webhook")
    );
}

#[test]
fn chunked_bodies_are_joined() {
    assert_eq!(
        dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "hello world"
    );
}
