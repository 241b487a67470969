//! etcd's JSON gateway on the client port: `POST /v3/<service>/<call>`
//! (KV, Watch, Lease, Cluster, Maintenance but its snapshot, and Auth)
//! with a request as JSON, answered with the response as JSON, as etcd's
//! grpc-gateway does (proto3's JSON mapping with the .proto field names:
//! bytes in base64, 64-bit integers as strings, fields at their default
//! left out). The paths under `/v3beta/` are the same calls, as in etcd
//! 3.4.
//!
//! Each call goes through the in-process [`Client`] as the caller: with
//! auth on, the token from `Authenticate` is sent in the `Authorization`
//! header (or `token`). A refusal is etcd's JSON error, `{"error",
//! "message", "code"}` with the gRPC code, under the HTTP status
//! grpc-gateway gives that code. `/v3/watch` streams one JSON object per
//! line, `{"result": WatchResponse}`, for the watch requests in the body,
//! until the client goes away.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cairn_proto::etcdserverpb as pb;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use crate::node::Node;
use crate::Client;

/// The gateway's routes, under `/v3/` and `/v3beta/`.
pub fn router(node: Node) -> Router {
    let limit = node.max_recv_bytes();
    let calls = Router::new()
        .route("/kv/range", post(range))
        .route("/kv/put", post(put))
        .route("/kv/deleterange", post(delete_range))
        .route("/kv/txn", post(txn))
        .route("/kv/compaction", post(compaction))
        .route("/watch", post(watch))
        .route("/lease/grant", post(lease_grant))
        .route("/lease/revoke", post(lease_revoke))
        .route("/kv/lease/revoke", post(lease_revoke))
        .route("/lease/keepalive", post(lease_keep_alive))
        .route("/lease/timetolive", post(lease_time_to_live))
        .route("/kv/lease/timetolive", post(lease_time_to_live))
        .route("/lease/leases", post(lease_leases))
        .route("/kv/lease/leases", post(lease_leases))
        .route("/cluster/member/add", post(member_add))
        .route("/cluster/member/remove", post(member_remove))
        .route("/cluster/member/update", post(member_update))
        .route("/cluster/member/promote", post(member_promote))
        .route("/cluster/member/list", post(member_list))
        .route("/maintenance/status", post(status))
        .route("/maintenance/alarm", post(alarm))
        .route("/maintenance/defragment", post(defragment))
        .route("/maintenance/hash", post(hash))
        .route("/maintenance/snapshot", post(snapshot))
        .route("/maintenance/transfer-leadership", post(move_leader))
        .route("/auth/authenticate", post(authenticate))
        .route("/auth/enable", post(auth_enable))
        .route("/auth/disable", post(auth_disable))
        .route("/auth/status", post(auth_status))
        .route("/auth/user/add", post(user_add))
        .route("/auth/user/get", post(user_get))
        .route("/auth/user/list", post(user_list))
        .route("/auth/user/delete", post(user_delete))
        .route("/auth/user/changepw", post(user_change_password))
        .route("/auth/user/grant", post(user_grant_role))
        .route("/auth/user/revoke", post(user_revoke_role))
        .route("/auth/role/add", post(role_add))
        .route("/auth/role/get", post(role_get))
        .route("/auth/role/list", post(role_list))
        .route("/auth/role/delete", post(role_delete))
        .route("/auth/role/grant", post(role_grant_permission))
        .route("/auth/role/revoke", post(role_revoke_permission));
    Router::new()
        .nest("/v3", calls.clone())
        .nest("/v3beta", calls)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(node)
}

/// The HTTP status grpc-gateway answers a gRPC code with.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        // etcd 3.4's gateway answered FailedPrecondition with 412; 3.5's
        // answers it with 400 (seen with etcd 3.5.1), as here.
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// etcd's gateway error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

fn error_body(s: &Status) -> String {
    serde_json::to_string(&ErrorBody {
        error: s.message(),
        message: s.message(),
        code: s.code() as i32,
    })
    .unwrap_or_default()
}

fn refused(s: Status) -> Response {
    refused_from(s, None)
}

/// A refusal, logged once with the client's address as the gRPC ones are
/// when it refuses the caller.
fn refused_from(s: Status, remote: Option<&Remote>) -> Response {
    if crate::grpc::refusals::is_refusal(&s) {
        tracing::warn!(
            remote = %remote
                .and_then(|r| r.0.remote_addr())
                .map_or_else(|| "?".to_string(), |a| a.to_string()),
            error = %s.message(),
            "request refused"
        );
    }
    (
        http_status(s.code()),
        [(header::CONTENT_TYPE, "application/json")],
        error_body(&s),
    )
        .into_response()
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => refused(Status::internal(e.to_string())),
    }
}

/// A request from a JSON body (an empty body is the request with every
/// field at its default).
fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The user the token in `Authorization` (or `token`) names, with auth
/// on; no one with auth off.
fn user(node: &Node, headers: &HeaderMap) -> Result<Option<String>, Status> {
    if !node.inner.auth.is_enabled() {
        return Ok(None);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get("token"))
        .and_then(|v| v.to_str().ok());
    Ok(node.inner.auth.identify(token, None)?)
}

