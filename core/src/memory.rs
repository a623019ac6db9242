//! How the binaries ask the allocator to give memory back.

/// Blocks of at least this many bytes are mappings of their own, returned to the system when
/// freed.
pub const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory at the top of an allocator arena beyond this many bytes is returned to the
/// system.
pub const TRIM_THRESHOLD: i32 = 8 << 20;

/// Fixes glibc's two thresholds (`MMAP_THRESHOLD`, `TRIM_THRESHOLD`). glibc otherwise raises the
/// mapping threshold to the largest block freed so far (up to 32 MiB), after which large rows'
/// buffers come from per-thread arenas that keep them: reading rows of 8 MiB, the server's peak
/// grew to 213 MiB instead of 67 (tests/tests/limits.rs). A threshold of 128 KiB kept that peak
/// low but made every request body, bind buffer and forwarding buffer of a busy server (1-3 MiB
/// each) a fresh mapping whose pages the kernel zeroes at first touch: that zeroing was 4% of the
/// batched server's CPU without forwarding sinks and 12% with three (docs/PERFORMANCE.md,
/// "Forwarding to a SIEM"); the price is a higher resident peak (55 instead of 47 MiB without
/// sinks, about 250 instead of 224 with three). Called once, first thing in `main`; elsewhere
/// than glibc it does nothing.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
