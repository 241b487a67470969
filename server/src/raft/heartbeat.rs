//! The heartbeat pipe: one long-lived append stream per follower that
//! carries openraft's heartbeats, one round at a time, over the plain
//! connection where the follower speaks it (`append_wire`) or a gRPC
//! AppendStream.

use std::time::Duration;

use cairn_proto::cairnpb::RaftMessage;
use openraft::errors::{NetworkError, RPCError, Unreachable};
use openraft::raft::AppendEntriesRequest;
use tonic::{Status, Streaming};

use super::append_stream::{decode_answer, Answer};
use super::append_wire::Connection;
use super::{encode, TypeConfig};

/// A long-lived append stream (a plain connection where the follower
/// speaks it, else a gRPC AppendStream) that carries openraft's
/// heartbeats to one follower, one at a time: the lease upkeep and the
/// quorum round of every ReadIndex. openraft hands each heartbeat over as a stream of
/// one request; opening an HTTP/2 stream (or making a unary call) for
/// each costs headers, trailers and a handler task on both sides, a
/// large part of a linearizable read's round on a loaded machine. Here a
/// heartbeat is one message each way on a stream opened once.
///
/// Only one request is outstanding at a time (openraft's heartbeat
/// worker waits for each answer), so the next message in is its answer.
/// A round that fails or times out drops the pipe: a late answer must
/// not be taken for the next request's, so the next round opens a new
/// stream.
pub(super) struct HeartbeatPipe {
    link: Link,
}

enum Link {
    Grpc {
        out: tokio::sync::mpsc::Sender<RaftMessage>,
        inbound: Streaming<RaftMessage>,
    },
    Plain(Connection),
}

impl HeartbeatPipe {
    /// Opens the stream with `open`, which is given the outgoing half
    /// and makes the call.
    pub(super) async fn open<F, Fut>(
        open: F,
        timeout: Duration,
    ) -> Result<Self, RPCError<TypeConfig>>
    where
        F: FnOnce(tokio_stream::wrappers::ReceiverStream<RaftMessage>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Streaming<RaftMessage>>, Status>>,
    {
        let (out, rx) = tokio::sync::mpsc::channel(1);
        let call = open(tokio_stream::wrappers::ReceiverStream::new(rx));
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(resp)) => Ok(Self {
                link: Link::Grpc {
                    out,
                    inbound: resp.into_inner(),
                },
            }),
            Ok(Err(status)) => Err(RPCError::Unreachable(Unreachable::new(&status))),
            Err(_) => Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "heartbeat stream not opened within {timeout:?}"
            )))),
        }
    }

    /// The pipe over an accepted plain append connection.
    pub(super) fn over(conn: tokio::net::TcpStream) -> Self {
        Self {
            link: Link::Plain(Connection::new(conn)),
        }
    }

    /// Whether the stream can no longer carry a request.
    pub(super) fn is_closed(&self) -> bool {
        match &self.link {
            Link::Grpc { out, .. } => out.is_closed(),
            Link::Plain(c) => c.is_closed(),
        }
    }

    /// Sends `req` and waits up to `timeout` for its answer. The second
    /// value is whether the pipe can carry the next round.
    pub(super) async fn round(
        &mut self,
        req: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> (Answer, bool) {
        let payload = match encode(req) {
            Ok(p) => p,
            Err(e) => return (Err(RPCError::Network(NetworkError::new(&e))), true),
        };
        let exchange = async {
            match &mut self.link {
                Link::Grpc { out, inbound } => {
                    let msg = RaftMessage {
                        payload: payload.into(),
                    };
                    out.send(msg)
                        .await
                        .map_err(|_| Unreachable::from_string("heartbeat stream closed"))?;
                    match inbound.message().await {
                        Ok(Some(m)) => Ok(m.payload),
                        Ok(None) => Err(Unreachable::from_string("heartbeat stream ended")),
                        Err(status) => Err(Unreachable::new(&status)),
                    }
                }
                Link::Plain(c) => c.exchange(&payload).await,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(m)) => decode_answer(&m),
            Ok(Err(e)) => (Err(RPCError::Unreachable(e)), false),
            Err(_) => (
                Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "no answer to a heartbeat within {timeout:?}"
                )))),
                false,
            ),
        }
    }
}
