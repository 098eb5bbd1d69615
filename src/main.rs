//! The `vetted` binary: see `vetted --help`.
fn main() -> std::process::ExitCode {
    vetted_server::cli::main()
}
