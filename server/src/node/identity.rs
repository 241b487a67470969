//! A member's identity: its id and its cluster's, derived as etcd does
//! from peer URLs and the cluster token, kept in `member/cluster`, or
//! learned from the running cluster when joining one.
//!
//! Owns: the identity file (written once, durably, by rename) and the
//! refusal of a data dir that is not empty yet holds no member.
//!
//! May not: open storage or Raft (that is `start`'s).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::StartError;
use crate::config::Config;
use crate::raft::forward::{ForwardRequest, ForwardResponse};
use crate::raft::network::Peers;
use crate::raft::Member;
use crate::tls::ClientTls;

/// The identity a member keeps in its data dir.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// This member's name.
    pub name: String,
}

impl Identity {
    /// The identity kept in `data_dir`, if any (offline tools).
    pub fn read(data_dir: &Path) -> Result<Option<Identity>, StartError> {
        read_identity(data_dir, &data_dir.join("member").join("cluster"))
    }

    /// Keeps this identity in `data_dir` (offline tools making a member's
    /// data dir); an identity already there is left as it is.
    pub fn write(&self, data_dir: &Path) -> Result<(), StartError> {
        write_identity(&data_dir.join("member").join("cluster"), self)
    }
}

/// A member id from its peer URLs and the cluster token, exactly as etcd
/// computes it: the first 8 bytes (big-endian) of the SHA-1 of the sorted
/// URLs joined, then the token, then for a member added to a running
/// cluster the time of the add in Unix seconds (decimal). Stable: every
/// member of a new cluster computes the same ids, and the same ids as
/// etcd would for the same flags.
pub fn member_id(peer_urls: &[String], token: &str, added_at: Option<u64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    if let Some(t) = added_at {
        h.update(t.to_string().as_bytes());
    }
    first_u64(&h.finalize()).max(1)
}

/// The cluster id of a new cluster's members, as etcd computes it: the
/// first 8 bytes of the SHA-1 of their sorted ids, each 8 bytes
/// big-endian.
pub(super) fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize()).max(1)
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// A member of a new cluster: its identity and the cluster's initial
/// members, from `--initial-cluster`, its token and the member's
/// advertised peer URLs. Every initial member (and every member restored
/// from one backup) computes the same.
pub fn new_cluster(
    name: &str,
    initial_cluster: &[(String, Vec<String>)],
    token: &str,
    advertise_peer_urls: &[String],
) -> (Identity, BTreeMap<u64, Member>) {
    let mut members = BTreeMap::new();
    // Every initial member must propose exactly the same membership, so
    // client URLs start empty; each member publishes its own once a
    // leader is elected.
    for (member_name, urls) in initial_cluster {
        members.insert(
            member_id(urls, token, None),
            Member {
                name: member_name.clone(),
                peer_urls: urls.clone(),
                client_urls: Vec::new(),
                learner: false,
            },
        );
    }
    let ids: Vec<u64> = members.keys().copied().collect();
    let identity = Identity {
        cluster_id: cluster_id(&ids),
        member_id: member_id(advertise_peer_urls, token, None),
        name: name.to_string(),
    };
    (identity, members)
}

/// The identity in `path`; `None` for a fresh data dir. A data dir that
/// is not empty yet has no identity file is refused; the automatic TLS
/// certificates (`fixtures/`, made before the member starts) do not
/// count.
pub(super) fn read_identity(data_dir: &Path, path: &Path) -> Result<Option<Identity>, StartError> {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StartError::DataDir {
                path: data_dir.to_path_buf(),
                reason: format!("unreadable identity file {}: {e}", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let non_empty = match std::fs::read_dir(data_dir) {
                Ok(mut it) => it.any(|e| e.map_or(true, |e| e.file_name() != "fixtures")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            if non_empty {
                return Err(StartError::DataDir {
                    path: data_dir.to_path_buf(),
                    reason: "is not empty and holds no Cairn member; refusing to overwrite it"
                        .into(),
                });
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn write_identity(path: &Path, idt: &Identity) -> Result<(), StartError> {
    if path.exists() {
        return Ok(());
    }
    let raw = serde_json::to_vec_pretty(idt).map_err(std::io::Error::other)?;
    crate::durable::write_file(path, &raw)?;
    Ok(())
}

/// For `--initial-cluster-state existing`: asks the other members listed in
/// `--initial-cluster` for the cluster id and finds this member (added
/// beforehand with MemberAdd) by its peer URLs.
pub(super) async fn join_identity(
    config: &Config,
    tls: Option<Arc<ClientTls>>,
) -> Result<Identity, StartError> {
    let peers = Peers::new(0).with_tls(tls);
    let mut mine = config.initial_advertise_peer_urls.clone();
    mine.sort();
    let others: Vec<&String> = config
        .initial_cluster
        .iter()
        .filter(|(n, _)| n != &config.name)
        .flat_map(|(_, urls)| urls)
        .collect();
    if others.is_empty() {
        return Err(StartError::Join(
            "--initial-cluster lists no other member to join".into(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_err = String::new();
    while Instant::now() < deadline {
        for url in &others {
            match peers.forward(url, ForwardRequest::ClusterInfo).await {
                Ok(ForwardResponse::ClusterInfo {
                    cluster_id,
                    members,
                    ..
                }) => {
                    for (id, m) in members {
                        let mut theirs = m.peer_urls.clone();
                        theirs.sort();
                        if theirs == mine {
                            return Ok(Identity {
                                cluster_id,
                                member_id: id,
                                name: config.name.clone(),
                            });
                        }
                    }
                    return Err(StartError::Join(format!(
                        "no member of cluster {cluster_id:x} has peer URLs {}; add it with MemberAdd first",
                        mine.join(",")
                    )));
                }
                Ok(other) => last_err = format!("{url}: unexpected answer {other:?}"),
                Err(e) => last_err = format!("{url}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(StartError::Join(format!("no member answered: {last_err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids etcd gives a one-member cluster at https://localhost:20001
    /// with token "new" (etcd's e2e suite checks them byte for byte in
    /// `etcdctl get -w protobuf`), and a member added at a known second.
    #[test]
    fn ids_are_etcds() {
        let m = member_id(&["https://localhost:20001".into()], "new", None);
        assert_eq!(m, 0x00a8_f345_8387_986d);
        assert_eq!(cluster_id(&[m]), 0x34c2_1a2d_427d_b393);
        let urls = ["http://10.0.0.2:2380".into(), "http://10.0.0.1:2380".into()];
        assert_eq!(
            member_id(&urls, "etcd-cluster", Some(1_700_000_000)),
            0xb3b3_387b_b5b0_fa9c
        );
    }
}
