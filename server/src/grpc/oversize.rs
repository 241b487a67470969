//! Requests over the size limit answered as etcd answers them.
//!
//! A request larger than the receive limit (`--max-request-bytes` plus
//! gRPC's overhead) is refused before its body is read. tonic answers
//! `OUT_OF_RANGE` there; etcd (grpc-go) answers `RESOURCE_EXHAUSTED`,
//! `grpc: received message larger than max (N vs. M)`, and clients key
//! on the code (a client that sees OUT_OF_RANGE may take it for a
//! compacted revision). `rewrite` turns that one answer into etcd's;
//! `super::refusals` applies it to every answer given before a call
//! started (status in the response headers).

use tonic::codegen::http;

/// tonic's message for a request over the limit: `… found N bytes, the
/// limit is: M bytes`.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// Rewrites `headers` if they carry tonic's oversize refusal.
pub(super) fn rewrite(headers: &mut http::HeaderMap) {
    // OUT_OF_RANGE.
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"11") {
        return;
    }
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let message = percent_decode(message);
    let Some(rest) = message.strip_prefix(TONIC_TOO_LARGE) else {
        return;
    };
    let numbers: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    let [found, limit] = numbers[..] else {
        return;
    };
    let etcd = format!("grpc: received message larger than max ({found} vs. {limit})");
    // RESOURCE_EXHAUSTED. The message has only characters gRPC sends as
    // they are.
    headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    if let Ok(v) = http::HeaderValue::from_str(&etcd) {
        headers.insert("grpc-message", v);
    }
}

/// gRPC's percent-encoding of `grpc-message`, undone.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonics_refusal_becomes_etcds() {
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 10485774 bytes, the limit is: 2097152 bytes",
        );
        let mut resp = status.into_http::<()>();
        rewrite(resp.headers_mut());
        let back = tonic::Status::from_header_map(resp.headers()).expect("a status");
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            back.message(),
            "grpc: received message larger than max (10485774 vs. 2097152)"
        );
    }

    #[test]
    fn other_answers_are_left_alone() {
        for status in [
            tonic::Status::out_of_range("etcdserver: mvcc: required revision is a future revision"),
            tonic::Status::invalid_argument(
                "Error, decoded message length too large: found 1 bytes",
            ),
        ] {
            let mut resp = status.clone().into_http::<()>();
            rewrite(resp.headers_mut());
            let back = tonic::Status::from_header_map(resp.headers()).expect("a status");
            assert_eq!(
                (back.code(), back.message()),
                (status.code(), status.message())
            );
        }
    }
}
