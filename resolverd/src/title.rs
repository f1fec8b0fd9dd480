//! A process's title as `ps` and `pgrep -f` show it (/proc/<pid>/cmdline: the kernel reads
//! the argument area of the process's stack), rewritten as setproctitle does: the resolver's
//! supervisor shows itself as such, and each resolver it forks shows the plugin's command
//! line again.

/// Rewrites this process's command line (what /proc/<pid>/cmdline shows: the kernel reads
/// the argument area of its stack) to `args`, and its name to `embedns-superv`, as
/// setproctitle does; skipped when `args` do not fit in the area the plugin's arguments took.
/// Call only once nothing reads `std::env::args` any more.
pub fn set(args: &[&str]) {
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"embedns-superv".as_ptr()) };
    let mut text = args.join("\0").into_bytes();
    text.push(0);
    restore(&text);
}

/// Writes `text` (an area's bytes, or a title's) over the argument area, NUL-padded; nothing
/// if it does not fit.
pub fn restore(text: &[u8]) {
    let Some((start, end)) = area() else {
        return;
    };
    let len = end.saturating_sub(start);
    if text.len() > len || text.is_empty() {
        return;
    }
    let mut text = text.to_vec();
    text.resize(len, 0);
    // SAFETY: [arg_start, arg_end) is this process's own argument area on its stack, mapped
    // writable, which Rust's `args` (already parsed into owned values) no longer reads.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), start as *mut u8, len) };
}

/// `arg_start` and `arg_end` of /proc/self/stat (fields 48 and 49).
pub fn area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some((rest.get(45)?.parse().ok()?, rest.get(46)?.parse().ok()?))
}
