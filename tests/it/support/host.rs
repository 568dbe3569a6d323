//! What the machine gives the tests: free loopback ports, and whether this
//! process runs as root.

/// A loopback port that was free when asked (bound on port 0 and
/// released), for a child server that takes its port on the command line.
/// Another process may take it before the child binds it: the launchers
/// fail loudly, naming the port, if the child does not listen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("the bound address")
        .port()
}

/// Whether this process runs as root (effective user id 0): the mount tests
/// need it, and PostgreSQL, which refuses root, then runs as `postgres`.
/// `geteuid` cannot fail, so the answer is never a guess.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the `CI` environment variable says this is a CI run (set, and
/// neither empty, `0` nor `false`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}
