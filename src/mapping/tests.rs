//! The engine end to end, against realistic sender payloads in `testdata/`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::api::mapping::MappingSpec;

fn spec(yaml: &str) -> MappingSpec {
    let full = format!("sourceRef: {{name: src}}\n{yaml}");
    serde_yaml::from_str(&full).unwrap_or_else(|e| panic!("bad test spec: {e}\n{full}"))
}

fn compile(name: &str, yaml: &str) -> CompiledMapping {
    CompiledMapping::compile(name, &spec(yaml)).unwrap_or_else(|e| panic!("{e}"))
}

fn compile_errors(yaml: &str) -> Vec<String> {
    match CompiledMapping::compile("m", &spec(yaml)) {
        Ok(_) => panic!("expected compile errors"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/src/mapping/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let content_type = if name.ends_with(".form") {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    parse_body(Some(content_type), &bytes).unwrap()
}

fn received() -> Timestamp {
    Timestamp::from_second(1_717_250_000).unwrap()
}

/// Maps `body` as a tree, and checks that the ingest's way — the body's JSON parsed into the
/// values the mappings' projection reads, with no tree — maps the same.
fn run(mappings: &[CompiledMapping], body: &Value) -> MapOutcome<'static> {
    let raw = serde_json::to_vec(body).unwrap();
    map_both_ways(mappings, body, &raw)
}

/// Maps `tree` and the projection of `raw` (its JSON), checks they map the same, and returns
/// the outcome.
fn map_both_ways(mappings: &[CompiledMapping], tree: &Value, raw: &[u8]) -> MapOutcome<'static> {
    let outcome = map_request(mappings, &Request::new(tree, received()));
    let projection = Projection::of(mappings);
    let projected = projection.parse_values(raw).unwrap();
    let by_slot = map_request(
        mappings,
        &Request::projected(&projection, &projected, received()),
    );
    assert_eq!(
        without_generated_ids(by_slot),
        without_generated_ids(outcome.clone()),
        "projected body maps differently: {}",
        String::from_utf8_lossy(raw)
    );
    outcome.into_owned()
}

/// Generated event ids are random; everything else is compared.
fn without_generated_ids(mut outcome: MapOutcome<'_>) -> MapOutcome<'_> {
    for event in &mut outcome.events {
        if event.id_generated {
            event.id.clear();
        }
    }
    outcome
}

const STRIPE_MAPPING: &str = r#"
when:
  - {path: "{{type}}", equals: "invoice.paid"}
event:
  name: Purchase
  id: "{{id}}"
  externalId: "{{data.object.customer}}"
  email: "{{data.object.customer_email | lower}}"
  timestamp: "{{created}}"
  properties:
    from: "{{data.object.metadata}}"
    fields:
      amount: "{{data.object.amount_paid}}"
      currency: "{{data.object.currency}}"
      channel: web
privacy:
  hash: [email]
"#;

#[test]
fn stripe_invoice_paid_becomes_a_purchase_with_hashed_email() {
    let mapping = compile("stripe-invoice-paid", STRIPE_MAPPING);
    let outcome = run(&[mapping], &fixture("stripe_invoice_paid.json"));
    assert_eq!(outcome.verdict(), Verdict::Accepted);
    assert_eq!(outcome.matched.len(), 1);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let event = &outcome.events[0];

    let source = EventSource::new("shop", "stripe");
    assert_eq!(
        event.to_cloud_event_value(&source),
        json!({
            "specversion": "1.0",
            "id": "evt_1PqR2sLkdIwHu7ix3bZ0aB1c",
            "source": "/namespaces/shop/webhooksources/stripe",
            "type": "Purchase",
            "time": "2024-06-01T12:00:00Z",
            "datacontenttype": "application/json",
            "data": {
                "event": "Purchase",
                "eventId": "evt_1PqR2sLkdIwHu7ix3bZ0aB1c",
                "visitorId": null,
                "externalId": "cus_QhGkLm9NpO2rSt",
                // sha256("ada.lovelace@example.com"): trimmed and lowercased before hashing.
                "email": template::sha256_hex(b"ada.lovelace@example.com"),
                "timestamp": "2024-06-01T12:00:00Z",
                "properties": {
                    "plan": "monthly",
                    "channel": "web",
                    "order.ref": "A-1001",
                    "amount": 2000,
                    "currency": "usd",
                },
                "receivedAt": "2024-06-01T13:53:20Z",
                "mapping": "stripe-invoice-paid",
            }
        })
    );
    assert!(!event.id_generated);
}

#[test]
fn stripe_event_of_another_type_is_ignored() {
    let mapping = compile("stripe-invoice-paid", STRIPE_MAPPING);
    let mut body = fixture("stripe_invoice_paid.json");
    body["type"] = json!("invoice.created");
    let outcome = run(&[mapping], &body);
    assert_eq!(outcome.verdict(), Verdict::Ignored);
    assert!(outcome.matched.is_empty());
    assert!(outcome.events.is_empty() && outcome.errors.is_empty());
}

#[test]
fn github_push_reads_the_event_header_and_converts_offsets_to_utc() {
    let mapping = compile(
        "github-push",
        r#"
when:
  - {path: "{{$header.X-GitHub-Event}}", equals: push}
event:
  name: "github.{{$header.x-github-event}}"
  id: "{{$header.X-GitHub-Delivery}}"
  visitorId: "{{sender.login}}"
  externalId: "{{sender.id}}"
  timestamp: "{{head_commit.timestamp}}"
  properties:
    fields:
      repo: "{{repository.full_name}}"
      branch: "{{ref}}"
      commits: "{{commits.0.id}}"
"#,
    );
    let body = fixture("github_push.json");
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ];
    let outcome = map_request(
        std::slice::from_ref(&mapping),
        &Request::new(&body, received()).with_headers(&headers),
    );
    let event = &outcome.events[0];
    assert_eq!(&*event.name, "github.push");
    assert_eq!(event.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(event.visitor_id.as_deref(), Some("octocat"));
    // Numbers become text in identity fields, formatted as JSON writes them.
    assert_eq!(event.external_id.as_deref(), Some("583231"));
    assert_eq!(event.timestamp.to_string(), "2024-06-01T11:59:10Z");
    assert_eq!(
        event.properties.to_map()["commits"],
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
    );

    let ping = [("X-GitHub-Event", "ping")];
    let ignored = map_request(
        std::slice::from_ref(&mapping),
        &Request::new(&body, received()).with_headers(&ping),
    );
    assert_eq!(ignored.verdict(), Verdict::Ignored);
}

#[test]
fn shopify_order_keeps_64_bit_ids_exact() {
    let mapping = compile(
        "shopify-orders",
        r#"
when:
  - {path: "{{$header.X-Shopify-Topic}}", in: [orders/create, orders/paid]}
event:
  name: Order Completed
  id: "{{$header.X-Shopify-Webhook-Id}}"
  externalId: "{{customer.id}}"
  email: "{{email}}"
  timestamp: "{{created_at}}"
  properties:
    fields:
      orderId: "{{id}}"
      total: "{{total_price}}"
      firstSku: "{{line_items.0.sku}}"
      items: "{{line_items}}"
"#,
    );
    let body = fixture("shopify_orders_create.json");
    let headers = [
        ("X-Shopify-Topic", "orders/create"),
        (
            "X-Shopify-Webhook-Id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ];
    let outcome = map_request(
        std::slice::from_ref(&mapping),
        &Request::new(&body, received()).with_headers(&headers),
    );
    let event = &outcome.events[0];
    assert_eq!(event.external_id.as_deref(), Some("115310627314723954"));
    assert_eq!(
        event.properties.to_map()["orderId"],
        json!(820982911946154508_u64)
    );
    assert_eq!(event.properties.to_map()["total"], "403.00");
    assert_eq!(event.properties.to_map()["firstSku"], "IPOD-342-N");
    assert_eq!(
        event.properties.to_map()["items"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(event.timestamp.to_string(), "2024-06-01T14:00:00Z");
}

const BATCH_MAPPING: &str = r#"
forEach: "{{events}}"
when:
  - {path: "{{$item.type}}", equals: track}
event:
  name: "{{$item.event}}"
  id: "{{$item.messageId}}"
  visitorId: "{{$item.anonymousId}}"
  externalId: "{{$item.userId}}"
  timestamp: "{{$item.timestamp}}"
  properties:
    from: "{{$item.properties}}"
    fields:
      batch: "{{batch_id}}"
privacy:
  drop: [properties.card.number]
"#;

#[test]
fn batched_sender_yields_one_event_per_matching_element() {
    let outcome = run(
        &[compile("batch", BATCH_MAPPING)],
        &fixture("batch_events.json"),
    );
    let ids: Vec<&str> = outcome.events.iter().map(|e| e.id.as_str()).collect();
    // m-2 is an identify (filtered by the $item condition); m-4 has no identity.
    assert_eq!(ids, ["m-1", "m-3"]);
    assert_eq!(outcome.verdict(), Verdict::Accepted);
    assert_eq!(
        outcome.events[0].timestamp.to_string(),
        "2024-06-01T12:00:00.123Z"
    );
    assert_eq!(
        outcome.events[0].properties.to_map(),
        *json!({"plan": "free", "batch": "b-77"})
            .as_object()
            .unwrap()
    );
    // Other paths still read the whole body; privacy.drop removed the card number only.
    assert_eq!(
        outcome.events[1].properties.to_map(),
        *json!({"plan": "pro", "card": {"brand": "visa"}, "batch": "b-77"})
            .as_object()
            .unwrap()
    );
    assert_eq!(outcome.matched.len(), 1);
}

#[test]
fn batch_element_without_identity_is_an_error_naming_the_element_and_fields() {
    let outcome = run(
        &[compile("batch", BATCH_MAPPING)],
        &fixture("batch_events.json"),
    );
    assert_eq!(outcome.errors.len(), 1);
    let error = &outcome.errors[0];
    assert_eq!(error.item, Some(3));
    assert_eq!(
        error.to_string(),
        "mapping batch: forEach item 3: event has no identity: visitorId ({{$item.anonymousId}}), \
         externalId ({{$item.userId}}) all resolved empty"
    );
}

#[test]
fn for_each_over_an_empty_array_matches_but_is_ignored() {
    let mapping = compile(
        "all",
        "forEach: \"{{events}}\"\nevent: {name: X, externalId: \"{{$item.id}}\"}",
    );
    let outcome = run(&[mapping], &json!({"events": []}));
    assert_eq!(outcome.verdict(), Verdict::Ignored);
    assert_eq!(outcome.matched.len(), 1);
}

#[test]
fn item_conditions_no_element_meets_do_not_match() {
    let outcome = run(
        &[compile("batch", BATCH_MAPPING)],
        &json!({"events": [{"type": "page"}]}),
    );
    assert_eq!(outcome.verdict(), Verdict::Ignored);
    assert!(outcome.matched.is_empty());
}

#[test]
fn for_each_over_a_non_array_is_an_error_with_the_type_not_the_value() {
    let outcome = run(
        &[compile("batch", BATCH_MAPPING)],
        &json!({"events": {"secret": "x"}}),
    );
    assert_eq!(outcome.verdict(), Verdict::Unprocessable);
    assert_eq!(
        outcome.errors[0].message,
        "forEach ({{events}}) is an object, not an array"
    );
    let missing = run(&[compile("batch", BATCH_MAPPING)], &json!({}));
    assert_eq!(
        missing.errors[0].message,
        "forEach ({{events}}) is missing, not an array"
    );
}

#[test]
fn for_each_over_a_top_level_array_body() {
    let mapping = compile(
        "sendgrid",
        r#"
forEach: "{{.}}"
event: {name: "{{$item.event}}", email: "{{$item.email}}", id: "{{$item.sg_event_id}}"}
"#,
    );
    let body = json!([
        {"email": "a@example.com", "event": "delivered", "sg_event_id": "e1"},
        {"email": "b@example.com", "event": "open", "sg_event_id": "e2"}
    ]);
    let names: Vec<String> = run(&[mapping], &body)
        .events
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(names, ["delivered", "open"]);
}

#[test]
fn twilio_form_message_maps_phone_number_as_hashed_external_id() {
    let mapping = compile(
        "twilio-sms",
        r#"
when: [{path: "{{SmsStatus}}", equals: received}]
event:
  name: SMS Received
  id: "{{MessageSid}}"
  externalId: "{{From}}"
  properties:
    fields: {body: "{{Body}}", media: "{{NumMedia}}", city: "{{FromCity | lower}}"}
privacy: {hash: [externalId, properties.body]}
"#,
    );
    let outcome = run(&[mapping], &fixture("twilio_sms.form"));
    let event = &outcome.events[0];
    assert_eq!(
        event.external_id,
        Some(template::sha256_hex(b"+14155550123"))
    );
    assert_eq!(
        event.properties.to_map()["body"],
        template::sha256_hex(b"Hello, is my order shipped?")
    );
    assert_eq!(event.properties.to_map()["media"], "0");
    assert_eq!(event.properties.to_map()["city"], "san francisco");
    // No timestamp mapped: the receive time.
    assert_eq!(event.timestamp, received());
}

#[test]
fn slack_interaction_payload_is_mappable() {
    let mapping = compile(
        "slack",
        r#"
when: [{path: "{{payload.type}}", prefix: block_}]
event:
  name: "{{payload.actions.0.action_id}}"
  externalId: "{{payload.user.id}}"
  timestamp: "{{payload.actions.0.action_ts}}"
"#,
    );
    let event = &run(&[mapping], &fixture("slack_interaction.form")).events[0];
    assert_eq!(&*event.name, "approve");
    assert_eq!(event.timestamp.to_string(), "2023-11-14T22:13:20.0001Z");
}

#[test]
fn empty_identity_is_unprocessable_and_the_message_has_no_payload_values() {
    let mapping = compile(
        "m",
        r#"
event: {name: Signup, email: "{{user.email | trim}}", externalId: "{{user.id}}"}
"#,
    );
    let outcome = run(
        &[mapping],
        &json!({"user": {"email": "   ", "name": "Ada Secret"}}),
    );
    assert_eq!(outcome.verdict(), Verdict::Unprocessable);
    assert!(outcome.events.is_empty());
    let message = outcome.errors[0].to_string();
    assert_eq!(
        message,
        "mapping m: event has no identity: email ({{user.email | trim}}), externalId ({{user.id}}) all resolved empty"
    );
    assert!(!message.contains("Ada"));
}

#[test]
fn whitespace_only_identity_counts_as_empty() {
    let mapping = compile("m", "event: {name: X, externalId: \"{{x}}\"}");
    let outcome = run(&[mapping], &json!({"x": " \t "}));
    assert_eq!(outcome.verdict(), Verdict::Unprocessable);
    // Hashed as it is read: a blank value must not become the hash of nothing.
    let hashed = compile(
        "m",
        "event: {name: X, externalId: \"{{x}}\", email: \"{{e}}\"}\nprivacy: {hash: [externalId, email]}",
    );
    let outcome = run(&[hashed], &json!({"x": " \t ", "e": "A@B.com"}));
    assert_eq!(outcome.events[0].external_id, None);
    assert_eq!(
        outcome.events[0].email,
        Some(template::sha256_hex(b"a@b.com"))
    );
}

#[test]
fn single_identity_field_message_reads_naturally() {
    let mapping = compile("m", "event: {name: X, visitorId: \"{{v}}\"}");
    let outcome = run(&[mapping], &json!({"v": ""}));
    assert_eq!(
        outcome.errors[0].message,
        "event has no identity: visitorId ({{v}}) resolved empty"
    );
}

#[test]
fn one_identity_field_is_enough() {
    let mapping = compile(
        "m",
        "event: {name: X, visitorId: \"{{v}}\", email: \"{{e}}\"}",
    );
    let outcome = run(&[mapping], &json!({"v": "anon-1"}));
    assert_eq!(outcome.events[0].visitor_id.as_deref(), Some("anon-1"));
    assert_eq!(outcome.events[0].email, None);
}

#[test]
fn every_matching_mapping_produces_its_events() {
    let purchase = compile("purchase", STRIPE_MAPPING);
    let audit = compile(
        "audit",
        r#"
when: [{path: "{{type}}", prefix: "invoice."}]
event: {name: "stripe.{{type}}", externalId: "{{data.object.customer}}"}
"#,
    );
    let unrelated = compile(
        "refunds",
        "when: [{path: \"{{type}}\", equals: charge.refunded}]\nevent: {name: R, externalId: x}",
    );
    let mappings = [purchase, unrelated, audit];
    let outcome = run(&mappings, &fixture("stripe_invoice_paid.json"));
    let names: Vec<&str> = outcome.events.iter().map(|e| &*e.name).collect();
    assert_eq!(names, ["Purchase", "stripe.invoice.paid"]);
    let matched: Vec<&str> = outcome
        .matched
        .iter()
        .map(|&m| mappings[m].name())
        .collect();
    assert_eq!(matched, ["purchase", "audit"]);
    assert_eq!(&*outcome.events[1].mapping, "audit");
}

#[test]
fn a_failing_mapping_does_not_stop_a_succeeding_one() {
    let ok = compile("ok", "event: {name: A, externalId: \"{{id}}\"}");
    let failing = compile("failing", "event: {name: B, email: \"{{email}}\"}");
    let outcome = run(&[failing, ok], &json!({"id": "1"}));
    assert_eq!(outcome.verdict(), Verdict::Accepted);
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(&*outcome.errors[0].mapping, "failing");
}

#[test]
fn no_mappings_means_ignored() {
    assert_eq!(run(&[], &json!({})).verdict(), Verdict::Ignored);
}

fn matches(condition: &str, body: &Value) -> bool {
    let mapping = compile(
        "m",
        &format!("when: [{condition}]\nevent: {{name: X, externalId: x}}"),
    );
    !run(&[mapping], body).matched.is_empty()
}

#[test]
fn equals_compares_as_text() {
    let body = json!({"n": 42, "f": 1.5, "b": true, "s": "42"});
    assert!(matches(r#"{path: "{{n}}", equals: "42"}"#, &body));
    assert!(matches(r#"{path: "{{s}}", equals: "42"}"#, &body));
    assert!(matches(r#"{path: "{{f}}", equals: "1.5"}"#, &body));
    assert!(matches(r#"{path: "{{b}}", equals: "true"}"#, &body));
    assert!(!matches(r#"{path: "{{n}}", equals: "42.0"}"#, &body));
    assert!(!matches(r#"{path: "{{missing}}", equals: ""}"#, &body));
}

#[test]
fn exists_treats_null_as_absent() {
    let body = json!({"a": 1, "z": null, "e": ""});
    assert!(matches(r#"{path: "{{a}}", exists: true}"#, &body));
    assert!(matches(r#"{path: "{{e}}", exists: true}"#, &body));
    assert!(!matches(r#"{path: "{{z}}", exists: true}"#, &body));
    assert!(matches(r#"{path: "{{z}}", exists: false}"#, &body));
    assert!(matches(r#"{path: "{{nope}}", exists: false}"#, &body));
    assert!(!matches(r#"{path: "{{a}}", exists: false}"#, &body));
}

#[test]
fn in_and_prefix_compare_as_text() {
    let body = json!({"t": "orders/create", "code": 201});
    assert!(matches(
        r#"{path: "{{t}}", in: [orders/paid, orders/create]}"#,
        &body
    ));
    assert!(!matches(r#"{path: "{{t}}", in: [orders/paid]}"#, &body));
    assert!(matches(r#"{path: "{{code}}", in: ["200", "201"]}"#, &body));
    assert!(matches(r#"{path: "{{t}}", prefix: "orders/"}"#, &body));
    assert!(matches(r#"{path: "{{code}}", prefix: "2"}"#, &body));
    assert!(!matches(r#"{path: "{{missing}}", prefix: ""}"#, &body));
}

#[test]
fn all_conditions_must_hold() {
    let body = json!({"a": "x", "b": "y"});
    assert!(matches(
        r#"{path: "{{a}}", equals: x}, {path: "{{b}}", equals: y}"#,
        &body
    ));
    assert!(!matches(
        r#"{path: "{{a}}", equals: x}, {path: "{{b}}", equals: z}"#,
        &body
    ));
}

#[test]
fn conditions_can_use_filters_and_query_parameters() {
    let mapping = compile(
        "m",
        r#"
when: [{path: "{{$query.env | lower}}", equals: prod}]
event: {name: X, externalId: x}
"#,
    );
    let body = json!({});
    let prod = map_request(
        std::slice::from_ref(&mapping),
        &Request::new(&body, received()).with_query("env=PROD"),
    );
    assert_eq!(prod.verdict(), Verdict::Accepted);
    let dev = map_request(
        std::slice::from_ref(&mapping),
        &Request::new(&body, received()).with_query("env=dev"),
    );
    assert_eq!(dev.verdict(), Verdict::Ignored);
}

#[test]
fn fields_win_over_from_and_missing_fields_are_left_out() {
    let mapping = compile(
        "m",
        r#"
event:
  name: X
  externalId: x
  properties:
    from: "{{meta}}"
    fields: {plan: "{{override}}", absent: "{{nope}}", fixed: "yes"}
"#,
    );
    let event = &run(
        &[mapping],
        &json!({"meta": {"plan": "free", "keep": 1}, "override": "pro"}),
    )
    .events[0];
    assert_eq!(
        event.properties.to_map(),
        *json!({"plan": "pro", "keep": 1, "fixed": "yes"})
            .as_object()
            .unwrap()
    );
}

/// The properties are written as JSON while merging: the same bytes as building the map (the
/// members of `from`, then each present field inserted over them) and writing it, for keys
/// that sort before, between, after and equal to each other.
#[test]
fn merged_properties_are_the_bytes_of_the_merged_map() {
    let keys = ["", "a", "ab", "B", "b", "é", "z\"q", "zz"];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut meta = serde_json::Map::new();
        let mut input = serde_json::Map::new();
        let mut fields = serde_json::Map::new();
        for (i, key) in keys.iter().enumerate() {
            match next() % 4 {
                0 => {}
                1 => {
                    meta.insert((*key).into(), json!(i));
                }
                2 => {
                    fields.insert((*key).into(), json!(format!("{{{{in.f{i}}}}}")));
                    if next() % 2 == 0 {
                        input.insert(format!("f{i}"), json!({"n": i, "s": "x\ny"}));
                    }
                }
                _ => {
                    meta.insert((*key).into(), json!([i, null]));
                    fields.insert((*key).into(), json!(format!("{{{{in.f{i}}}}}")));
                    if next() % 2 == 0 {
                        input.insert(format!("f{i}"), json!(format!("v{i}")));
                    }
                }
            }
        }
        let yaml = format!(
            "event: {{name: X, externalId: x, properties: {{from: \"{{{{meta}}}}\", fields: {}}}}}",
            Value::Object(fields.clone())
        );
        let body = json!({"meta": meta, "in": input});
        let event = &run(&[compile("m", &yaml)], &body).events[0];

        let mut expected = meta.clone();
        for (key, template) in &fields {
            let path = template.as_str().unwrap().trim_matches(['{', '}']);
            let field = path.strip_prefix("in.").unwrap();
            if let Some(value) = input.get(field) {
                expected.insert(key.clone(), value.clone());
            }
        }
        assert_eq!(
            event.properties,
            Properties::from_map(&expected),
            "meta {meta:?}, fields {fields:?}, input {input:?}"
        );
    }
}

/// [`run`] for bodies a `Value` cannot write: with duplicate keys or spacing.
fn run_raw(mappings: &[CompiledMapping], raw: &str) -> MapOutcome<'static> {
    let projected = Projection::of(mappings).parse_values(raw.as_bytes());
    assert!(matches!(projected, Ok(ProjectedBody::Values(_))), "{raw}");
    let tree = parse_body(Some("application/json"), raw.as_bytes()).unwrap();
    map_both_ways(mappings, &tree, raw.as_bytes())
}

/// An object of scalars read whole is borrowed from the body by the projection
/// ([`Kept::Members`]); everything a template does with it must be what it does with the map.
#[test]
fn a_borrowed_object_maps_as_the_same_object_in_a_tree() {
    let mappings = [
        compile(
            "props",
            r#"
event:
  name: X
  externalId: "{{meta.b}}"
  email: "{{meta | default: 'none'}}"
  properties:
    from: "{{meta}}"
    fields: {a: "{{meta.a}}", whole: "{{meta}}", deep: "{{meta.b.c}}"}
"#,
        ),
        compile(
            "when",
            r#"
when:
  - {path: "{{meta}}", equals: '{"a":1,"b":"y","n":null}'}
event: {name: Y, externalId: "{{meta | sha256}}", timestamp: "{{meta}}"}
"#,
        ),
        compile(
            "each",
            r#"
forEach: "{{meta}}"
event: {name: Z, externalId: x}
"#,
        ),
    ];
    for raw in [
        // Duplicates: the later one wins, as in a map.
        r#"{"meta": {"b": "x", "a": 1, "b": "y", "n": null}}"#,
        r#"{ "meta" : { "t" : true , "b" : "café" , "b" : "é" } }"#,
        r#"{"meta": {}}"#,
        // Not borrowed: an escaped key, a nested object, an array.
        r#"{"meta": {"b": "escaped", "a": 1}}"#,
        r#"{"meta": {"a": {"x": 1}, "b": "y"}}"#,
        r#"{"meta": {"b": "y", "l": [1]}}"#,
        r#"{"meta": "a string"}"#,
    ] {
        run_raw(&mappings, raw);
    }
    let outcome = run_raw(
        &mappings,
        r#"{"meta": {"b": "x", "a": 1, "b": "y", "n": null}}"#,
    );
    let props = &outcome.events[0];
    assert_eq!(props.external_id.as_deref(), Some("y"));
    assert_eq!(props.email.as_deref(), Some(r#"{"a":1,"b":"y","n":null}"#));
    assert_eq!(
        props.properties.as_bytes(),
        br#"{"a":1,"b":"y","n":null,"whole":{"a":1,"b":"y","n":null}}"#
    );
    assert_eq!(outcome.events.len(), 1, "{outcome:?}");
    let messages: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "mapping when: event.timestamp ({{meta}}) expected unix seconds, milliseconds or RFC 3339 text, found an object that is none of these",
            "mapping each: forEach ({{meta}}) is an object, not an array",
        ],
        "{outcome:?}"
    );
}

#[test]
fn properties_from_a_missing_object_is_empty_but_from_a_string_is_an_error() {
    let mapping = compile(
        "m",
        "event: {name: X, externalId: x, properties: {from: \"{{meta}}\"}}",
    );
    let empty = run(std::slice::from_ref(&mapping), &json!({}));
    assert!(empty.events[0].properties.is_empty());
    let wrong = run(&[mapping], &json!({"meta": "card 4242"}));
    assert_eq!(
        wrong.errors[0].message,
        "event.properties.from ({{meta}}) is a string, not an object"
    );
}

#[test]
fn whole_body_can_become_the_properties() {
    let mapping = compile(
        "m",
        "event: {name: X, externalId: \"{{id}}\", properties: {from: \"{{.}}\"}}",
    );
    let body = json!({"id": "1", "a": {"b": 2}});
    assert_eq!(
        run(&[mapping], &body).events[0].properties.to_map(),
        *body.as_object().unwrap()
    );
}

#[test]
fn missing_timestamp_is_the_receive_time_and_bad_ones_are_errors() {
    let mapping = compile(
        "m",
        "event: {name: X, externalId: x, timestamp: \"{{at}}\"}",
    );
    let absent = run(std::slice::from_ref(&mapping), &json!({}));
    assert_eq!(absent.events[0].timestamp, received());
    let bad = run(&[mapping], &json!({"at": "yesterday at 5"}));
    assert_eq!(
        bad.errors[0].message,
        "event.timestamp ({{at}}) expected unix seconds, milliseconds or RFC 3339 text, found a string that is none of these"
    );
}

#[test]
fn huge_numbers_do_not_panic_anywhere() {
    let mapping = compile(
        "m",
        "event: {name: \"n{{big}}\", externalId: \"{{big}}\", timestamp: \"{{big}}\", properties: {fields: {big: \"{{big}}\"}}}",
    );
    let body = parse_body(
        Some("application/json"),
        b"{\"big\": 123456789012345678901234567890}",
    )
    .unwrap();
    let outcome = run(std::slice::from_ref(&mapping), &body);
    assert_eq!(
        outcome.errors[0].message,
        "event.timestamp ({{big}}) is outside the supported range of years 1 to 9999"
    );
    let body = json!({"big": 1e20});
    let outcome = run(
        &[compile(
            "m",
            "event: {name: \"n{{big}}\", externalId: \"{{big}}\", properties: {fields: {big: \"{{big}}\"}}}",
        )],
        &body,
    );
    let event = &outcome.events[0];
    // Concatenation writes numbers as JSON does.
    assert_eq!(&*event.name, "n1e+20");
    assert_eq!(event.properties.to_map()["big"], json!(1e20));
}

#[test]
fn deeply_nested_paths_resolve() {
    let depth = 100;
    let text = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let body = parse_body(Some("application/json"), text.as_bytes()).unwrap();
    let path = vec!["a"; depth].join(".");
    let mapping = compile(
        "m",
        &format!("event: {{name: X, externalId: \"{{{{{path}}}}}\"}}"),
    );
    assert_eq!(
        run(&[mapping], &body).events[0].external_id.as_deref(),
        Some("1")
    );
}

#[test]
fn unmapped_event_id_is_a_fresh_uuid_v4() {
    let mapping = compile("m", "event: {name: X, externalId: x, id: \"{{id}}\"}");
    let outcome = run(&[mapping.clone(), mapping], &json!({}));
    let (a, b) = (&outcome.events[0], &outcome.events[1]);
    assert!(a.id_generated);
    assert_ne!(a.id, b.id);
    let uuid = uuid::Uuid::parse_str(&a.id).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
}

#[test]
fn privacy_hashes_identities_and_nested_properties_and_drops_paths() {
    let mapping = compile(
        "m",
        r#"
event:
  name: X
  visitorId: "{{v}}"
  externalId: "{{x}}"
  email: "{{e}}"
  properties: {from: "{{p}}"}
privacy:
  hash: [visitorId, externalId, email, properties.user.phone, properties.absent]
  drop: [properties.card, "properties.meta[\"ip.addr\"]", properties.nothing.here]
"#,
    );
    let body = json!({
        "v": " anon ", "x": "Cus_1", "e": " A@B.com ",
        "p": {"user": {"phone": 4155550123_u64, "name": "kept"}, "card": {"n": 1}, "meta": {"ip.addr": "10.0.0.1", "ok": 1}}
    });
    let event = &run(&[mapping], &body).events[0];
    use template::sha256_hex;
    assert_eq!(event.visitor_id, Some(sha256_hex(b"anon")));
    // Only email is case-folded: ids can be case-sensitive.
    assert_eq!(event.external_id, Some(sha256_hex(b"Cus_1")));
    assert_eq!(event.email, Some(sha256_hex(b"a@b.com")));
    assert_eq!(
        event.properties.to_map(),
        *json!({"user": {"phone": sha256_hex(b"4155550123"), "name": "kept"}, "meta": {"ok": 1}})
            .as_object()
            .unwrap()
    );
}

#[test]
fn design_example_error_reads_as_documented() {
    assert_eq!(
        compile_errors("event: {name: X, email: \"{{user.email | lowr}}\"}"),
        [
            "event.email: position 16: unknown filter \"lowr\" (expected default, lower, trim, sha256)"
        ]
    );
}

#[test]
fn compile_reports_every_problem_with_its_field() {
    let errors = compile_errors(
        r#"
when:
  - {path: "{{type}}", equals: a, prefix: b}
  - {path: "type", equals: a}
event:
  name: "{{$item.name}}"
  id: "{{id"
  timestamp: "{{ts | bogus}}"
  properties:
    fields: {amount: "{{a..b}}"}
privacy:
  hash: [phone]
  drop: [card.number]
"#,
    );
    assert_eq!(
        errors,
        [
            "when[0]: set exactly one of equals, exists, in or prefix",
            "when[1].path: \"type\" is a fixed value; write {{type}} to read that field",
            "event.name: position 3: $item is only available with forEach",
            "event.id: position 1: unclosed \"{{\" (expected \"}}\")",
            "event.timestamp: position 8: unknown filter \"bogus\" (expected default, lower, trim, sha256)",
            "event.properties.fields.amount: position 5: empty path segment (expected a field name)",
            "event: needs an identity: set at least one of visitorId, email or externalId",
            "privacy.hash[0]: \"phone\" is not email, visitorId, externalId or properties.<name>",
            "privacy.drop[0]: \"card.number\" is not a property path such as properties.card.number",
        ]
    );
}

#[test]
fn for_each_must_be_a_plain_body_path() {
    for for_each in ["{{items | lower}}", "items-{{x}}", "{{$header.X}}", "items"] {
        let errors = compile_errors(&format!(
            "forEach: \"{for_each}\"\nevent: {{name: X, externalId: \"{{{{$item.id}}}}\"}}"
        ));
        assert!(
            errors[0].starts_with("forEach: must be exactly one body path"),
            "{for_each}: {errors:?}"
        );
    }
}

#[test]
fn compile_errors_join_into_one_status_message() {
    let Err(errors) = CompiledMapping::compile(
        "m",
        &spec("event: {name: \"{{a\", externalId: \"{{b | x}}\"}"),
    ) else {
        panic!()
    };
    assert_eq!(
        errors.to_string(),
        "event.name: position 1: unclosed \"{{\" (expected \"}}\"); event.externalId: position 7: unknown filter \"x\" (expected default, lower, trim, sha256)"
    );
}

#[test]
fn read_paths_cover_every_template_with_item_paths_expanded() {
    let mapping = compile("batch", BATCH_MAPPING);
    let reads: Vec<String> = mapping
        .read_paths()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        reads,
        [
            "events.0.type",
            "events.0.event",
            "events.0.messageId",
            "events.0.anonymousId",
            "events.0.userId",
            "events.0.timestamp",
            "events.0.properties",
            "batch_id",
        ]
    );
}

#[test]
fn shape_learns_paths_types_and_counts() {
    let mut shape = ShapeObserver::default();
    shape.observe(&fixture("stripe_invoice_paid.json"));
    let mut body = fixture("stripe_invoice_paid.json");
    body["data"]["object"]["tax"] = json!(120);
    shape.observe(&body);
    let fields = shape.fields();
    let find = |path: &str| {
        fields
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not observed"))
    };
    let customer = find("{{data.object.customer}}");
    assert_eq!(customer.types.names().collect::<Vec<_>>(), ["string"]);
    assert_eq!(customer.seen, 2);
    assert_eq!(
        find("{{data.object.tax}}")
            .types
            .names()
            .collect::<Vec<_>>(),
        ["null", "number"]
    );
    assert_eq!(
        find("{{data.object.lines.data}}")
            .types
            .names()
            .collect::<Vec<_>>(),
        ["array"]
    );
    assert_eq!(find("{{data.object.lines.data.0.price.id}}").seen, 2);
    // Keys the bare syntax cannot carry are written so they parse back.
    find("{{data.object.metadata[\"order.ref\"]}}");
    // Tree order: containers first, then their fields by key.
    let position = |path: &str| fields.iter().position(|f| f.path == path).unwrap();
    assert!(position("{{data}}") < position("{{data.object}}"));
    assert!(position("{{data.object.lines}}") < position("{{data.object.lines.data}}"));
    assert!(position("{{data.object.amount_due}}") < position("{{data.object.amount_paid}}"));
    assert_eq!(shape.overflowed(), 0);
}

#[test]
fn shape_is_bounded() {
    let mut shape = ShapeObserver::new(100);
    let wide: serde_json::Map<String, Value> =
        (0..150).map(|i| (format!("k{i:03}"), json!(i))).collect();
    shape.observe(&Value::Object(wide.clone()));
    assert_eq!(shape.fields().len(), 100);
    assert_eq!(shape.overflowed(), 50);
    // Known paths keep counting once full.
    shape.observe(&Value::Object(wide));
    assert_eq!(shape.fields()[0].seen, 2);
}

#[test]
fn shape_merges_array_elements_under_index_zero() {
    let mut shape = ShapeObserver::default();
    shape.observe(&json!({"items": [{"sku": "a"}, {"sku": 2, "extra": 1}]}));
    let fields = shape.fields();
    let paths: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "{{items}}",
            "{{items.0}}",
            "{{items.0.extra}}",
            "{{items.0.sku}}"
        ]
    );
    assert_eq!(fields[3].seen, 2);
    assert_eq!(
        fields[3].types.names().collect::<Vec<_>>(),
        ["number", "string"]
    );
}

#[test]
fn shape_stops_at_a_bounded_depth() {
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let mut shape = ShapeObserver::default();
    shape.observe(&deep);
    let fields = shape.fields();
    assert_eq!(fields.len(), 12);
    assert_eq!(fields.last().map(|f| f.path.matches('a').count()), Some(12));
}

#[test]
fn shape_samples_long_arrays() {
    let mut shape = ShapeObserver::default();
    let items: Vec<Value> = (0..1000).map(|i| json!({"n": i})).collect();
    shape.observe(&json!({ "items": items }));
    let fields = shape.fields();
    assert_eq!(
        fields
            .iter()
            .find(|f| f.path == "{{items.0.n}}")
            .map(|f| f.seen),
        Some(16)
    );
}

#[test]
fn unmapped_lists_the_topmost_paths_no_mapping_reads() {
    let mut shape = ShapeObserver::default();
    shape.observe(&fixture("stripe_invoice_paid.json"));
    let mapping = compile("stripe-invoice-paid", STRIPE_MAPPING);
    let unmapped = shape.unmapped([&mapping]);
    for read in [
        "{{data}}",
        "{{data.object}}",
        "{{data.object.customer}}",
        "{{data.object.metadata}}",
        "{{data.object.metadata.plan}}",
        "{{type}}",
    ] {
        assert!(
            !unmapped.iter().any(|p| p == read),
            "{read} is read: {unmapped:?}"
        );
    }
    for unread in [
        "{{data.object.lines}}",
        "{{livemode}}",
        "{{request}}",
        "{{data.object.subtotal}}",
    ] {
        assert!(
            unmapped.iter().any(|p| p == unread),
            "{unread} is not read: {unmapped:?}"
        );
    }
    // Below an unread container, nothing is listed separately.
    assert!(
        !unmapped
            .iter()
            .any(|p| p.starts_with("{{data.object.lines."))
    );
    assert!(!unmapped.iter().any(|p| p.starts_with("{{request.")));
}

#[test]
fn unmapped_matches_array_indexes_and_for_each_items() {
    let mut shape = ShapeObserver::default();
    shape.observe(&fixture("batch_events.json"));
    let unmapped = shape.unmapped([&compile("batch", BATCH_MAPPING)]);
    assert_eq!(unmapped, ["{{events.0.traits}}", "{{sent_at}}"]);
    let whole = compile(
        "all",
        "event: {name: X, externalId: x, properties: {from: \"{{.}}\"}}",
    );
    assert!(shape.unmapped([&whole]).is_empty());
}

#[test]
fn compiled_mappings_and_events_can_cross_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<CompiledMapping>();
    shareable::<MappedEvent<'static>>();
    shareable::<MapOutcome<'static>>();
    shareable::<ShapeObserver>();
}
