//! The test network: one network namespace per member, each joined by a
//! veth pair to a bridge in the harness' namespace, on a private /24 that
//! the harness picks and checks is unused. Clients run in the harness'
//! namespace and reach each member at its own address (x.x.x.1..N; the
//! bridge is .254). Faults are nftables rules in a member's namespace, on
//! its input hook, so that a partition cuts members off from each other
//! while clients still reach every member (as in Jepsen, which is what
//! lets a stale read show).
//!
//! Everything is removed on drop; namespaces and bridges left behind by a
//! harness process that died are removed by the next one, with any member
//! still running in them (their names carry the owner's pid).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::delay::{Delayer, Latency};

const TABLE: &str = "cairnjepsen";

/// Runs a command, failing with its stderr.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces, veths and bridge of one run.
pub struct Net {
    tag: String,
    prefix: [u8; 3],
    members: usize,
    up: bool,
    /// The delay thread of each member delayed so far, by member (kept
    /// for the run, see [`crate::delay`]).
    delayers: std::sync::Mutex<std::collections::BTreeMap<usize, Delayer>>,
}

impl Net {
    /// Creates a bridge and `members` namespaces on a fresh /24.
    pub fn create(members: usize) -> Result<Net> {
        if members == 0 || members > 200 {
            bail!("{members} members: 1..=200 supported");
        }
        for tool in ["ip", "nft"] {
            if crate::which(tool).is_none() {
                bail!("{tool} not found: scripts/test installs iproute2 and nftables");
            }
        }
        remove_stale();
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let tag = format!("cj{pid:x}-{:x}", RUNS.fetch_add(1, Ordering::Relaxed));
        let prefix = free_prefix(pid)?;
        let mut net = Net {
            tag,
            prefix,
            members,
            up: true,
            delayers: Default::default(),
        };
        net.build().context("create the test network")?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    /// The namespace of member `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}m{i}", self.tag)
    }

