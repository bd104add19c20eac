//! Per-event cost of the mapping engine on a Stripe `invoice.paid` payload (1.9 KB): the
//! DESIGN example mapping (condition, id, externalId, email with a filter, timestamp,
//! `properties.from` plus three fields, hashed email), body already parsed.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hookgate::api::mapping::MappingSpec;
use hookgate::mapping::{
    CompiledMapping, EventSource, ProjectedBody, Projection, Request, ShapeObserver, map_request,
    parse_body,
};
use jiff::Timestamp;

/// The binary's allocator (src/main.rs). An event is mostly small strings and a map, so the
/// engine's cost per event depends on the allocator; measured as the ingest runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STRIPE: &[u8] = include_bytes!("../src/mapping/testdata/stripe_invoice_paid.json");

const MAPPING: &str = r#"
sourceRef: {name: stripe}
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
"#;

fn compiled(privacy: bool) -> Vec<CompiledMapping> {
    let mut yaml = MAPPING.to_owned();
    if privacy {
        yaml.push_str("privacy: {hash: [email]}\n");
    }
    let spec: MappingSpec = serde_yaml::from_str(&yaml).expect("benchmark mapping parses");
    vec![
        CompiledMapping::compile("stripe-invoice-paid", &spec).expect("benchmark mapping compiles"),
    ]
}

fn mapping(c: &mut Criterion) {
    let body = parse_body(Some("application/json"), STRIPE).expect("fixture parses");
    let received = Timestamp::from_second(1_717_250_000).expect("valid time");
    let headers = [("Stripe-Signature", "t=1717250000,v1=abc")];

    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::Elements(1));
    for (name, privacy) in [("stripe_event", false), ("stripe_event_hashed_email", true)] {
        let mappings = compiled(privacy);
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = Request::new(black_box(&body), received).with_headers(&headers);
                black_box(map_request(&mappings, &request))
            })
        });
    }

    // The same mapping on the body as the ingest hands it to the engine: only the values the
    // mapping reads were built, each where the projection put it, so nothing is searched.
    let mappings = compiled(false);
    let projection = Projection::of(&mappings);
    let projected = projection.parse_values(STRIPE).expect("fixture parses");
    assert!(matches!(projected, ProjectedBody::Values(_)));
    assert_eq!(
        map_request(
            &mappings,
            &Request::projected(&projection, &projected, received)
        ),
        map_request(&mappings, &Request::new(&body, received)),
        "the projected body maps to the same events"
    );
    group.bench_function("stripe_event_projected_body", |b| {
        b.iter(|| {
            let request = Request::projected(&projection, black_box(&projected), received)
                .with_headers(&headers);
            black_box(map_request(&mappings, &request))
        })
    });

    let mappings = compiled(true);
    let outcome = map_request(&mappings, &Request::new(&body, received));
    let source = EventSource::new("shop", "stripe");
    let mut line = Vec::with_capacity(1024);
    group.bench_function("write_json_line", |b| {
        b.iter(|| {
            line.clear();
            outcome.events[0].write_json_line(&source, &mut line);
            black_box(line.len())
        })
    });

    group.bench_function("parse_body", |b| {
        b.iter(|| black_box(parse_body(Some("application/json"), black_box(STRIPE))))
    });

    // What the ingest does on most requests: only the values the mapping reads, by slot.
    let projection = Projection::of(&mappings);
    group.bench_function("parse_projected", |b| {
        b.iter(|| black_box(projection.parse_values(black_box(STRIPE))))
    });
    // The same built as a tree of the paths read.
    group.bench_function("parse_projected_tree", |b| {
        b.iter(|| black_box(projection.parse(black_box(STRIPE))))
    });
    // The same through serde_json's deserializer (the scanner's reference and fallback).
    group.bench_function("parse_projected_serde", |b| {
        b.iter(|| black_box(projection.parse_serde(black_box(STRIPE))))
    });

    let mut shape = ShapeObserver::default();
    group.bench_function("shape_observe", |b| {
        b.iter(|| shape.observe(black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
