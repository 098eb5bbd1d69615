//! The `vetted` binary: see `vetted --help`.

/// mimalloc instead of the system allocator: the engine allocates many small, short-lived
/// buffers from several threads (events decoded, rows encoded), where glibc's malloc spent a
/// quarter of a rebuild's CPU consolidating and splitting chunks (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vetted_server::cli::main()
}
