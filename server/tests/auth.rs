//! Authentication and RBAC against real processes, with etcdctl 3.4 and
//! raw gRPC: etcd's commands and errors, permissions across members, the
//! attacks that broke etcd's RBAC (each a regression test here), tokens
//! (simple, JWT, invalidated by a password change), and users named by
//! client certificates.

mod common;

use std::time::Duration;

use cairn::proto::etcdserverpb::alarm_request::AlarmAction;
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::lease_client::LeaseClient;
use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::watch_request::RequestUnion;
use cairn::proto::etcdserverpb::{
    compare, request_op, AlarmRequest, AlarmType, AuthStatusRequest, AuthenticateRequest, Compare,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use common::{etcdctl, Cluster};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

const FAST: [&str; 2] = ["--bcrypt-cost", "4"];

/// etcdctl as `user` (`None`: no credentials).
fn as_user(ep: &str, user: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = Vec::new();
    if let Some(u) = user {
        all.push(format!("--user={u}"));
    }
    all.push("--command-timeout=5s".into());
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    etcdctl(ep, &refs)
}

#[track_caller]
fn ok(ep: &str, user: Option<&str>, args: &[&str]) -> String {
    let (ok, out, err) = as_user(ep, user, args);
    assert!(ok, "etcdctl {args:?} as {user:?} failed: {err}{out}");
    out
}

/// `etcdctl user passwd NAME` as root, the new password on stdin.
fn passwd(ep: &str, name: &str, new: &str) {
    let (ok, out, err) = common::etcdctl_stdin(
        ep,
        &[
            "--user=root:rootpw",
            "user",
            "passwd",
            name,
            "--interactive=false",
        ],
        Some(&format!("{new}\n")),
    );
    assert!(ok, "passwd: {err}{out}");
}

#[track_caller]
fn refused(ep: &str, user: Option<&str>, args: &[&str], why: &str) {
    let (ok, out, err) = as_user(ep, user, args);
    assert!(!ok, "etcdctl {args:?} as {user:?} was served: {out}");
    assert!(
        err.contains(why),
        "etcdctl {args:?} as {user:?}: expected {why:?}, got {err}"
    );
}

const ROOT: Option<&str> = Some("root:rootpw");
const ALICE: Option<&str> = Some("alice:alicepw");

/// Root, and alice with readwrite on the prefix `foo`, read on `k1`
/// alone, write only on `wo`; auth enabled.
fn setup(ep: &str) {
    ok(ep, None, &["user", "add", "root:rootpw"]);
    // etcdctl creates the root role and grants it when asked to enable.
    ok(ep, None, &["auth", "enable"]);
    ok(ep, ROOT, &["role", "add", "r"]);
    ok(
        ep,
        ROOT,
        &[
            "role",
            "grant-permission",
            "r",
            "readwrite",
            "foo",
            "--prefix",
        ],
    );
    ok(ep, ROOT, &["role", "grant-permission", "r", "read", "k1"]);
    ok(ep, ROOT, &["role", "grant-permission", "r", "write", "wo"]);
    ok(ep, ROOT, &["user", "add", "alice:alicepw"]);
    ok(ep, ROOT, &["user", "grant-role", "alice", "r"]);
}

async fn token(ch: Channel, user: &str, password: &str) -> String {
    let mut a = cairn::proto::etcdserverpb::auth_client::AuthClient::new(ch);
    a.authenticate(AuthenticateRequest {
        name: user.into(),
        password: password.into(),
    })
    .await
    .expect("authenticate")
    .into_inner()
    .token
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "token",
        MetadataValue::try_from(token).expect("token metadata"),
    );
    r
}

/// A request creating a watch of `key` to `range_end`.
fn watch_create(key: &[u8], range_end: &[u8]) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec().into(),
            range_end: range_end.to_vec().into(),
            ..Default::default()
        })),
    }
}

/// A watch stream opened with `first` queued (as `token`'s user, if
/// any): its request side and its answers.
async fn watch_stream(
    ch: Channel,
    token: Option<&str>,
    first: WatchRequest,
) -> (
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.expect("queue");
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut w = WatchClient::new(ch);
    let opened = match token {
        Some(t) => w.watch(with_token(requests, t)).await,
        None => w.watch(requests).await,
    };
    (tx, opened.expect("watch").into_inner())
}