/// The client for the caller (see [`user`]).
fn caller(node: &Node, headers: &HeaderMap) -> Result<Client, Status> {
    Ok(node.client().as_remote(user(node, headers)?))
}

/// The client's address, as the connection's accept put it.
type Remote = axum::Extension<tonic::transport::server::TcpConnectInfo>;

/// One unary call: the body parsed, `call` made as the caller.
async fn unary<Req, Resp, F, Fut>(
    node: Node,
    remote: Option<Remote>,
    headers: HeaderMap,
    body: Bytes,
    call: F,
) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Client, Req) -> Fut,
    Fut: Future<Output = crate::client::Result<Resp>>,
{
    let req = match parse::<Req>(&body) {
        Ok(r) => r,
        Err(s) => return refused(s),
    };
    let client = match caller(&node, &headers) {
        Ok(c) => c,
        Err(s) => return refused_from(s, remote.as_ref()),
    };
    match call(client, req).await {
        Ok(resp) => json(&resp),
        Err(e) => refused_from(Status::from(e), remote.as_ref()),
    }
}

/// A handler for one unary call: the request type, and the call made
/// on the caller's client `c` with the request `r`.
macro_rules! call {
    ($name:ident, $req:ty, |$c:ident, $r:pat_param| $body:expr) => {
        async fn $name(
            State(n): State<Node>,
            remote: Option<Remote>,
            h: HeaderMap,
            b: Bytes,
        ) -> Response {
            unary(n, remote, h, b, |$c, $r: $req| async move { $body }).await
        }
    };
}

call!(range, pb::RangeRequest, |c, r| c.range(r).await);
call!(put, pb::PutRequest, |c, r| c.put(r).await);
call!(delete_range, pb::DeleteRangeRequest, |c, r| c
    .delete_range(r)
    .await);
call!(txn, pb::TxnRequest, |c, r| c.txn(r).await);
call!(compaction, pb::CompactionRequest, |c, r| c.compact(r).await);
call!(lease_grant, pb::LeaseGrantRequest, |c, r| c
    .lease_grant(r)
    .await);
call!(lease_revoke, pb::LeaseRevokeRequest, |c, r| c
    .lease_revoke(r.id)
    .await);
call!(lease_time_to_live, pb::LeaseTimeToLiveRequest, |c, r| c
    .lease_time_to_live(r.id, r.keys)
    .await);
call!(lease_leases, pb::LeaseLeasesRequest, |c, _| c
    .lease_leases());
call!(member_add, pb::MemberAddRequest, |c, r| c
    .member_add(r)
    .await);
call!(member_remove, pb::MemberRemoveRequest, |c, r| c
    .member_remove(r)
    .await);
call!(member_update, pb::MemberUpdateRequest, |c, r| c
    .member_update(r)
    .await);
call!(member_promote, pb::MemberPromoteRequest, |c, r| c
    .member_promote(r)
    .await);
call!(member_list, pb::MemberListRequest, |c, r| c
    .member_list(r)
    .await);
call!(status, pb::StatusRequest, |c, _| c.status().await);
call!(alarm, pb::AlarmRequest, |c, r| c.alarm(r).await);
call!(defragment, pb::DefragmentRequest, |c, _| c
    .defragment()
    .await);
call!(hash, pb::HashRequest, |c, _| c.hash().await);
call!(move_leader, pb::MoveLeaderRequest, |c, r| c
    .move_leader(r)
    .await);
call!(authenticate, pb::AuthenticateRequest, |c, r| c
    .authenticate(r)
    .await);
call!(auth_enable, pb::AuthEnableRequest, |c, _| c
    .auth_enable()
    .await);
call!(auth_disable, pb::AuthDisableRequest, |c, _| c
    .auth_disable()
    .await);
call!(auth_status, pb::AuthStatusRequest, |c, _| c
    .auth_status()
    .await);
call!(user_add, pb::AuthUserAddRequest, |c, r| c.user_add(r).await);
call!(user_get, pb::AuthUserGetRequest, |c, r| c.user_get(r).await);
call!(user_list, pb::AuthUserListRequest, |c, _| c
    .user_list()
    .await);
call!(user_delete, pb::AuthUserDeleteRequest, |c, r| c
    .user_delete(r)
    .await);
call!(
    user_change_password,
    pb::AuthUserChangePasswordRequest,
    |c, r| c.user_change_password(r).await
);
call!(user_grant_role, pb::AuthUserGrantRoleRequest, |c, r| c
    .user_grant_role(r)
    .await);
call!(user_revoke_role, pb::AuthUserRevokeRoleRequest, |c, r| c
    .user_revoke_role(r)
    .await);
call!(role_add, pb::AuthRoleAddRequest, |c, r| c.role_add(r).await);
call!(role_get, pb::AuthRoleGetRequest, |c, r| c.role_get(r).await);
call!(role_list, pb::AuthRoleListRequest, |c, _| c
    .role_list()
    .await);
