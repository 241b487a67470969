//! Request metadata etcd's clients send: `hasleader: true` (kube-apiserver)
//! asks to be served only while the cluster has a leader.

use tonic::{Request, Status};

use crate::node::Node;

/// Whether the client asked to be served only with a leader.
pub(crate) fn wants_leader<T>(req: &Request<T>) -> bool {
    req.metadata()
        .get("hasleader")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true")
}

/// Fails with etcd's `no leader` when the client asked for a leader and
/// none is known.
pub(crate) fn check_leader<T>(node: &Node, req: &Request<T>) -> Result<(), Status> {
    if wants_leader(req) {
        node.require_leader()?;
    }
    Ok(())
}
