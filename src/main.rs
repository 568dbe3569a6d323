//! The `sealgate` binary: see [`sealgate::cli`].
//!
//! Before the runtime starts it fixes glibc's mmap threshold, so freed
//! request buffers go back to the system instead of fragmenting the heap,
//! and raises its trim threshold, so the heap's free top is not handed back
//! and faulted in again on every request,
//! lets a client command end quietly on a closed pipe, and for `serve`
//! raises the soft descriptor limit to the hard one. Those calls, and the
//! library's SM4 kernel (`crypto::sm4::x86`), are the package's only
//! `unsafe`: the library denies it everywhere else.

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
/// 159 MiB with the threshold fixed.
///
/// Fixing it also fixes the trim threshold at its default of 128 KiB:
/// whenever more than that is free at the top of a heap arena, glibc gives
/// it back (`madvise`, with a TLB shootdown across the cores) and the next
/// requests fault it in again. Signed HTTP reads of 64 KiB then ran at
/// 12,000 to 21,000 requests/s from one process start to the next, the
/// slow ones spending a fifth of their time in page faults and
/// cross-core calls; with 32 MiB, 20,000 to 21,000 every time (`TARGETS=sealgate
/// DURATION=4 cargo bench --bench http`), and the uploads above hold no
/// more after the load (176 MiB either way). Called before any other
/// thread exists, as `mallopt` requires.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no other thread runs yet, and the parameters and values are
    // valid for mallopt(3); a failure leaves glibc's default behaviour.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
}

/// Lets a client command end the way any Unix tool does when its reader
/// goes (`sealgate audit | head -1`): killed by SIGPIPE, quietly. Rust
/// ignores SIGPIPE, so `println!` panics on the broken pipe (exit 101 and
/// a panic message); this panic hook turns exactly that panic into the
/// signal. SIGPIPE itself stays ignored: a socket write to a gateway that
/// closed the connection (`writev` has no MSG_NOSIGNAL) must fail as an
/// error the command reports, not end it silently.
#[allow(unsafe_code)]
fn end_quietly_on_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            // SAFETY: signal(2) with SIG_DFL and raise(3) have no effect
            // but ending the process by SIGPIPE, as a shell tool ends.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        default(info);
    }));
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
