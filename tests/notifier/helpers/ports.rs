//! Ports for the processes a test starts (a notifier, a redis-server) to listen on.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports below the kernel's ephemeral range that [`free_port`] draws from.
const SPAN: u16 = 12_000;

/// A loopback port for a child process to listen on, never handed out twice in this test binary.
/// Drawn from below the kernel's ephemeral range: a port the kernel picks (bind to port 0), closed
/// and passed to a child, can meanwhile become the local port of an outgoing connection of a test
/// running beside it, and the child then cannot listen on it (the fault campaign in bench/ hit
/// exactly that: a replica refused its API address).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768u16);
    let low = ephemeral_low.saturating_sub(SPAN).max(1024);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = fastrand::u16(low..ephemeral_low);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port between {low} and {ephemeral_low}");
}
