//! Embedding Cairn: a single member inside this program, used through the
//! typed in-process client (no gRPC, no network listener).
//!
//! ```text
//! cargo run --example embed -- /tmp/embedded-cairn
//! ```

use cairn::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn::proto::etcdserverpb::{
    request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn::{Config, Node};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "embedded.cairn".into());
    let node = Node::start(Config::embedded(&dir)).await?;
    let kv = node.client();

    let rev = kv
        .put_kv("config/color", "blue")
        .await?
        .header
        .map(|h| h.revision);
    println!("put config/color at revision {rev:?}");

    // Compare-and-swap: only if nobody changed the key since `rev`.
    let swapped = kv
        .txn(TxnRequest {
            compare: vec![Compare {
                key: "config/color".into(),
                target: CompareTarget::Mod as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::ModRevision(rev.unwrap_or(0))),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: "config/color".into(),
                    value: "green".into(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
        .await?
        .succeeded;
    println!("compare-and-swap succeeded: {swapped}");

    let all = kv
        .range(RangeRequest {
            key: "config/".into(),
            range_end: "config0".into(),
            ..Default::default()
        })
        .await?;
    for item in all.kvs {
        println!(
            "{} = {} (version {})",
            String::from_utf8_lossy(&item.key),
            String::from_utf8_lossy(&item.value),
            item.version
        );
    }
    node.shutdown().await;
    Ok(())
}
