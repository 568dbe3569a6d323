//! The `sealgate` binary: see [`sealgate::cli`].
//!
//! Before the runtime starts it fixes glibc's mmap threshold, so freed
//! request buffers go back to the system instead of fragmenting the heap,
//! lets a client command end quietly on a closed pipe, and for `serve`
//! raises the soft descriptor limit to the hard one. Those calls are the
//! package's only `unsafe`, outside the library's `forbid(unsafe_code)`.

fn main() -> std::process::ExitCode {
    tune_allocator();
    if std::env::args().nth(1).as_deref() == Some("serve") {
        sealgate::server::descriptors::record_raise(raise_descriptor_limit());
    } else {
        end_quietly_on_a_closed_pipe();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(sealgate::cli::main())
}

/// Fixes glibc's mmap threshold at its default of 128 KiB. Left to itself
/// glibc raises the threshold to the size of the largest block freed, so
/// after the first uploads every 1 MiB request message is carved out of
/// the heap arenas, which then fragment and never shrink: measured with
/// `sealgate bench --workload put --size 16777216 --concurrency 256`, peak
/// RSS 598 MiB and 550 MiB held after the load, against 513 MiB and
/// 159 MiB with the threshold fixed. Called before any other thread
/// exists, as `mallopt` requires.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no other thread runs yet, and the parameter and value are
    // valid for mallopt(3); a failure leaves glibc's default behaviour.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Restores SIGPIPE's default action for the client commands, so that
/// `sealgate audit | head -1` ends the command the way it ends any Unix
/// tool, quietly, when `head` stops reading: Rust ignores SIGPIPE, and
/// `println!` then panics on the broken pipe (exit 101 and a panic
/// message). Never for `serve`, whose sockets must report a vanished peer
/// as an error, not end the process. Called before any other thread
/// exists.
#[allow(unsafe_code)]
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: no other thread runs yet; SIG_DFL is a valid disposition for
    // SIGPIPE, and signal(2) has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, for `serve`: the
/// default soft limit (often 1,024) is what a connection flood exhausts,
/// while the hard limit is usually far higher. Returns (soft before, hard,
/// the error if raising failed); `serve` logs it once logging starts and
/// derives its default limits from the limit now in force
/// (`sealgate::server::descriptors`).
#[allow(unsafe_code)]
fn raise_descriptor_limit() -> std::io::Result<(u64, u64, Option<std::io::Error>)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes only the struct it is given, valid here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= hard {
        return Ok((soft, hard, None));
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit(2) reads only the struct it is given, valid here.
    let failed = (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0)
        .then(std::io::Error::last_os_error);
    Ok((soft, hard, failed))
}
