//! The health probes, as etcd 3.5 answers them.
//!
//! `/health`: `{"health":"true","reason":""}` (200) when the member
//! knows a leader, no alarm is raised (but those named by `?exclude=`)
//! and a read of the key `health` succeeds — linearizable, or
//! serializable with `?serializable=true`; otherwise `"false"` with the
//! reason and 503. The headers and bodies are etcd's byte for byte (a
//! plain-text type, and a line end after an unhealthy answer).
//!
//! `/livez` (a serializable read) and `/readyz` (no CORRUPT alarm, a
//! serializable and a linearizable read), in the format Kubernetes
//! probes read: `ok` (200), or one `[+]name ok` / `[-]name failed:
//! reason` line per check with `?verbose` or on a failure (503).
//! `?exclude=name` skips a check.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_proto::etcdserverpb::{AlarmType, RangeRequest};

use crate::Node;

/// How long a probe's read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The query of a probe: repeatable `exclude`, and flags.
#[derive(Debug, Default)]
pub struct Probe {
    exclude: Vec<String>,
    serializable: bool,
    verbose: bool,
}

impl Probe {
    fn from_pairs(pairs: Vec<(String, String)>) -> Probe {
        let mut p = Probe::default();
        for (k, v) in pairs {
            match k.as_str() {
                "exclude" => p.exclude.push(v),
                "serializable" => p.serializable = v == "true",
                "verbose" => p.verbose = v.is_empty() || v == "true" || v == "1",
                _ => {}
            }
        }
        p
    }

    fn excludes(&self, name: &str) -> bool {
        self.exclude.iter().any(|e| e == name)
    }
}

/// A read of the key `health`, bounded by [`READ_TIMEOUT`].
async fn read(node: &Node, serializable: bool) -> Result<(), String> {
    let req = RangeRequest {
        key: b"health".to_vec().into(),
        serializable,
        ..Default::default()
    };
    match tokio::time::timeout(READ_TIMEOUT, node.client().range(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("etcdserver: request timed out".into()),
    }
}

fn alarm_names(node: &Node) -> Vec<&'static str> {
    node.inner
        .alarms
        .list(AlarmType::None as i32)
        .iter()
        .map(|a| {
            AlarmType::try_from(a.alarm)
                .map(|t| t.as_str_name())
                .unwrap_or("UNKNOWN")
        })
        .collect()
}

/// etcd's `/health`.
pub async fn health(
    State(node): State<Node>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let probe = Probe::from_pairs(pairs);
    let reason = async {
        for name in alarm_names(&node) {
            if !probe.excludes(name) {
                return Some(format!("ALARM {name}"));
            }
        }
        if node.inner.leader().is_none() {
            return Some("RAFT NO LEADER".into());
        }
        read(&node, probe.serializable)
            .await
            .err()
            .map(|e| format!("QGET ERROR:{e}"))
    }
    .await;
    let healthy = reason.is_none();
    let body = serde_json::json!({
        "health": if healthy { "true" } else { "false" },
        "reason": reason.as_deref().unwrap_or(""),
    })
    .to_string();
    if let Some(r) = reason {
        tracing::warn!(reason = %r, "/health error");
        // etcd answers an unhealthy member as Go's http.Error does.
        return super::plain_error(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    // etcd sets no type; Go's sniffing of the JSON gives this one.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, super::TEXT_PLAIN)],
        body,
    )
        .into_response()
}

/// Runs the named checks and answers in Kubernetes' probe format.
async fn checks(node: &Node, probe: &Probe, names: &[&'static str], what: &str) -> Response {
    let mut lines = Vec::new();
    let mut failed = false;
    for &name in names {
        if probe.excludes(name) {
            lines.push(format!("[+]{name} excluded: ok"));
            continue;
        }
        let r = match name {
            "data_corruption" => {
                if alarm_names(node).contains(&"CORRUPT") {
                    Err("alarm activated: CORRUPT".to_string())
                } else {
                    Ok(())
                }
            }
            "serializable_read" => read(node, true).await,
            _ => read(node, false).await,
        };
        match r {
            Ok(()) => lines.push(format!("[+]{name} ok")),
            Err(e) => {
                failed = true;
                lines.push(format!("[-]{name} failed: {e}"));
            }
        }
    }
    let text = if failed {
        format!("{}\n{what} check failed\n", lines.join("\n"))
    } else if probe.verbose {
        format!("{}\nok\n", lines.join("\n"))
    } else {
        "ok\n".to_string()
    };
    let status = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// `/livez`: the member serves reads at all.
pub async fn livez(
    State(node): State<Node>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let probe = Probe::from_pairs(pairs);
    checks(&node, &probe, &["serializable_read"], "livez").await
}

/// `/readyz`: the member serves clients: no corruption, reads answered,
/// the linearizable one through the leader.
pub async fn readyz(
    State(node): State<Node>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let probe = Probe::from_pairs(pairs);
    checks(
        &node,
        &probe,
        &["data_corruption", "serializable_read", "linearizable_read"],
        "readyz",
    )
    .await
}
