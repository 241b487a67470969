//! Crash test: a child process writes to a store and is killed with
//! SIGKILL at a random moment; the reopened store must hold every write
//! acknowledged as flushed, and exactly a prefix of the writes — each txn
//! whole or not at all — with the applied position naming the last one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_kv::*;

const CHILD_ENV: &str = "CAIRN_KV_CRASH_DIR";
const CHILD_BACKEND_ENV: &str = "CAIRN_KV_CRASH_BACKEND";
const KEYS: u64 = 40;

/// Write `i`: one txn putting value `i` under three keys derived from `i`.
fn write(i: u64) -> TxnRequest {
    let put = |k: u64| {
        RequestOp::Put(PutRequest {
            key: Bytes::from(format!("k{:02}", k % KEYS)),
            value: Bytes::from(format!("{i}")),
            ..Default::default()
        })
    };
    TxnRequest {
        compare: vec![],
        success: vec![put(i), put(i + 7), put(i + 19)],
        failure: vec![],
    }
}

/// The child: writes forever, flushing every 10 writes and reporting each
/// flush on stdout once it returned.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let kind: BackendKind = std::env::var(CHILD_BACKEND_ENV).unwrap().parse().unwrap();
    let store = Store::open_path_with(&dir, kind).unwrap();
    let start = store
        .applied()
        .map(|a| {
            String::from_utf8(a.to_vec())
                .unwrap()
                .parse::<u64>()
                .unwrap()
                + 1
        })
        .unwrap_or(0);
    for i in start.. {
        store.txn(&write(i), i.to_string().as_bytes()).unwrap();
        if i % 10 == 9 {
            store.flush().unwrap();
            println!("flushed {i}");
        }
    }
}

#[test]
fn killed_writer_loses_only_unflushed_suffix_fjall() {
    killed_writer_loses_only_unflushed_suffix(BackendKind::Fjall);
}

#[test]
fn killed_writer_loses_only_unflushed_suffix_sled() {
    killed_writer_loses_only_unflushed_suffix(BackendKind::Sled);
}

fn killed_writer_loses_only_unflushed_suffix(kind: BackendKind) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Option<u64> = None;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(CHILD_BACKEND_ENV, kind.name())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = BufReader::new(stdout).lines();
        // Kill after a pseudo-random number of acknowledged flushes.
        let want = 3 + (round * 7919) % 23;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        for line in lines {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("flushed ") {
                acked = Some(n.parse().unwrap());
                seen += 1;
                if seen >= want {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "child made no progress");
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let store = Store::open_path_with(dir.path(), kind).unwrap();
        let applied: u64 = String::from_utf8(store.applied().unwrap().to_vec())
            .unwrap()
            .parse()
            .unwrap();
        let acked = acked.unwrap();
        assert!(
            applied >= acked,
            "round {round}: acknowledged write {acked} lost (applied {applied})"
        );
        // Exactly the writes 0..=applied are visible: each txn is one revision.
        assert_eq!(
            store.current_revision(),
            applied as i64 + 2,
            "round {round}"
        );
        let mut expect = std::collections::BTreeMap::new();
        for i in 0..=applied {
            for k in [i, i + 7, i + 19] {
                expect.insert(format!("k{:02}", k % KEYS), i.to_string());
            }
        }
        let all = store
            .range(&RangeRequest {
                key: "\0".into(),
                range_end: "\0".into(),
                ..Default::default()
            })
            .unwrap();
        let got: std::collections::BTreeMap<String, String> = all
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key.to_vec()).unwrap(),
                    String::from_utf8(kv.value.to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got, expect,
            "round {round}: state is not the prefix up to {applied}"
        );
    }
}