/// The stream's next answer, within 10 s.
async fn answer_in_time(answers: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("an answer in time")
        .expect("answer")
        .expect("open")
}

fn put(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: b"x".to_vec().into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_auth_and_permissions_across_members() {
    let c = Cluster::start(3, &FAST).await;
    let (e0, e2) = (c.members[0].endpoint(), c.members[2].endpoint());
    setup(&e0);

    // Without credentials: etcd's error.
    refused(&e0, None, &["get", "foo"], "etcdserver: user name is empty");
    refused(
        &e0,
        Some("alice:wrong"),
        &["get", "foo"],
        "authentication failed, invalid user ID or password",
    );
    // Alice through another member (her writes forwarded to the leader,
    // checked again there at apply).
    ok(&e2, ALICE, &["put", "foo1", "v"]);
    assert_eq!(
        ok(&e2, ALICE, &["get", "foo1", "--print-value-only"]).trim(),
        "v"
    );
    refused(
        &e2,
        ALICE,
        &["put", "bar", "v"],
        "etcdserver: permission denied",
    );
    refused(
        &e2,
        ALICE,
        &["get", "", "--prefix"],
        "etcdserver: permission denied",
    );
    refused(
        &e2,
        ALICE,
        &["get", "k1", "--prefix"],
        "etcdserver: permission denied",
    );
    ok(&e2, ALICE, &["get", "k1"]);
    refused(&e2, ALICE, &["get", "wo"], "etcdserver: permission denied");
    ok(&e2, ALICE, &["put", "wo", "v"]);
    refused(&e2, ALICE, &["del", "bar"], "etcdserver: permission denied");
    refused(
        &e2,
        ALICE,
        &["compaction", "1"],
        "etcdserver: permission denied",
    );
    refused(
        &e2,
        ALICE,
        &["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
        "etcdserver: permission denied",
    );
    refused(
        &e2,
        ALICE,
        &["user", "add", "mallory:pw"],
        "etcdserver: permission denied",
    );
    ok(&e2, ALICE, &["member", "list"]);
    // A backup holds every key: root only.
    let backups = tempfile::tempdir().expect("tempdir");
    let backup = backups.path().join("b.db");
    let backup = backup.to_str().expect("utf-8");
    refused(
        &e2,
        ALICE,
        &["snapshot", "save", backup],
        "etcdserver: permission denied",
    );
    refused(
        &e2,
        None,
        &["snapshot", "save", backup],
        "etcdserver: user name is empty",
    );
    ok(&e2, ROOT, &["snapshot", "save", backup]);
    // Alarms: listed by any user, changed by root; defragment: root.
    ok(&e2, ALICE, &["alarm", "list"]);
    refused(
        &e2,
        None,
        &["alarm", "list"],
        "etcdserver: user name is empty",
    );
    ok(&e2, ROOT, &["alarm", "disarm"]);
    // (etcdctl disarms only the alarms it lists: with none raised it sends
    // nothing, so a raise without credentials is sent by hand.)
    let mut m = MaintenanceClient::new(c.members[2].channel().await);
    let err = m
        .alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
        })
        .await
        .expect_err("an alarm raised without credentials");
    assert_eq!(err.message(), "etcdserver: user name is empty");
    refused(&e2, ALICE, &["defrag"], "etcdserver: permission denied");
    ok(&e2, ROOT, &["defrag"]);

    // Admin commands, as etcd answers them.
    refused(
        &e0,
        ROOT,
        &["user", "add", "alice:x"],
        "etcdserver: user name already exists",
    );
    refused(
        &e0,
        ROOT,
        &["user", "grant-role", "alice", "nope"],
        "etcdserver: role name not found",
    );
    refused(
        &e0,
        ROOT,
        &["user", "revoke-role", "alice", "nope"],
        "etcdserver: role is not granted to the user",
    );
    refused(
        &e0,
        ROOT,
        &["role", "revoke-permission", "r", "nothing"],
        "etcdserver: permission is not granted to the role",
    );
    refused(
        &e0,
        ROOT,
        &["user", "delete", "root"],
        "etcdserver: invalid auth management",
    );
    let users = ok(&e0, ROOT, &["user", "list"]);
    assert_eq!(
        users.split_whitespace().collect::<Vec<_>>(),
        ["alice", "root"]
    );
    // A user reads their own user and the roles they have, nothing else.
    let me = ok(&e2, ALICE, &["user", "get", "alice"]);
    assert!(me.contains("Roles: r"), "{me}");
    refused(
        &e2,
        ALICE,
        &["user", "get", "root"],
        "etcdserver: permission denied",
    );
    ok(&e2, ALICE, &["role", "get", "r"]);
    refused(
        &e2,
        ALICE,
        &["role", "get", "root"],
        "etcdserver: permission denied",
    );
    let role = ok(&e0, ROOT, &["role", "get", "r"]);
    assert!(
        role.contains("[foo, fop) (prefix foo)") && role.contains("k1"),
        "{role}"
    );
    // (etcdctl 3.4 has no `auth status`.) Open to anyone, on any member.
    let mut a =
        cairn::proto::etcdserverpb::auth_client::AuthClient::new(c.members[2].channel().await);
    let st = a
        .auth_status(cairn::proto::etcdserverpb::AuthStatusRequest {})
        .await
        .expect("auth status")
        .into_inner();
    assert!(st.enabled && st.auth_revision > 0, "{st:?}");

    // A revoke made through one member denies at once through another.
    ok(
        &e0,
        ROOT,
        &["role", "revoke-permission", "r", "foo", "--prefix"],
    );
    refused(
        &e2,
        ALICE,
        &["get", "foo1"],
        "etcdserver: permission denied",
    );
    refused(
        &e2,
        ALICE,
        &["put", "foo1", "w"],
        "etcdserver: permission denied",
    );

    // A changed password: the old one is refused on every member.
    passwd(&e0, "alice", "newpw");
    refused(
        &e2,
        ALICE,
        &["get", "k1"],
        "authentication failed, invalid user ID or password",
    );
    ok(&e2, Some("alice:newpw"), &["get", "k1"]);
    ok(&e0, ROOT, &["auth", "disable"]);
    ok(&e2, None, &["get", "foo1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attacks_that_broke_etcds_rbac_are_refused() {
    let c = Cluster::start(1, &FAST).await;
    let ep = c.members[0].endpoint();
    setup(&ep);
    ok(&ep, ROOT, &["put", "secret", "s"]);
    let ch = c.members[0].channel().await;
    let alice = token(ch.clone(), "alice", "alicepw").await;
    let mut kv = KvClient::new(ch.clone());

    // GHSA-rfx7-8w68-q57q: a txn nested in a txn reaching a key outside
    // the grant.
    let nested = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                success: vec![put("secret")],
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    let e = kv
        .txn(with_token(nested, &alice))
        .await
        .expect_err("nested txn");
    assert_eq!(e.code(), Code::PermissionDenied);
    // ... or in the branch that does not run, or in a compare.
    let other_branch = TxnRequest {
        success: vec![put("foo-a")],
        failure: vec![put("secret")],
        ..Default::default()
    };
    let e = kv
        .txn(with_token(other_branch, &alice))
        .await
        .expect_err("failure branch");
    assert_eq!(e.code(), Code::PermissionDenied);
    let compare_secret = TxnRequest {
        compare: vec![Compare {
            key: b"secret".to_vec().into(),
            target: compare::CompareTarget::Value as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::Value(b"s".to_vec().into())),
            ..Default::default()
        }],
        success: vec![put("foo-b")],
        ..Default::default()
    };
    let e = kv
        .txn(with_token(compare_secret, &alice))
        .await
        .expect_err("compare");
    assert_eq!(e.code(), Code::PermissionDenied);

    // GHSA-x35m-3gp4-4fh5: a put reading the previous value of a key the
    // user may only write.
    let e = kv
        .put(with_token(
            PutRequest {
                key: b"wo".to_vec().into(),
                value: b"x".to_vec().into(),
                prev_kv: true,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("prev_kv on a write-only key");
    assert_eq!(e.code(), Code::PermissionDenied);
    // CVE-2026-44283: attaching a lease that holds a key the user may not
    // write (she could revoke it and delete the key).
    let lease_out = ok(&ep, ROOT, &["lease", "grant", "600"]);
    let lease_hex = lease_out.split_whitespace().nth(1).expect("lease id");
    ok(
        &ep,
        ROOT,
        &["put", "secret", "s", &format!("--lease={lease_hex}")],
    );
    let lease = i64::from_str_radix(lease_hex, 16).expect("hex lease");
    let e = kv
        .put(with_token(
            PutRequest {
                key: b"foo-lease".to_vec().into(),
                value: b"x".to_vec().into(),
                lease,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("lease holding a key she may not write");
    assert_eq!(e.code(), Code::PermissionDenied);
    refused(
        &ep,
        ALICE,
        &["lease", "revoke", lease_hex],
        "etcdserver: permission denied",
    );
    // CVE-2023-32082: the keys of a lease shown only to who may read them.
    let mut leases = LeaseClient::new(ch.clone());
    let e = leases
        .lease_time_to_live(with_token(
            LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
            },
            &alice,
        ))
        .await
        .expect_err("lease keys");
    assert_eq!(e.code(), Code::PermissionDenied);
    leases
        .lease_time_to_live(with_token(
            LeaseTimeToLiveRequest {
                id: lease,
                keys: false,
            },
            &alice,
        ))
        .await
        .expect("time to live without keys");

    // GHSA-q8m4-xhhv-38mg: member list and the lease calls without
    // credentials.
    refused(
        &ep,
        None,
        &["member", "list"],
        "etcdserver: user name is empty",
    );
    refused(
        &ep,
        None,
        &["lease", "grant", "10"],
        "etcdserver: user name is empty",
    );
    refused(
        &ep,
        None,
        &["lease", "list"],
        "etcdserver: user name is empty",
    );
    refused(
        &ep,
        None,
        &["lease", "timetolive", lease_hex],
        "etcdserver: user name is empty",
    );
    refused(
        &ep,
        None,
        &["endpoint", "status"],
        "etcdserver: user name is empty",
    );
    refused(
        &ep,
        None,
        &["endpoint", "hashkv"],
        "etcdserver: user name is empty",
    );

    // GHSA-xg4h-6gfc-h4m8: a watch from an exactly granted key with range
    // end "\0" (every later key) is refused at creation.
    let (tx, mut answers) =
        watch_stream(ch.clone(), Some(&alice), watch_create(b"k1", b"\0")).await;
    let r = answers.message().await.expect("answer").expect("open");
    assert!(r.created && r.canceled, "{r:?}");
    assert_eq!(
        r.cancel_reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    // A watch she may make gets events only while she may: once the grant
    // is revoked, the next event cancels it instead of reaching her.
    tx.send(watch_create(b"foo", b"fop")).await.expect("queue");
    let r = answers.message().await.expect("answer").expect("open");
    assert!(r.created && !r.canceled, "{r:?}");
    let id = r.watch_id;
    ok(&ep, ROOT, &["put", "foo-seen", "1"]);
    let r = answers.message().await.expect("answer").expect("open");
    assert_eq!(r.events.len(), 1);
    ok(
        &ep,
        ROOT,
        &["role", "revoke-permission", "r", "foo", "--prefix"],
    );
    ok(&ep, ROOT, &["put", "foo-hidden", "1"]);
    let r = answer_in_time(&mut answers).await;
    assert_eq!(r.watch_id, id);
    assert!(r.canceled && r.events.is_empty(), "{r:?}");
    assert!(r.cancel_reason.contains("permission denied"), "{r:?}");

    // Every refusal is logged with the client's address.
    let log = c.members[0].log_text();
    assert!(
        log.contains("request refused") && log.contains("remote=127.0.0.1:"),
        "{log}"
    );

    // A changed password invalidates the user's tokens.
    let mut kv2 = KvClient::new(ch.clone());
    kv2.range(with_token(
        RangeRequest {
            key: b"k1".to_vec().into(),
            ..Default::default()
        },
        &alice,
    ))
    .await
    .expect("read with the token");
    passwd(&ep, "alice", "newpw");
    let e = kv2
        .range(with_token(
            RangeRequest {
                key: b"k1".to_vec().into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("old token");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), "etcdserver: invalid auth token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificates_common_name_is_the_user() {
    let p = common::certs::Pki::get();
    let server = p.pair("server");
    let extra = [
        "--cert-file",
        &server.cert,
        "--key-file",
        &server.key,
        "--trusted-ca-file",
        &p.ca(),
        "--client-cert-auth",
        "--bcrypt-cost",
        "4",
    ];
    let c = Cluster::launch(1, &extra, "https", "http");
    let client = p.pair("client");
    let tls = [
        format!("--cacert={}", p.ca()),
        format!("--cert={}", client.cert),
        format!("--key={}", client.key),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    c.wait_ready_ctl(&tls, Duration::from_secs(30));
    let ep = c.members[0].endpoint();
    let run = |user: Option<&str>, args: &[&str]| {
        let mut all = tls.clone();
        all.extend(args);
        as_user(&ep, user, &all)
    };
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"]] {
        let (ok, out, err) = run(None, args);
        assert!(ok, "{args:?}: {err}{out}");
    }
    for args in [
        &["role", "add", "r"][..],
        &[
            "role",
            "grant-permission",
            "r",
            "readwrite",
            "foo",
            "--prefix",
        ],
        // The certificate's common name is "client": a user without a
        // password, who can only be the certificate.
        &["user", "add", "client", "--no-password"],
        &["user", "grant-role", "client", "r"],
    ] {
        let (ok, out, err) = run(ROOT, args);
        assert!(ok, "{args:?}: {err}{out}");
    }
    // No --user: the certificate names the user.
    let (okp, out, err) = run(None, &["put", "foo1", "v"]);
    assert!(okp, "put as the certificate's user: {err}{out}");
    let (okp, _, err) = run(None, &["put", "bar", "v"]);
    assert!(!okp && err.contains("permission denied"), "{err}");
    // A user without a password cannot authenticate with one.
    let (okp, _, err) = run(Some("client:anything"), &["get", "foo1"]);
    assert!(!okp && err.contains("authentication failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let (public, private) = (dir.path().join("jwt.pub"), dir.path().join("jwt.key"));
    std::fs::write(&public, key.public_key_pem()).expect("write");
    std::fs::write(&private, key.serialize_pem()).expect("write");
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=5m",
        public.display(),
        private.display()
    );
    let c = Cluster::start(1, &["--auth-token", &spec, "--bcrypt-cost", "4"]).await;
    let ep = c.members[0].endpoint();
    setup(&ep);
    ok(&ep, ALICE, &["put", "foo1", "v"]);
    let t = token(c.members[0].channel().await, "alice", "alicepw").await;
    assert_eq!(t.split('.').count(), 3, "a JWT: {t}");
    let mut kv = KvClient::new(c.members[0].channel().await);
    kv.put(with_token(
        PutRequest {
            key: b"foo2".to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        },
        &t,
    ))
    .await
    .expect("put with the JWT");
    let forged = format!("{}x", t);
    let e = kv
        .put(with_token(
            PutRequest {
                key: b"foo3".to_vec().into(),
                ..Default::default()
            },
            &forged,
        ))
        .await
        .expect_err("a forged token");
    assert_eq!(e.code(), Code::Unauthenticated);
}

/// The auth revision after each of a few changes, through the Auth
/// service: a new store, users and roles added, a role granted twice,
/// auth enabled, disabled, and disabled again.
async fn auth_revisions(ch: Channel) -> Vec<(String, Result<u64, String>)> {
    use cairn::proto::etcdserverpb::auth_client::AuthClient;
    use cairn::proto::etcdserverpb::*;
    let mut a = AuthClient::new(ch.clone());
    let mut out = Vec::new();
    async fn status(a: &mut AuthClient<Channel>) -> Result<u64, String> {
        a.auth_status(AuthStatusRequest {})
            .await
            .map(|r| r.into_inner().auth_revision)
            .map_err(|e| e.message().to_string())
    }
    out.push(("new".to_string(), status(&mut a).await));
    let user = |name: &str| AuthUserAddRequest {
        name: name.into(),
        password: "pw".into(),
        ..Default::default()
    };
    let r = a.user_add(user("root")).await.map(|_| ());
    out.push((format!("root: {r:?}"), status(&mut a).await));
    let r = a.user_add(user("alice")).await.map(|_| ());
    out.push((format!("alice: {r:?}"), status(&mut a).await));
    let r = a
        .role_add(AuthRoleAddRequest { name: "r".into() })
        .await
        .map(|_| ());
    out.push((format!("role: {r:?}"), status(&mut a).await));
    for i in 0..2 {
        let r = a
            .user_grant_role(AuthUserGrantRoleRequest {
                user: "alice".into(),
                role: "r".into(),
            })
            .await
            .map(|_| ())
            .map_err(|e| e.message().to_string());
        out.push((format!("grant {i}: {r:?}"), status(&mut a).await));
    }
    let r = a
        .user_grant_role(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .map(|_| ());
    out.push((format!("root role: {r:?}"), status(&mut a).await));
    let r = a.auth_enable(AuthEnableRequest {}).await.map(|_| ());
    // With auth on, as root (etcd 3.5 answers AuthStatus to root only).
    let token = a
        .authenticate(AuthenticateRequest {
            name: "root".into(),
            password: "pw".into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .token;
    let st = a
        .auth_status(with_token(AuthStatusRequest {}, &token))
        .await
        .map(|r| r.into_inner().auth_revision)
        .map_err(|e| e.message().to_string());
    out.push((format!("enable: {r:?}"), st));
    let r = a
        .auth_disable(with_token(AuthDisableRequest {}, &token))
        .await
        .map(|_| ());
    out.push((format!("disable: {r:?}"), status(&mut a).await));
    let r = a.auth_disable(AuthDisableRequest {}).await.map(|_| ());
    out.push((format!("disable again: {r:?}"), status(&mut a).await));
    out
}

/// etcd counts auth revisions from 1 in a new store; `etcdctl auth
/// status` (3.5) shows them. Compared with etcd 3.5.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_revisions_count_as_etcds() {
    let c = Cluster::start(1, &[]).await;
    let got = auth_revisions(c.members[0].channel().await).await;
    let etcd = common::Etcd::start_bin(&common::etcd35());
    let _ = etcd.kv().await;
    let want = auth_revisions(etcd.channel()).await;
    assert_eq!(got, want, "Cairn, then etcd 3.5.1");
    assert_eq!(got[0].1, Ok(1), "a new store's");
}

/// Turning auth on keeps the auth revision, as etcd counts it; a watcher
/// opened without a user while auth was off is still checked again: the
/// next event cancels it rather than reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_opened_with_auth_off_is_checked_when_it_turns_on() {
    let c = Cluster::start(1, &FAST).await;
    let ep = c.members[0].endpoint();
    ok(&ep, None, &["user", "add", "root:rootpw"]);
    ok(&ep, None, &["role", "add", "root"]);
    ok(&ep, None, &["user", "grant-role", "root", "root"]);
    let ch = c.members[0].channel().await;
    let mut a = cairn::proto::etcdserverpb::auth_client::AuthClient::new(ch.clone());
    let before = a
        .auth_status(AuthStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .auth_revision;

    let (_tx, mut answers) = watch_stream(ch.clone(), None, watch_create(b"foo", b"")).await;
    let r = answers.message().await.expect("answer").expect("open");
    assert!(r.created && !r.canceled, "{r:?}");

    ok(&ep, None, &["auth", "enable"]);
    let root = token(ch.clone(), "root", "rootpw").await;
    let after = a
        .auth_status(with_token(AuthStatusRequest {}, &root))
        .await
        .expect("status")
        .into_inner();
    assert!(after.enabled);
    assert_eq!(after.auth_revision, before, "enabling is not counted");

    ok(&ep, ROOT, &["put", "foo", "1"]);
    let r = answer_in_time(&mut answers).await;
    assert!(r.canceled && r.events.is_empty(), "{r:?}");
    assert!(r.cancel_reason.contains("user name is empty"), "{r:?}");
}
