//! Added network latency without `tc netem` (which not every kernel has):
//! a firewall rule in a member's namespace hands every packet the member
//! sends to a netfilter queue (iptables' NFQUEUE target), and a thread of
//! the harness, living in that namespace, holds each packet for the delay
//! plus a random jitter before letting it go. Packets may overtake each
//! other when the jitter is wider than the gap between them, as with
//! netem; TCP puts them back in order.
//!
//! Only packet metadata crosses to the harness (copy range 0): the
//! verdict names the packet by id and the kernel keeps its bytes. The rule
//! bypasses the queue while no thread listens, and the queue fails open
//! when full, so the fault only ever delays, never drops (use `loss` for
//! that). Healing first removes the rule, then lets every held packet go
//! at once.
//!
//! A namespace's thread binds the queue once and keeps it for the whole
//! run: the socket is inherited by every process the harness starts after
//! it (cairn members among them), and while any of them lives the queue
//! stays bound to that socket, so a fresh socket could not bind it again.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::net::sh;

/// The netfilter queue number used inside a member's namespace (queue
/// numbers are per namespace).
const QUEUE: u16 = 0;
/// Packets the kernel holds for the thread before failing open.
const QUEUE_LEN: u32 = 1 << 16;

/// How long to hold each packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// Mean added delay.
    pub delay: Duration,
    /// Each packet's delay is uniformly random in `delay ± jitter`.
    pub jitter: Duration,
}

impl Latency {
    fn pick(&self, rng: &mut fastrand::Rng) -> Duration {
        let d = self.delay.as_micros() as i64;
        let j = self.jitter.as_micros().min(self.delay.as_micros()) as i64;
        Duration::from_micros((d + rng.i64(-j..=j)).max(0) as u64)
    }
}

/// A thread that can delay the packets one namespace sends out of
/// `eth0`.
pub struct Delayer {
    namespace: String,
    /// The latency packets get now; `None` lets every packet through.
    latency: Arc<Mutex<Option<Latency>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
}

impl Delayer {
    /// Starts the thread of `namespace` and binds its queue; nothing is
    /// delayed until [`Delayer::delay`]. Returns once the queue is bound.
    pub fn start(namespace: &str, seed: u64) -> Result<Delayer> {
        if crate::which("iptables").is_none() {
            bail!("iptables not found: scripts/test installs it");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let latency = Arc::new(Mutex::new(None));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let namespace = namespace.to_string();
            let (stop, latency) = (stop.clone(), latency.clone());
            std::thread::Builder::new()
                .name(format!("delay-{namespace}"))
                .spawn(move || hold_packets(&namespace, &latency, seed, &stop, ready_tx))
                .context("spawn a delay thread")?
        };
        let mut delayer = Delayer {
            namespace: namespace.to_string(),
            latency,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(()) => Ok(delayer),
            // The thread ended before binding: its error says why.
            Err(_) => Err(delayer
                .join()
                .err()
                .unwrap_or_else(|| anyhow!("delay thread ended"))),
        }
    }

    /// Holds every packet the namespace sends for `latency`.
    pub fn delay(&self, latency: Latency) -> Result<()> {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = Some(latency);
        // The thread holds packets: only now route them into the queue.
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.namespace,
                "iptables",
                "-w",
                "-A",
                "OUTPUT",
                "-o",
                "eth0",
                "-j",
                "NFQUEUE",
                "--queue-num",
                &QUEUE.to_string(),
                "--queue-bypass",
            ],
        )
        .map(|_| ())
    }

    /// Removes the rule and lets every held packet go.
    pub fn heal(&self) -> Result<()> {
        let unrouted = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.namespace,
                "iptables",
                "-w",
                "-F",
                "OUTPUT",
            ],
        );
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = None;
        unrouted.map(|_| ())
    }

    /// Heals, ends the thread, and returns how many packets it delayed.
    pub fn stop(&mut self) -> Result<u64> {
        let healed = self.heal();
        self.stop.store(true, Ordering::SeqCst);
        let delayed = self.join();
        healed?;
        delayed
    }

    fn join(&mut self) -> Result<u64> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("delay thread of {} panicked", self.namespace))?,
            None => Ok(0),
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// The delay thread: enters the namespace, binds its queue, then holds
/// each packet for the latency of the moment (none: lets it go) until
/// `stop`, and lets everything go. Returns how many packets it held.
fn hold_packets(
    namespace: &str,
    latency: &Mutex<Option<Latency>>,
    seed: u64,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> Result<u64> {
    let ns = File::open(format!("/run/netns/{namespace}"))
        .with_context(|| format!("open namespace {namespace}"))?;
    // Moves this thread only; the socket opened next stays in the
    // namespace it was created in.
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("enter namespace {namespace}"))?;
    let mut queue = nfq::Queue::open().context("open a netfilter queue socket")?;
    queue
        .bind(QUEUE)
        .with_context(|| format!("bind netfilter queue {QUEUE} in {namespace}"))?;
    queue.set_copy_range(QUEUE, 0).context("queue copy range")?;
    queue
        .set_fail_open(QUEUE, true)
        .context("queue fail-open")?;
    queue
        .set_queue_max_len(QUEUE, QUEUE_LEN)
        .context("queue length")?;
    queue.set_nonblocking(true);
    let _ = ready.send(());

    let mut rng = fastrand::Rng::with_seed(seed);
    // Held packets by release time; the sequence number keeps two packets
    // due at the same instant apart.
    let mut held: BTreeMap<(Instant, u64), nfq::Message> = BTreeMap::new();
    let mut seq = 0u64;
    let release = |queue: &mut nfq::Queue, msg: nfq::Message| -> Result<()> {
        let mut msg = msg;
        msg.set_verdict(nfq::Verdict::Accept);
        queue.verdict(msg).context("release a delayed packet")
    };
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let now_latency = *latency.lock().unwrap_or_else(|e| e.into_inner());
        // Healed: everything held is due.
        while let Some(entry) = held.first_entry() {
            if entry.key().0 > now && now_latency.is_some() {
                break;
            }
            release(&mut queue, entry.remove())?;
        }
        match queue.recv() {
            Ok(msg) => match now_latency {
                Some(l) => {
                    held.insert((Instant::now() + l.pick(&mut rng), seq), msg);
                    seq += 1;
                }
                None => release(&mut queue, msg)?,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let next = held
                    .first_key_value()
                    .map(|((at, _), _)| at.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::MAX);
                std::thread::sleep(next.min(Duration::from_millis(1)));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("receive a packet to delay"),
        }
    }
    // Let go of what is held, and of what was queued meanwhile.
    for msg in held.into_values() {
        release(&mut queue, msg)?;
    }
    loop {
        match queue.recv() {
            Ok(msg) => release(&mut queue, msg)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_jitter() {
        let l = Latency {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let d = l.pick(&mut rng);
            assert!(
                d >= Duration::from_millis(30) && d <= Duration::from_millis(70),
                "{d:?}"
            );
        }
        let wide = Latency {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(50),
        };
        for _ in 0..1000 {
            assert!(wide.pick(&mut rng) <= Duration::from_millis(10));
        }
    }
}
