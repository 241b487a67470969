//! `KV.RangeStream` (etcd 3.7): one range sent in chunks, all read at
//! one revision, so that a list of any size never sits whole in the
//! member's memory (nor in one message).
//!
//! The first chunk is read as `Range` would read it (linearizable unless
//! `serializable`) and pins the revision; each next chunk starts just
//! after the last key sent. A chunk's size adapts: it starts at 64 keys
//! and doubles while chunks come out under half of the target bytes
//! (`--max-request-bytes`), halving when one comes out over it. Every
//! chunk but the last carries keys only; the last carries the header, its
//! keys, the count of the whole range and `more`, so the chunks merged
//! are the `RangeResponse` a `Range` at that revision answers. A range
//! filtered by mod or create revisions is sent as one chunk. A range
//! compacted away meanwhile ends the stream with etcd's error. A sort
//! order other than by key ascending is refused as `Unimplemented` (its
//! order needs the whole range first); so does etcd.

use bytes::Bytes;
use cairn_proto::etcdserverpb as pb;
use pb::range_request::{SortOrder, SortTarget};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use crate::Client;

/// Keys in the first chunk.
const FIRST_CHUNK: i64 = 64;

/// The most keys in a chunk.
const MAX_CHUNK: i64 = 1 << 16;

/// Streams `req`'s range through `client` in chunks of about
/// `target_bytes`.
pub(super) fn stream(
    client: Client,
    req: pb::RangeRequest,
    target_bytes: usize,
) -> mpsc::Receiver<Result<pb::RangeStreamResponse, Status>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        if let Err(e) = send_chunks(&client, req, target_bytes, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

fn chunk(r: pb::RangeResponse) -> pb::RangeStreamResponse {
    pb::RangeStreamResponse {
        range_response: Some(r),
    }
}

async fn send_chunks(
    client: &Client,
    req: pb::RangeRequest,
    target_bytes: usize,
    tx: &mpsc::Sender<Result<pb::RangeStreamResponse, Status>>,
) -> Result<(), Status> {
    let by_key = req.sort_order == SortOrder::None as i32
        || (req.sort_order == SortOrder::Ascend as i32
            && req.sort_target == SortTarget::Key as i32);
    if !by_key {
        return Err(Status::unimplemented(
            "etcdserver: RangeStream does not support a sort order; use Range",
        ));
    }
    // One key, the count alone, or a range filtered by revisions (which
    // etcd filters after its limit, so chunks could not continue from
    // the last key sent): one chunk.
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    if req.range_end.is_empty() || req.count_only || filtered {
        let r = client.range(req).await?;
        let _ = tx.send(Ok(chunk(r))).await;
        return Ok(());
    }
    let limit = req.limit.max(0);
    let mut size = FIRST_CHUNK;
    let mut sent = 0i64;
    let mut cursor = req.key.clone();
    let mut revision = req.revision;
    let mut count = None;
    loop {
        let want = if limit > 0 {
            size.min(limit - sent)
        } else {
            size
        };
        let r = client
            .range(pb::RangeRequest {
                key: cursor.clone(),
                limit: want,
                revision,
                ..req.clone()
            })
            .await?;
        let read_at = r.header.as_ref().map_or(0, |h| h.revision);
        if revision == 0 {
            revision = read_at;
        }
        let total = *count.get_or_insert(r.count);
        sent += r.kvs.len() as i64;
        let limit_reached = limit > 0 && sent >= limit;
        if !r.more || limit_reached || r.kvs.is_empty() {
            let mut header = r.header;
            if req.revision == 0 {
                // As a Range at the pinned revision answers.
                if let Some(h) = header.as_mut() {
                    h.revision = revision;
                }
            }
            let last = pb::RangeResponse {
                header,
                more: limit_reached && r.more,
                count: total,
                kvs: r.kvs,
            };
            let _ = tx.send(Ok(chunk(last))).await;
            return Ok(());
        }
        let bytes: usize = r.kvs.iter().map(|kv| kv.encoded_len()).sum();
        let next = match r.kvs.last() {
            Some(kv) => Bytes::from([kv.key.as_ref(), b"\0"].concat()),
            None => return Ok(()),
        };
        if tx
            .send(Ok(chunk(pb::RangeResponse {
                kvs: r.kvs,
                ..Default::default()
            })))
            .await
            .is_err()
        {
            // The client went away.
            return Ok(());
        }
        cursor = next;
        if bytes > target_bytes {
            size = (size / 2).max(1);
        } else if bytes < target_bytes / 2 {
            size = (size * 2).min(MAX_CHUNK);
        }
    }
}
