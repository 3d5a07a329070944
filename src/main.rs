fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    kiln::cli::main()
}

/// glibc gives threads that allocate at once arenas of their own (up to
/// 8 per core) and hands little of a freed arena back to the system, so
/// the index parse, the .deb readers and the layer writers, each on other
/// threads, each leave their peak resident: a cold build's RSS was the sum
/// of its phases' peaks, not the largest. Two arenas keep the threads from
/// queueing on one lock while the phases reuse each other's memory.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt is called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
