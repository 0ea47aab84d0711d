//! Allocator policy for batch jobs (fine-tuning, evaluation).
//!
//! Training and evaluation allocate and free tensors of tens of megabytes at every step.
//! glibc serves those with fresh `mmap`s (above its dynamic threshold) and hands freed
//! memory back at once, so the kernel zeroes the same pages again on the next step: in
//! `perf`, `clear_page_erms` took 21% of a pico fine-tuning step. Keeping freed memory for
//! reuse made pico fine-tuning 1.6x faster, and tiny_starcoder_py's at batch 4 1.7x, at the
//! same peak RSS (BENCHMARKS.md).
//!
//! The server does not do this: it idles between bursts, and its peak-RSS target (< 1.3x the
//! weights) is met with glibc's defaults, not with this (1.41x, measured).

/// Keep freed memory in the process for the next allocation (glibc only; a no-op elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Every block comes from the heap, not from a fresh mmap (glibc's mmap threshold
        // cannot go past 32 MiB, and tiny_starcoder_py's attention scores at batch 4 are
        // 50 MB a layer); the heap top is returned to the system only past 1 GiB free.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only sets allocator parameters (under glibc's arena lock); it does
        // not touch allocated memory.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
        };
        if !ok {
            tracing::debug!("mallopt refused the batch-job allocator settings");
        }
    }
}
