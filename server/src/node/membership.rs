//! Membership: the members as Raft knows them, etcd's member changes
//! (add, remove, promote, update, publish) carried out on the leader, and
//! the background duties that follow the membership: promoting members
//! added as voters once they caught up, keeping peer URLs current,
//! noticing that this member was removed, and publishing this member's
//! name and client URLs.
//!
//! Owns: [`MemberInfo`], the voter set ([`Inner::voters`], the one place
//! that collects it), [`Inner::change_membership`] and the tasks above.
//! Leader routing is [`super::route`]'s.
//!
//! May not: change the membership except on the leader, through
//! openraft. Requests go to the leader through `route`; only the removal
//! check asks other members directly (it must reach one that knows more).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, RaftError};
use openraft::rt::WatchReceiver;
use openraft::{ChangeMembers, ServerState};

use super::route::{unexpected, Resend};
use super::Inner;
use crate::error::Error;
use crate::raft::forward::{ForwardRequest, ForwardResponse, MembershipChange};
use crate::raft::Member;

/// A member as etcd's Cluster API lists it.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    /// The member's id.
    pub id: u64,
    /// Its name and URLs.
    pub member: Member,
    /// Whether it is a learner (added as one and not promoted).
    pub is_learner: bool,
}

/// The voters of `membership`.
fn voter_set(membership: &openraft::Membership<u64, Member>) -> BTreeSet<u64> {
    membership.voter_ids().collect()
}

impl Inner {
    /// The ids of the voting members.
    pub fn voters(&self) -> BTreeSet<u64> {
        voter_set(
            self.raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership(),
        )
    }

    /// Log index of the membership in force.
    pub(super) fn membership_index(&self) -> u64 {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config.log_id().map(|l| l.index).unwrap_or(0)
    }

