//! The heap the ingest holds per installed route (issue 8: 1,000 idle routes under 30 MB of
//! RSS), counted by a wrapping global allocator. One test in this binary, so no other test's
//! allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use hookgate::ingest::{Metrics, RouteTable, Sinks};
use hookgate::route::{Route, token_sha256_hex};
use hookgate::sink::WriterSink;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn delta(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(delta(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(delta(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(delta(new_size) - delta(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A route as the operator publishes it for `scripts/measure-operator`'s sources: one token,
/// one mapping with two templates, dedup off.
fn route_json(i: usize) -> String {
    serde_json::json!({
        "namespace": "bench", "name": format!("source-{i}"), "generation": 1,
        "tokens": [{"sha256": token_sha256_hex(&format!("token-{i}"))}],
        "enabled": true, "maxBodyBytes": 1_048_576, "dedupWindowSeconds": 0,
        "mappings": [{"name": format!("mapping-{i}"), "generation": 1, "spec": {
            "sourceRef": {"name": format!("source-{i}")},
            "event": {"name": "Order", "id": "{{id}}", "email": "{{customer.email | lower}}"}
        }}]
    })
    .to_string()
}

fn fill(table: &RouteTable, jsons: &[String]) {
    // One at a time, as the cluster's watch delivers them.
    for json in jsons {
        let route: Route = serde_json::from_str(json).unwrap();
        let report = table.upsert(route);
        assert!(report.mapping_errors.is_empty() && report.route_errors.is_empty());
    }
    assert_eq!(table.snapshot().routes().count(), jsons.len());
}

#[test]
fn a_route_holds_under_5_kb_of_heap_and_gives_it_back_when_removed() {
    const N: usize = 1000;
    let jsons: Vec<String> = (0..N).map(route_json).collect();
    let table = Arc::new(RouteTable::new(
        Sinks::single(WriterSink::stdout()),
        Arc::new(Metrics::new()),
    ));
    let empty = live();
    fill(&table, &jsons);
    let held = live() - empty;
    let per_route = held / delta(N);
    eprintln!("heap held per route: {per_route} B");
    // 6,700 B on 2026-11-29 before the specs were dropped and the metric series made lazy;
    // 3,872 B after; 4,775 B at the end of session 4; 4,991 B with the projection's slots and
    // each mapping's wiring to them (session 5); 5,063 B with status and counters split per
    // thread (session 7, 2 CPUs: the shards themselves are created by the first request).
    assert!(per_route < 5 * 1024, "{per_route} B per route");

    table.replace(Vec::new());
    let left = live() - empty;
    eprintln!("left after removing every route: {left} B");
    // What stays is capacity: the metric families' maps do not shrink.
    assert!(
        left < held / 10,
        "{left} of {held} B left after removing {N} routes"
    );

    fill(&table, &jsons);
    let again = live() - empty;
    eprintln!("held after removing and adding them again: {again} B");
    assert!(
        again < held + 64 * 1024,
        "{again} B, was {held} B: removed routes left state"
    );
}
