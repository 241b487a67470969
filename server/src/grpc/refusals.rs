//! Answers given before a call produced anything (their status in the
//! response headers): tonic's answer to a request over the size limit
//! made etcd's (`super::oversize`), and every refusal logged once with
//! the client's address — `PERMISSION_DENIED`, `UNAUTHENTICATED`, or
//! etcd's `user name is empty` / `authentication failed`
//! (`INVALID_ARGUMENT`). Called from every call's wrapper
//! (`super::coalesce::Tracked`), one header lookup per answer.

use std::net::SocketAddr;

use tonic::codegen::http;

use crate::status::msg;

/// An answer given before the call produced anything: made etcd's if it
/// is tonic's oversize answer, and logged if it is a refusal.
pub(super) fn early_answer(headers: &mut http::HeaderMap, remote: Option<SocketAddr>) {
    super::oversize::rewrite(headers);
    if let Some(status) = tonic::Status::from_header_map(headers) {
        if is_refusal(&status) {
            tracing::warn!(
                remote = %remote.map_or_else(|| "?".to_string(), |a| a.to_string()),
                error = %status.message(),
                "request refused"
            );
        }
    }
}

/// Whether `s` refuses the caller (logged once with its address).
pub(crate) fn is_refusal(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => true,
        tonic::Code::InvalidArgument => {
            s.message() == msg::USER_EMPTY || s.message() == msg::AUTH_FAILED
        }
        _ => false,
    }
}
