//! Request metadata etcd's clients send: `hasleader: true` (kube-apiserver)
//! asks to be served only while the cluster has a leader; `token` names
//! the user (from `Authenticate`). And who a request is from: that
//! token's user, else the common name of the connection's verified client
//! certificate.

use std::borrow::Cow;
use std::sync::Arc;

use tonic::{Request, Status};

use crate::node::Node;
use crate::Client;

/// The common name of the client certificate a TLS port verified, put
/// in each request of the connection.
#[derive(Clone, Debug)]
pub struct CertName(pub Arc<str>);

/// A client acting as the user `req` names (checked while auth is on).
/// `anonymous` is the service's remote client naming no one, which is
/// what every request is while auth is off: then nothing is looked up
/// or made.
pub(crate) fn caller<'a, T>(
    node: &Node,
    anonymous: &'a Client,
    req: &Request<T>,
) -> Result<Cow<'a, Client>, Status> {
    if !node.inner.auth.is_enabled() {
        return Ok(Cow::Borrowed(anonymous));
    }
    let token = req.metadata().get("token").and_then(|v| v.to_str().ok());
    let cert = req.extensions().get::<CertName>().map(|c| &*c.0);
    let user = node.inner.auth.identify(token, cert)?;
    Ok(Cow::Owned(anonymous.as_remote(user)))
}

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
