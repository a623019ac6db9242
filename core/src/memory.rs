//! How the binaries ask the allocator to give memory back.

/// Makes every allocation of 128 KiB or more a mapping of its own, returned to the system when
/// freed. glibc otherwise raises that threshold to the largest block freed so far (up to 32 MiB),
/// after which large rows' buffers come from per-thread arenas that keep them: reading rows of
/// 8 MiB, the server's peak grew to 213 MiB instead of 67 (tests/tests/limits.rs). Called once,
/// first thing in `main`; elsewhere than glibc it does nothing.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
