use std::process::ExitCode;

/// See Cargo.toml: the ingest allocates a small tree per request, where mimalloc is much
/// cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    hookgate::cli::main()
}

/// mimalloc commits its arena eagerly on Linux, and where transparent huge pages are on
/// (`madvise` here, `always` on many nodes) each touched 2 MiB of it became a whole huge page:
/// the ingest's heap was 10.9 MB at start instead of 1.7 MB, and 34 MB with 1,000 idle routes
/// instead of 15 MB (BENCHMARKS.md, "Ingest memory"). The flag is per process and applies to
/// pages faulted from then on, so it is set before mimalloc's constructor (priority 101) and
/// the runtime's first allocations, which in `main` were already two huge pages. mimalloc's
/// own `MIMALLOC_ALLOW_THP=0` does the same, but only as an environment variable.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00100")]
static NO_TRANSPARENT_HUGE_PAGES: extern "C" fn() = no_transparent_huge_pages;

#[cfg(target_os = "linux")]
extern "C" fn no_transparent_huge_pages() {
    use std::ffi::{c_int, c_ulong};
    const PR_SET_THP_DISABLE: c_int = 41;
    unsafe extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    let (on, unused): (c_ulong, c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument (the rest must be zero) and only
    // sets a flag of this process, which its children inherit (`hookgate dev`'s control
    // plane: harmless). A kernel without it fails the call and THP stays as it was.
    unsafe {
        prctl(PR_SET_THP_DISABLE, on, unused, unused, unused);
    }
}
