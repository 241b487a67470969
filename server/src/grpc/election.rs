//! `v3electionpb.Election`: etcd's election service.
//!
//! A campaign for `name` takes a place in the queue of keys under
//! `name/` (see `grpc/queue.rs`): the key `name/<lease in hex>` holding
//! the candidate's value, attached to its lease (without one, a lease of
//! 60 s is granted); the candidate leads once its key is at the head. A
//! candidate already in the queue with another value proclaims it. The
//! leader proclaims new values and resigns by its key and creation
//! revision (a key that is no longer the one that campaigned is refused
//! with etcd's `election: not leader`). Leader answers the head of the
//! queue, Observe streams it each time it changes (read every 50 ms).
//! Every call is made as the caller, so auth applies as to any KV call.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb::election_server::{Election, ElectionServer};
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use futures::Stream;
use pb::request_op::Request as Op;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::metadata::{caller, check_leader};
use super::queue;
use crate::node::Node;
use crate::Client;

/// How often Observe reads the head of the queue.
const OBSERVE_EVERY: Duration = Duration::from_millis(50);

/// `v3electionpb.Election`.
pub struct ElectionService {
    node: Node,
    client: Client,
}

impl ElectionService {
    /// The service over `node`.
    pub fn server(node: &Node) -> ElectionServer<Self> {
        ElectionServer::new(Self {
            node: node.clone(),
            client: node.client().as_remote(None),
        })
    }
}

fn prefix(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

/// Puts `value` into `leader`'s key if it is still the key that
/// campaigned; its header.
async fn proclaim(
    client: &Client,
    leader: &LeaderKey,
    value: Bytes,
) -> Result<Option<pb::ResponseHeader>, Status> {
    let resp = client
        .txn(pb::TxnRequest {
            compare: vec![queue::created_at(&leader.key, leader.rev)],
            success: vec![pb::RequestOp {
                request: Some(Op::RequestPut(pb::PutRequest {
                    key: leader.key.clone(),
                    value,
                    lease: leader.lease,
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
        .await?;
    if !resp.succeeded {
        return Err(not_leader());
    }
    Ok(resp.header)
}

/// The head of `name`'s queue.
async fn leader(client: &Client, name: &[u8]) -> Result<pb::RangeResponse, Status> {
    Ok(client.range(queue::first_created(&prefix(name), 0)).await?)
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let CampaignRequest { name, lease, value } = req.into_inner();
        let lease = queue::session_lease(&client, lease).await?;
        let prefix = prefix(&name);
        let place = queue::join(&client, &prefix, lease, value.clone()).await?;
        let key = LeaderKey {
            name,
            key: place.key.clone(),
            rev: place.rev,
            lease,
        };
        let abandon = queue::Abandon::new(&client, &place.key);
        if place.existing.as_ref().is_some_and(|v| *v != value) {
            proclaim(&client, &key, value).await?;
        }
        queue::wait_for_head(&client, &prefix, &place).await?;
        abandon.disarm();
        Ok(Response::new(CampaignResponse {
            header: place.header,
            leader: Some(key),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let ProclaimRequest { leader, value } = req.into_inner();
        let leader = leader.ok_or_else(not_leader)?;
        let header = proclaim(&client, &leader, value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let resp = leader(&client, &req.into_inner().name).await?;
        match resp.kvs.into_iter().next() {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: resp.header,
                kv: Some(kv),
            })),
            None => Err(Status::unknown("election: no leader")),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let name = req.into_inner().name;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<(Bytes, i64)> = None;
            loop {
                let sent = match leader(&client, &name).await {
                    Ok(resp) => match resp.kvs.into_iter().next() {
                        Some(kv) if last != Some((kv.key.clone(), kv.mod_revision)) => {
                            last = Some((kv.key.clone(), kv.mod_revision));
                            tx.send(Ok(LeaderResponse {
                                header: resp.header,
                                kv: Some(kv),
                            }))
                            .await
                        }
                        _ => Ok(()),
                    },
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(OBSERVE_EVERY) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let leader = req.into_inner().leader.ok_or_else(not_leader)?;
        let resp = client
            .txn(pb::TxnRequest {
                compare: vec![queue::created_at(&leader.key, leader.rev)],
                success: vec![pb::RequestOp {
                    request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: leader.key.clone(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            })
            .await?;
        Ok(Response::new(ResignResponse {
            header: resp.header,
        }))
    }
}