call!(role_delete, pb::AuthRoleDeleteRequest, |c, r| c
    .role_delete(r)
    .await);
call!(
    role_grant_permission,
    pb::AuthRoleGrantPermissionRequest,
    |c, r| c.role_grant_permission(r).await
);
call!(
    role_revoke_permission,
    pb::AuthRoleRevokePermissionRequest,
    |c, r| c.role_revoke_permission(r).await
);

/// One keep-alive, answered as the first message of etcd's stream is:
/// `{"result": LeaseKeepAliveResponse}`.
async fn lease_keep_alive(
    State(n): State<Node>,
    remote: Option<Remote>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    #[derive(Serialize)]
    struct Streamed {
        result: pb::LeaseKeepAliveResponse,
    }
    unary(
        n,
        remote,
        h,
        b,
        |c, r: pb::LeaseKeepAliveRequest| async move {
            Ok(Streamed {
                result: c.lease_keep_alive_response(r.id).await?,
            })
        },
    )
    .await
}

/// The watch requests in a body: one JSON object after another.
fn watch_requests(body: &[u8]) -> Result<Vec<pb::WatchRequest>, Status> {
    let mut out = Vec::new();
    for r in serde_json::Deserializer::from_slice(body).into_iter::<pb::WatchRequest>() {
        out.push(r.map_err(|e| Status::invalid_argument(e.to_string()))?);
    }
    Ok(out)
}

/// `/v3/watch`: the body's watch requests on one watch stream, its
/// answers streamed one JSON object per line.
async fn watch(
    State(node): State<Node>,
    remote: Option<Remote>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let requests = match watch_requests(&body) {
        Ok(r) => r,
        Err(s) => return refused(s),
    };
    let user = match user(&node, &headers) {
        Ok(u) => u,
        Err(s) => return refused_from(s, remote.as_ref()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(crate::grpc::watch::STREAM_BUFFER);
    let incoming = futures::stream::iter(requests.into_iter().map(Ok))
        // The stream stays open for events after the requests, as an
        // etcd client's does until it goes away.
        .chain(futures::stream::pending());
    let progress = node.config().watch_progress_notify_interval;
    tokio::spawn(crate::grpc::watch_stream::serve(
        node,
        Box::pin(incoming),
        tx,
        progress,
        false,
        user,
    ));
    json_lines(tokio_stream::wrappers::ReceiverStream::new(rx).map(|(resp, _share)| resp))
}

/// `/v3/maintenance/snapshot`: the backup streamed as etcd's gateway
/// streams it, one `{"result": SnapshotResponse}` per line (the bytes in
/// base64).
async fn snapshot(
    State(node): State<Node>,
    remote: Option<Remote>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(s) = parse::<pb::SnapshotRequest>(&body) {
        return refused(s);
    }
    let started = caller(&node, &headers).and_then(|c| Ok(c.snapshot()?));
    match started {
        Ok((header, pieces)) => {
            json_lines(crate::grpc::maintenance::snapshot_stream(header, pieces))
        }
        Err(s) => refused_from(s, remote.as_ref()),
    }
}

/// A streamed answer as grpc-gateway sends one: each message a line of
/// `{"result": …}`, an error a line of `{"error": …}`.
fn json_lines<T: Serialize + Send + 'static>(
    answers: impl futures::Stream<Item = Result<T, Status>> + Send + 'static,
) -> Response {
    #[derive(Serialize)]
    struct Line<'a, T> {
        result: &'a T,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        error: ErrorBody<'a>,
    }
    let lines = answers.map(|resp| {
        let line = match &resp {
            Ok(r) => serde_json::to_string(&Line { result: r }),
            Err(s) => serde_json::to_string(&Failed {
                error: ErrorBody {
                    error: s.message(),
                    message: s.message(),
                    code: s.code() as i32,
                },
            }),
        };
        line.map(|mut l| {
            l.push('\n');
            Bytes::from(l)
        })
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_json_reads_and_writes() {
        let r: pb::RangeRequest =
            serde_json::from_str(r#"{"key":"Zm9v","range_end":"Zm9w","revision":"3","limit":2}"#)
                .expect("range request");
        assert_eq!(&r.key[..], b"foo");
        assert_eq!(&r.range_end[..], b"fop");
        assert_eq!((r.revision, r.limit), (3, 2));
        // The JSON names too, and enums by name.
        let t: pb::TxnRequest = serde_json::from_str(
            r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestRange":{"key":"Zm9v"}}]}"#,
        )
        .expect("txn");
        assert_eq!(
            t.compare[0].target,
            pb::compare::CompareTarget::Create as i32
        );
        let kv = cairn_proto::mvccpb::KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: Bytes::from_static(b"bar"),
            lease: 0,
        };
        assert_eq!(
            serde_json::to_string(&kv).expect("json"),
            r#"{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}"#
        );
        assert_eq!(watch_requests(b"").expect("none").len(), 0);
        assert!(watch_requests(b"{\"create_request\":").is_err());
    }

    #[test]
    fn codes_map_as_grpc_gateway_maps_them() {
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
    }
}
