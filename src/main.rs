use std::process::ExitCode;

/// See Cargo.toml: the ingest allocates a small tree per request, where mimalloc is much
/// cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    hookgate::cli::main()
}