    /// The address of member `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, i as u8 + 1)
    }

    /// Adds the namespace of a member with index `i` (members may be added
    /// after the network was created).
    pub fn add_member(&mut self, i: usize) -> Result<()> {
        let ns = self.namespace(i);
        let veth = format!("{}v{i}", self.tag);
        let [a, b, c] = self.prefix;
        let addr = format!("{a}.{b}.{c}.{}/24", i + 1);
        sh("ip", &["netns", "add", &ns])?;
        sh(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        sh(
            "ip",
            &["link", "set", &veth, "master", &self.bridge(), "up"],
        )?;
        sh("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        self.nft(
            i,
            &format!(
                "add table inet {TABLE}\n\
                 add chain inet {TABLE} input {{ type filter hook input priority 0; }}\n"
            ),
        )?;
        self.members = self.members.max(i + 1);
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let br = self.bridge();
        let [a, b, c] = self.prefix;
        sh("ip", &["link", "add", &br, "type", "bridge"])?;
        sh(
            "ip",
            &["addr", "add", &format!("{a}.{b}.{c}.254/24"), "dev", &br],
        )?;
        sh("ip", &["link", "set", &br, "up"])?;
        for i in 0..self.members {
            self.add_member(i)?;
        }
        Ok(())
    }

    fn nft(&self, i: usize, script: &str) -> Result<()> {
        let ns = self.namespace(i);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("run nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(script.as_bytes())
                .context("write nft script")?;
        }
        let out = child.wait_with_output().context("wait for nft")?;
        if !out.status.success() {
            bail!(
                "nft in {ns}: {}: {script}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Member `to` drops every packet from member `from` (one way).
    pub fn drop_from(&self, to: usize, from: usize) -> Result<()> {
        self.nft(
            to,
            &format!(
                "add rule inet {TABLE} input ip saddr {} drop\n",
                self.addr(from)
            ),
        )
    }

    /// Cuts the members into groups that cannot reach each other (both
    /// ways); members in no group are cut off from everyone.
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<()> {
        let group_of = |m: usize| groups.iter().position(|g| g.contains(&m));
        for to in 0..self.members {
            for from in 0..self.members {
                if to != from && (group_of(to).is_none() || group_of(to) != group_of(from)) {
                    self.drop_from(to, from)?;
                }
            }
        }
        Ok(())
    }

    /// Member `i` drops every packet from the test network: the other
    /// members and clients in the harness' namespace.
    pub fn cut_off(&self, i: usize) -> Result<()> {
        let [a, b, c] = self.prefix;
        self.nft(
            i,
            &format!("add rule inet {TABLE} input ip saddr {a}.{b}.{c}.0/24 drop\n"),
        )
    }

    /// Member `i` drops `percent`% of the packets from the other members.
    pub fn lossy(&self, i: usize, percent: u32) -> Result<()> {
        let [a, b, c] = self.prefix;
        self.nft(
            i,
            &format!(
                "add rule inet {TABLE} input ip saddr {a}.{b}.{c}.0/24 numgen random mod 100 < {percent} drop\n"
            ),
        )
    }

    /// Every packet members `ms` send is held for `latency` (see
    /// [`crate::delay`]). A member's delay thread starts with its first
    /// delay and stays for the run.
    pub fn delay(&self, ms: &[usize], latency: Latency, seed: u64) -> Result<()> {
        let mut delayers = self.delayers.lock().unwrap_or_else(|e| e.into_inner());
        for &i in ms {
            let d = match delayers.entry(i) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(Delayer::start(&self.namespace(i), seed ^ i as u64)?)
                }
            };
            d.delay(latency)?;
        }
        Ok(())
    }

    /// Removes every fault rule and added delay.
    pub fn heal(&self) -> Result<()> {
        let mut first_err = None;
        for d in self
            .delayers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if let Err(e) = d.heal() {
                first_err.get_or_insert(e);
            }
        }
        for i in 0..self.members {
            if let Err(e) = self.nft(i, &format!("flush table inet {TABLE}\n")) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes the namespaces and the bridge.
    pub fn destroy(&mut self) -> Result<()> {
        if !self.up {
            return Ok(());
        }
        self.up = false;
        // Delay threads let their packets go before the namespaces go.
        self.delayers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut first_err = None;
        for i in 0..self.members {
            // Removing a namespace removes its end of the veth, and so both.
            if let Err(e) = sh("ip", &["netns", "del", &self.namespace(i)]) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = sh("ip", &["link", "del", &self.bridge()]) {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

/// A 10.x.y.0/24 no interface of this machine is on.
fn free_prefix(seed: u32) -> Result<[u8; 3]> {
    let used = sh("ip", &["-4", "-o", "addr", "show"])?;
    for n in 0..1000u32 {
        let h = seed
            .wrapping_mul(2654435761)
            .wrapping_add(n.wrapping_mul(40503));
        let prefix = [10, 100 + (h % 100) as u8, (h >> 8) as u8];
        let text = format!(" {}.{}.{}.", prefix[0], prefix[1], prefix[2]);
        if !used.contains(&text) {
            return Ok(prefix);
        }
    }
    bail!("no free 10.x.y.0/24 for the test network")
}

/// Removes namespaces and bridges whose owning harness process is gone.
fn remove_stale() {
    let alive = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("cj") else {
            return true;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return true;
        };
        match u32::from_str_radix(pid, 16) {
            Ok(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        }
    };
    if let Ok(list) = sh("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !alive(ns) {
                // Members its harness left running go first.
                if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
                    for pid in pids.split_whitespace() {
                        let _ = sh("kill", &["-9", pid]);
                    }
                }
                let _ = sh("ip", &["netns", "del", ns]);
            }
        }
    }
    if let Ok(links) = sh("ip", &["-o", "link", "show", "type", "bridge"]) {
        for link in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            if link.starts_with("cj") && link.ends_with('b') && !alive(link) {
                let _ = sh("ip", &["link", "del", link]);
            }
        }
    }
}
