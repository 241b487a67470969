//! A client of one member, speaking the etcd v3 API with a timeout per
//! operation. Registers hold decimal u64 values.
//!
//! Outcomes follow what the client can know: a read that errs did nothing;
//! a write whose connection could not even be opened did nothing; any
//! other error or a timeout leaves a write of unknown outcome (the request
//! may sit in the Raft log and take effect later).

use std::time::Duration;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;

/// Why an operation did not complete normally.
#[derive(Debug, Clone)]
pub enum Error {
    Timeout,
    Status(tonic::Code, String),
    /// The member answered with something that is not one of our values.
    Garbled(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Timeout => write!(f, "timeout"),
            Error::Status(code, msg) => write!(f, "{code:?}: {msg}"),
            Error::Garbled(m) => write!(f, "garbled response: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// True when the request certainly never reached the member (the
    /// connection could not be opened), so a write did not happen.
    pub fn never_sent(&self) -> bool {
        matches!(self, Error::Status(tonic::Code::Unavailable, m) if m.starts_with("tcp connect error"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A client bound to one member.
#[derive(Clone)]
pub struct Client {
    kv: KvClient<Channel>,
    timeout: Duration,
    pub endpoint: String,
}

impl Client {
    pub fn new(endpoint: &str, timeout: Duration) -> anyhow::Result<Client> {
        let ch = crate::cluster::channel(endpoint, timeout)?;
        Ok(Client {
            kv: KvClient::new(ch),
            timeout,
            endpoint: endpoint.to_string(),
        })
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(s)) => Err(Error::Status(s.code(), s.message().to_string())),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// Reads a register: linearizable, or serializable (from the member's
    /// own state, possibly stale).
    pub async fn read(&self, key: &str, serializable: bool) -> Result<Option<u64>> {
        let mut kv = self.kv.clone();
        let r = self
            .timed(kv.range(RangeRequest {
                key: key.as_bytes().to_vec().into(),
                serializable,
                ..Default::default()
            }))
            .await?;
        match r.kvs.first() {
            None => Ok(None),
            Some(kv) => parse(&kv.value).map(Some),
        }
    }

    /// Reads a key's raw value (linearizable).
    pub async fn read_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut kv = self.kv.clone();
        let r = self
            .timed(kv.range(RangeRequest {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            }))
            .await?;
        Ok(r.kvs.first().map(|kv| kv.value.to_vec()))
    }

    /// One transaction, as is.
    pub async fn txn(&self, req: TxnRequest) -> Result<cairn_proto::etcdserverpb::TxnResponse> {
        let mut kv = self.kv.clone();
        self.timed(kv.txn(req)).await
    }

    /// The KV stub, for requests this client has no method for.
    pub fn kv(&self) -> KvClient<Channel> {
        self.kv.clone()
    }

    /// Writes a register; returns the revision of the write.
    pub async fn write(&self, key: &str, value: u64) -> Result<i64> {
        let mut kv = self.kv.clone();
        let r = self
            .timed(kv.put(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.to_string().into_bytes().into(),
                ..Default::default()
            }))
            .await?;
        Ok(r.header.map(|h| h.revision).unwrap_or_default())
    }

    /// If the register holds `from`, sets it to `to` (one Txn comparing
    /// the value); returns whether it did.
    pub async fn cas(&self, key: &str, from: u64, to: u64) -> Result<bool> {
        let mut kv = self.kv.clone();
        let r = self
            .timed(kv.txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.as_bytes().to_vec().into(),
                    target_union: Some(TargetUnion::Value(from.to_string().into_bytes().into())),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: key.as_bytes().to_vec().into(),
                        value: to.to_string().into_bytes().into(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            }))
            .await?;
        Ok(r.succeeded)
    }

    /// The current revision (a linearizable read of an empty range).
    pub async fn revision(&self) -> Result<i64> {
        let mut kv = self.kv.clone();
        let r = self
            .timed(kv.range(RangeRequest {
                key: b"\0revision".to_vec().into(),
                count_only: true,
                ..Default::default()
            }))
            .await?;
        Ok(r.header.map(|h| h.revision).unwrap_or_default())
    }
}

/// A register value as stored (decimal).
pub fn parse(v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Garbled(String::from_utf8_lossy(v).into_owned()))
}
