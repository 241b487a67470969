//! The etcd clients people use, each run against Cairn and against a real
//! etcd 3.4 in the same test: the Python `etcd3` client and the Node
//! `etcd3` package go through the same calls (puts, ranges, deletes,
//! txns, leases, watches, a lock, members, compaction) on a fresh
//! single member of each, and must print the same transcript. The
//! clients are installed on first use into the test's scratch directory
//! under `target/` (pip and npm; versions pinned here).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Cluster, Etcd};

/// The Python client and the protobuf runtime it was written for (it
/// does not run on protobuf 4).
const PYTHON_PACKAGES: &[&str] = &["etcd3==0.12.0", "protobuf==3.20.3"];
/// The Node client.
const NODE_PACKAGE: &str = "etcd3@1.1.2";

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("clients")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python interpreter of a virtual environment with the client.
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = scratch().join("venv");
        let py = venv.join("bin/python");
        let stamp = venv.join(PYTHON_PACKAGES.join(" ").replace(['/', '='], "_"));
        if !stamp.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv",
            );
            run(
                Command::new(&py)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(PYTHON_PACKAGES),
                "pip install etcd3",
            );
            std::fs::write(&stamp, b"").expect("stamp");
        }
        py
    })
}

/// A `node_modules` with the Node client.
fn node_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let dir = scratch().join("node");
        let modules = dir.join("node_modules");
        let stamp = dir.join(NODE_PACKAGE.replace(['/', '@'], "_"));
        if !stamp.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("node dir");
            run(
                Command::new("npm")
                    .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .arg(NODE_PACKAGE),
                "npm install etcd3",
            );
            std::fs::write(&stamp, b"").expect("stamp");
        }
        modules
    })
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Runs a client script against `endpoint` (host:port); its transcript.
fn transcript(cmd: &mut Command, endpoint: &str, who: &str) -> String {
    let out = cmd
        .arg(endpoint)
        .output()
        .unwrap_or_else(|e| panic!("{who}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{who} against {endpoint} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().count() > 10, "{who}: too short:\n{stdout}");
    stdout
}

/// A fresh etcd and a fresh one-member Cairn, as host:port each.
async fn fresh_pair() -> (Etcd, Cluster, String, String) {
    let etcd = Etcd::start();
    let cairn = Cluster::start(1, &[]).await;
    etcd.kv().await;
    let e = etcd.client_url.trim_start_matches("http://").to_string();
    let c = cairn.members[0]
        .client_url
        .trim_start_matches("http://")
        .to_string();
    (etcd, cairn, e, c)
}

fn compare(who: &str, etcd: &str, cairn: &str) {
    for (i, (e, c)) in etcd.lines().zip(cairn.lines()).enumerate() {
        assert_eq!(c, e, "{who}: line {} differs (Cairn, then etcd)", i + 1);
    }
    assert_eq!(
        cairn.lines().count(),
        etcd.lines().count(),
        "{who}: transcripts of different lengths:\n{cairn}\n---\n{etcd}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_etcd3_client_sees_what_it_sees_on_etcd() {
    let py = python();
    let (_etcd, _cairn, e, c) = fresh_pair().await;
    let run = |ep: &str| {
        transcript(
            Command::new(py).arg(script("python_etcd3.py")),
            ep,
            "python etcd3",
        )
    };
    let on_etcd = run(&e);
    let on_cairn = run(&c);
    compare("python etcd3", &on_etcd, &on_cairn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_etcd3_package_sees_what_it_sees_on_etcd() {
    let modules = node_modules();
    let (_etcd, _cairn, e, c) = fresh_pair().await;
    let run = |ep: &str| {
        transcript(
            Command::new("node")
                .env("NODE_PATH", modules)
                .arg(script("node_etcd3.js")),
            ep,
            "node etcd3",
        )
    };
    let on_etcd = run(&e);
    let on_cairn = run(&c);
    compare("node etcd3", &on_etcd, &on_cairn);
}
