//! The nemesis: injects one fault at a time at random intervals (each
//! kind once per round, rounds in random order; membership changes on a
//! track of their own, concurrent with the other faults), holds it
//! for a random while, heals it, and records both in the history. At the
//! end every fault is healed: killed members restarted, paused ones
//! resumed, firewall rules removed.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::history::{History, Kind, Op, NEMESIS};

pub mod torn;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of a random member, restarted on heal.
    Kill,
    /// kill -9 of the leader.
    KillLeader,
    /// kill -9 of a random member, then a torn record written at the end
    /// of its Raft log (see [`torn`]); restarted on heal.
    KillTorn,
    /// SIGSTOP of a random member, SIGCONT on heal.
    Pause,
    PauseLeader,
    /// The leader cut off from every other member (clients still reach it).
    PartitionLeader,
    /// A random majority and minority.
    PartitionHalves,
    /// The others stop hearing the leader; the leader still hears them.
    PartitionOneWay,
    /// Two sides that only one member in the middle can reach both of.
    PartitionBridge,
    /// A random member loses 30% of the packets it receives.
    Loss,
    /// Every packet every member sends is held for a fortieth to a tenth
    /// of the election timeout (chosen per injection; 25-100 ms with
    /// etcd's defaults), give or take half that (see [`crate::delay`]).
    /// Round trips then reach up to 0.3 election timeouts: beyond a
    /// quarter, some heartbeats go unanswered.
    Latency,
    /// A random member removed from the cluster (its data wiped); on heal
    /// a fresh member joins at its address.
    MemberReplace,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::KillTorn => "kill-torn",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionOneWay => "partition-one-way",
            Fault::PartitionBridge => "partition-bridge",
            Fault::Loss => "loss",
            Fault::Latency => "latency",
            Fault::MemberReplace => "member-replace",
        }
    }

    /// Parses a comma-separated list: fault names, or the groups `kill`,
    /// `pause`, `partition`, `loss`, `latency`, `member` and `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>> {
        use Fault::*;
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let group: &[Fault] = match part {
                "kill" => &[Kill, KillLeader, KillTorn],
                "pause" => &[Pause, PauseLeader],
                "partition" => &[
                    PartitionLeader,
                    PartitionHalves,
                    PartitionOneWay,
                    PartitionBridge,
                ],
                "loss" => &[Loss],
                "latency" => &[Latency],
                "member" => &[MemberReplace],
                "all" => &ALL,
                "none" => &[],
                name => match ALL.iter().find(|f| f.name() == name) {
                    Some(f) => std::slice::from_ref(f),
                    None => bail!(
                        "unknown fault {name:?}: kill, pause, partition, loss, latency, member, all, none, or one of {}",
                        ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                    ),
                },
            };
            for f in group {
                if !out.contains(f) {
                    out.push(*f);
                }
            }
        }
        Ok(out)
    }
}

const ALL: [Fault; 12] = [
    Fault::Kill,
    Fault::KillLeader,
    Fault::KillTorn,
    Fault::Pause,
    Fault::PauseLeader,
    Fault::PartitionLeader,
    Fault::PartitionHalves,
    Fault::PartitionOneWay,
    Fault::PartitionBridge,
    Fault::Loss,
    Fault::Latency,
    Fault::MemberReplace,
];

#[derive(Clone, Debug)]
pub struct NemesisOptions {
    pub faults: Vec<Fault>,
    /// Quiet time before each fault, uniformly random in this range.
    pub interval: (Duration, Duration),
    /// How long each fault is held, uniformly random in this range.
    pub hold: (Duration, Duration),
}

fn between(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let (lo, hi) = (
        lo.as_millis() as u64,
        hi.as_millis().max(lo.as_millis()) as u64,
    );
    Duration::from_millis(rng.u64(lo..=hi))
}

/// What is broken now, to heal.
enum Broken {
    Killed(usize),
    Paused(usize),
    Removed(usize),
    Net,
}

