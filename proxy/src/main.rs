/// mimalloc, not glibc's malloc: the daemon frees on one thread what another allocated (audit
/// records built by request tasks, committed and dropped by the audit writer thread), which
/// under load made glibc's arena lock ~15 % of the writer's time, and the query path allocates
/// per request. Measured with `audit/examples/writer_cost.rs` (benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
