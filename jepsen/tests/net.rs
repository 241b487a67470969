//! The test network's faults, seen from a client in the harness'
//! namespace (needs root, as every fault-injection run).

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cairn_jepsen::delay::Latency;
use cairn_jepsen::net::Net;

/// How long a member's kernel takes to refuse a connection (its RST is
/// a packet the member sends, so it is delayed like any other).
fn refusal_time(net: &Net, member: usize) -> Duration {
    let addr = SocketAddr::from((net.addr(member), 9));
    let start = Instant::now();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => start.elapsed(),
        other => panic!("connecting to a closed port of member {member}: {other:?}"),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn latency_delays_what_a_member_sends_and_heals() {
    let net = Net::create(2).expect("test network");
    let before = median((0..10).map(|_| refusal_time(&net, 0)).collect());
    assert!(before < Duration::from_millis(20), "before: {before:?}");

    let latency = Latency {
        delay: Duration::from_millis(120),
        jitter: Duration::from_millis(20),
    };
    net.delay(&[0], latency, 1).expect("delay member 0");
    // Every connection is refused, none lost, and each waits at least the
    // smallest delay; the other member is not delayed.
    let delayed: Vec<Duration> = (0..10).map(|_| refusal_time(&net, 0)).collect();
    for d in &delayed {
        assert!(*d >= Duration::from_millis(100), "delayed: {delayed:?}");
    }
    assert!(median(delayed) < Duration::from_millis(500));
    assert!(refusal_time(&net, 1) < Duration::from_millis(50));

    net.heal().expect("heal");
    let after = median((0..10).map(|_| refusal_time(&net, 0)).collect());
    assert!(after < Duration::from_millis(20), "after: {after:?}");
}
