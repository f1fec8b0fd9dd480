//! Capabilities, dropped one way by both daemons (the `caps` crate), for the calling thread
//! (capabilities are per thread in the kernel): first the bounding and ambient sets, which
//! needs CAP_SETPCAP; then, after a uid switch if there is one (it needs CAP_SETUID and
//! CAP_SETGID), the inheritable, effective and permitted sets, and no_new_privs.

use caps::CapSet;

/// A step of dropping capabilities failed.
#[derive(Debug, thiserror::Error)]
#[error("dropping the {set} capabilities: {reason}")]
pub struct DropError {
    pub set: &'static str,
    pub reason: String,
}

fn clear(set: CapSet, name: &'static str) -> Result<(), DropError> {
    caps::clear(None, set).map_err(|e| DropError {
        set: name,
        reason: e.to_string(),
    })
}

/// Empties the bounding and ambient sets: no process this thread execs can gain any.
pub fn drop_bounding_and_ambient() -> Result<(), DropError> {
    clear(CapSet::Bounding, "bounding")?;
    clear(CapSet::Ambient, "ambient")
}

/// Empties the inheritable, effective and permitted sets and sets no_new_privs.
pub fn drop_the_rest() -> Result<(), DropError> {
    clear(CapSet::Inheritable, "inheritable")?;
    clear(CapSet::Effective, "effective")?;
    clear(CapSet::Permitted, "permitted")?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| DropError {
        set: "no_new_privs",
        reason: e.to_string(),
    })
}

/// What both daemons' `--confinement-check` tries to show a confined process cannot run a
/// program: `execve("/bin/true")` itself (std's spawn blocks every signal around its clone,
/// and a call the resolver's filter traps while SIGSYS is blocked kills the process: the
/// kernel's rule for SECCOMP_RET_TRAP). Returns only with the refusal.
pub fn try_exec() -> std::io::Result<()> {
    let prog = c"/bin/true";
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<std::ffi::c_char>()];
    // SAFETY: NUL-terminated program, argv and envp; execve returns only on failure.
    nix::errno::Errno::result(unsafe {
        nix::libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr())
    })
    .map(drop)
    .map_err(std::io::Error::from)
}