/// Runs faults until `deadline`; returns how many of each were injected.
/// Membership changes run on a schedule of their own, alongside the other
/// faults. Fails if a member exits on its own.
pub async fn run(
    cluster: &Mutex<Cluster>,
    history: History,
    opts: NemesisOptions,
    deadline: Instant,
    seed: u64,
) -> Result<Vec<(Fault, usize)>> {
    let (member, other): (Vec<Fault>, Vec<Fault>) = opts
        .faults
        .iter()
        .partition(|f| **f == Fault::MemberReplace);
    let (a, b) = tokio::try_join!(
        schedule(cluster, &history, other, &opts, deadline, seed),
        schedule(cluster, &history, member, &opts, deadline, seed ^ 0x6d62),
    )?;
    let mut counts: Vec<(Fault, usize)> = a.into_iter().chain(b).collect();
    counts.sort_by_key(|(f, _)| ALL.iter().position(|x| x == f));
    Ok(counts)
}

/// One track of faults, one at a time.
async fn schedule(
    cluster: &Mutex<Cluster>,
    history: &History,
    faults: Vec<Fault>,
    opts: &NemesisOptions,
    deadline: Instant,
    seed: u64,
) -> Result<Vec<(Fault, usize)>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x4e45);
    let mut counts: Vec<(Fault, usize)> = faults.iter().map(|f| (*f, 0)).collect();
    if faults.is_empty() {
        return Ok(counts);
    }
    let n = cluster.lock().await.len();
    let mut order: Vec<Fault> = Vec::new();
    let sleep_until = |t: Instant| tokio::time::sleep(t.saturating_duration_since(Instant::now()));
    loop {
        let quiet = Instant::now() + between(&mut rng, opts.interval);
        while Instant::now() < quiet.min(deadline) {
            cluster.lock().await.check_alive()?;
            sleep_until((Instant::now() + Duration::from_millis(200)).min(quiet)).await;
        }
        if Instant::now() >= deadline {
            break;
        }
        // Every fault once, in a random order, then again: a short run
        // still sees each kind.
        if order.is_empty() {
            order = faults.clone();
            rng.shuffle(&mut order);
        }
        let Some(fault) = order.pop() else { break };
        let leader = match fault {
            Fault::KillLeader
            | Fault::PauseLeader
            | Fault::PartitionLeader
            | Fault::PartitionOneWay => {
                // Asked without the cluster locked: the other track goes on.
                let answering = cluster.lock().await.answering();
                crate::cluster::leader_among(&answering).await
            }
            _ => None,
        };
        let random = rng.usize(..n);
        let target = leader.unwrap_or(random);
        let name = |i: usize| format!("n{}", i + 1);
        let mut c = cluster.lock().await;
        let (broken, detail) = match fault {
            Fault::Kill | Fault::KillLeader => {
                c.kill(target)?;
                (Broken::Killed(target), name(target))
            }
            Fault::KillTorn => {
                c.kill(target)?;
                let what = torn::tear(c.data_dir(target), &mut rng)?;
                (Broken::Killed(target), format!("{}: {what}", name(target)))
            }
            Fault::Pause | Fault::PauseLeader => {
                c.pause(target)?;
                (Broken::Paused(target), name(target))
            }
            Fault::PartitionLeader => {
                let rest: Vec<usize> = (0..n).filter(|&i| i != target).collect();
                c.net().partition(&[vec![target], rest])?;
                (Broken::Net, format!("{} alone", name(target)))
            }
            Fault::PartitionHalves => {
                let mut order: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut order);
                let (minority, majority) = order.split_at(n / 2);
                c.net().partition(&[minority.to_vec(), majority.to_vec()])?;
                (
                    Broken::Net,
                    format!("{minority:?} | {majority:?} (0-based)"),
                )
            }
            Fault::PartitionOneWay => {
                for i in (0..n).filter(|&i| i != target) {
                    c.net().drop_from(i, target)?;
                }
                (Broken::Net, format!("nobody hears {}", name(target)))
            }
            Fault::PartitionBridge => {
                let mut order: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut order);
                let middle = order[0];
                let (left, right) = order[1..].split_at((n - 1) / 2);
                for &a in left {
                    for &b in right {
                        c.net().drop_from(a, b)?;
                        c.net().drop_from(b, a)?;
                    }
                }
                (
                    Broken::Net,
                    format!("{left:?} - {} - {right:?} (0-based)", name(middle)),
                )
            }
            Fault::Loss => {
                c.net().lossy(target, 30)?;
                (Broken::Net, format!("{} drops 30%", name(target)))
            }
            Fault::Latency => {
                let et = c.election_ms().max(40);
                let delay = Duration::from_millis(rng.u64(et / 40..=et / 10));
                let latency = crate::delay::Latency {
                    delay,
                    jitter: delay / 2,
                };
                let all: Vec<usize> = (0..n).collect();
                c.net().delay(&all, latency, rng.u64(..))?;
                (
                    Broken::Net,
                    format!("every member sends {delay:?} ± {:?} late", delay / 2),
                )
            }
            Fault::MemberReplace => {
                let (others, peer) = c.begin_remove(target);
                drop(c);
                // Without the cluster locked: the removal may wait for the
                // other track to heal a partition.
                crate::cluster::member_remove(&others, &peer).await?;
                let until = Instant::now() + Duration::from_secs(10);
                while !cluster
                    .lock()
                    .await
                    .reap_removed(target, Instant::now() > until)?
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                c = cluster.lock().await;
                (Broken::Removed(target), format!("{} removed", name(target)))
            }
        };
        drop(c);
        if let Some(c) = counts.iter_mut().find(|(f, _)| *f == fault) {
            c.1 += 1;
        }
        history.record(
            NEMESIS,
            Kind::Info,
            Op::Fault {
                name: fault.name().into(),
                detail,
            },
            None,
        );
        let until = (Instant::now() + between(&mut rng, opts.hold)).min(deadline);
        while Instant::now() < until {
            cluster.lock().await.check_alive()?;
            sleep_until((Instant::now() + Duration::from_millis(200)).min(until)).await;
        }
        let mut c = cluster.lock().await;
        match broken {
            Broken::Killed(i) => c.restart(i)?,
            Broken::Paused(i) => c.resume(i)?,
            Broken::Removed(i) => {
                if let Some((others, peer, name)) = c.begin_replace(i) {
                    drop(c);
                    let members = crate::cluster::member_add(&others, &peer).await?;
                    c = cluster.lock().await;
                    c.finish_replace(i, name, &members)?;
                }
            }
            Broken::Net => c.net().heal()?,
        }
        drop(c);
        history.record(
            NEMESIS,
            Kind::Info,
            Op::Heal {
                name: fault.name().into(),
            },
            None,
        );
    }
    Ok(counts)
}

/// Heals everything: network rules removed, every member resumed and
/// running, removed members replaced.
pub async fn heal_all(cluster: &mut Cluster) -> Result<()> {
    cluster.net().heal()?;
    for i in 0..cluster.len() {
        cluster.resume(i)?;
        cluster.restart(i)?;
    }
    for i in 0..cluster.len() {
        cluster.replace(i).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_groups_and_names() {
        assert_eq!(
            Fault::parse_list("kill,pause-leader").unwrap(),
            vec![
                Fault::Kill,
                Fault::KillLeader,
                Fault::KillTorn,
                Fault::PauseLeader
            ]
        );
        assert_eq!(Fault::parse_list("all").unwrap().len(), ALL.len());
        assert!(Fault::parse_list("none").unwrap().is_empty());
        assert!(Fault::parse_list("flood").is_err());
    }
}