    /// True once this member has been removed from the cluster.
    pub fn is_removed(&self) -> bool {
        if self.removed.load(Ordering::Relaxed) {
            return true;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        membership.get_node(&self.id).is_none() && m.membership_config.log_id().is_some()
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        let config = self
            .raft
            .server_metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let membership = config.membership();
        let voters = voter_set(membership);
        membership
            .nodes()
            .map(|(id, member)| MemberInfo {
                id: *id,
                member: member.clone(),
                is_learner: !voters.contains(id) && member.learner,
            })
            .collect()
    }

    /// Waits (up to the request timeout) until this member's view of the
    /// membership satisfies `done`: a change forwarded to the leader is
    /// committed before this member has the entry, and etcd answers a
    /// membership change with the list that includes it.
    pub async fn wait_members(&self, done: impl Fn(&[MemberInfo]) -> bool) {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut rx = self.raft.server_metrics();
        while !done(&self.members()) {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Carries out a membership change on the leader (forwarding if this
    /// member is not it).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), Error> {
        let change = &change;
        self.route(
            Instant::now() + self.timeout(),
            Resend::IfNotSent,
            || ForwardRequest::Membership(change.clone()),
            || async move {
                if !self.leads() {
                    return Ok(None);
                }
                self.change_local(change.clone()).await
            },
            |r| match r {
                ForwardResponse::Membership => Ok(()),
                other => Err(unexpected(other)),
            },
        )
        .await
    }

    pub(super) async fn change_local(&self, change: MembershipChange) -> Result<Option<()>, Error> {
        let members = self.members();
        let voters = self.voters();
        let find = |id: u64| members.iter().find(|m| m.id == id).cloned();
        let url_taken = |urls: &[String], except: u64| {
            members
                .iter()
                .filter(|m| m.id != except)
                .any(|m| m.member.peer_urls.iter().any(|u| urls.contains(u)))
        };
        let result = match change {
            MembershipChange::Add { id, member } => {
                if url_taken(&member.peer_urls, 0) {
                    return Err(Error::PeerUrlExists);
                }
                // etcd allows one learner at a time.
                if member.learner && members.iter().any(|m| m.is_learner) {
                    return Err(Error::TooManyLearners);
                }
                self.raft.add_learner(id, member, false).await.map(|_| ())
            }
            MembershipChange::Remove { id } => {
                if find(id).is_none() {
                    return Err(Error::MemberNotFound);
                }
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(Error::NotEnoughStartedMembers);
                    }
                    // retain=false: the removed voter is not kept as a learner.
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                        .await
                        .map(|_| ())
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                        .await
                        .map(|_| ())
                }
            }
            MembershipChange::Promote { id } => {
                let Some(m) = find(id) else {
                    return Err(Error::MemberNotFound);
                };
                if voters.contains(&id) {
                    return Err(Error::MemberNotLearner);
                }
                if !self.caught_up(id) {
                    return Err(Error::LearnerNotReady);
                }
                // A voter is listed as a voter whatever its `learner` flag
                // says, so only the voter set changes.
                let _ = m;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds([id].into()), true)
                    .await
                    .map(|_| ())
            }
            MembershipChange::UpdatePeerUrls { id, peer_urls } => {
                let Some(m) = find(id) else {
                    return Err(Error::MemberNotFound);
                };
                if url_taken(&peer_urls, id) {
                    return Err(Error::PeerUrlExists);
                }
                let mut member = m.member;
                member.peer_urls = peer_urls;
                self.raft
                    .change_membership(ChangeMembers::SetNodes([(id, member)].into()), true)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let Some(m) = find(id) else {
                    return Err(Error::MemberNotFound);
                };
                let mut member = m.member;
                member.name = name;
                member.client_urls = client_urls;
                self.raft
                    .change_membership(ChangeMembers::SetNodes([(id, member)].into()), true)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(Some(())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(None),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Error::MembershipRefused(e.to_string()))
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(Error::LeaderChanged)
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Whether the leader has replicated at least 90% of its log to `id`
    /// (etcd's readiness rule for promoting a learner).
    fn caught_up(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map(|l| l.index)
            .unwrap_or(0);
        matched as f64 >= last as f64 * 0.9
    }

    /// Starts the membership duties (each ends when the member stops).
    pub(super) fn spawn_membership_tasks(self: &Arc<Self>) {
        let tasks = [
            tokio::spawn(Arc::clone(self).promote_caught_up()),
            tokio::spawn(Arc::clone(self).follow_peer_urls()),
            tokio::spawn(Arc::clone(self).watch_for_removal()),
            tokio::spawn(Arc::clone(self).publish()),
        ];
        for t in tasks {
            self.push_task(t);
        }
    }

    /// Leader: promotes members added as voters once they caught up.
    async fn promote_caught_up(self: Arc<Self>) {
        let me = self;
        let mut stop = me.stop.subscribe();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if me.raft.metrics().borrow_watched().state != ServerState::Leader {
                continue;
            }
            let voters = me.voters();
            for m in me.members() {
                if !voters.contains(&m.id) && !m.member.learner && me.caught_up(m.id) {
                    tracing::info!(member = %format!("{:x}", m.id), "promoting caught-up member to voter");
                    if let Err(e) = me
                        .raft
                        .change_membership(ChangeMembers::AddVoterIds([m.id].into()), true)
                        .await
                    {
                        tracing::warn!(error = %e, "promotion failed");
                    }
                }
            }
        }
    }

    /// Every member: keeps peer URLs current as the membership changes.
    async fn follow_peer_urls(self: Arc<Self>) {
        let me = self;
        let mut stop = me.stop.subscribe();
        // Server metrics change with the membership, not with every write.
        let mut rx = me.raft.server_metrics();
        loop {
            {
                let membership = rx.borrow_watched().membership_config.clone();
                me.peers.update_urls(membership.membership().nodes());
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// Every follower: asks another member now and then whether this one
    /// was removed. A removed member hears from no leader again, and
    /// openraft keeps its last leader in view while its pre-votes fail,
    /// so it cannot tell by itself.
    async fn watch_for_removal(self: Arc<Self>) {
        let me = self;
        let mut stop = me.stop.subscribe();
        let every = Duration::from_millis((me.config.election_timeout * 2).max(1000));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
            if me.leader() == Some(me.id) {
                continue;
            }
            let mine = me.membership_index();
            let mut others: Vec<MemberInfo> =
                me.members().into_iter().filter(|m| m.id != me.id).collect();
            // The leader first: it has the newest membership.
            let leader = me.leader();
            others.sort_by_key(|m| Some(m.id) != leader);
            for m in others {
                let Some(url) = m.member.peer_urls.first() else {
                    continue;
                };
                if let Ok(ForwardResponse::ClusterInfo {
                    members,
                    membership_index,
                    ..
                }) = me.peers.forward(url, ForwardRequest::ClusterInfo).await
                {
                    if membership_index > mine && !members.iter().any(|(id, _)| *id == me.id) {
                        tracing::warn!("this member has been removed from the cluster");
                        me.removed.store(true, Ordering::Relaxed);
                        return;
                    }
                    break;
                }
            }
        }
    }

    /// Every member: publishes its name and client URLs (etcd's publish),
    /// then reports itself ready.
    async fn publish(self: Arc<Self>) {
        let me = self;
        let mut stop = me.stop.subscribe();
        loop {
            let published = me.members().iter().find(|m| m.id == me.id).map(|m| {
                m.member.client_urls == me.config.advertise_client_urls
                    && m.member.name == me.config.name
            });
            if published == Some(true) {
                me.ready.send_replace(true);
                return;
            }
            if published.is_some() {
                let change = MembershipChange::Publish {
                    id: me.id,
                    name: me.config.name.clone(),
                    client_urls: me.config.advertise_client_urls.clone(),
                };
                match me.change_membership(change).await {
                    Ok(()) => {
                        me.ready.send_replace(true);
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "publish failed; will retry"),
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
