//! The peer protocol's decoders fed arbitrary bytes (proptest, a bounded
//! number of cases for the test command): every message a peer can send
//! — openraft's requests and answers, forwarded requests, snapshot
//! headers, the append connection's frames — is
//! refused or decoded, never a panic, and a decoded message encodes back
//! to what was read. Inputs that found a bug are kept in
//! `server/proptest-regressions/raft/decode_fuzz.txt` (proptest's
//! regression file, re-run first).

use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use super::append_wire::FrameReader;
use super::forward::{ForwardRequest, ForwardResponse};
use super::{decode, encode, TypeConfig, MAX_PEER_MESSAGE};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest, VoteResponse,
};

/// Decodes `raw` as `T`; a decoded value must encode to a prefix of
/// `raw` that decodes to the same value again.
fn round<T>(raw: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + std::fmt::Debug,
{
    if let Ok(v) = decode::<T>(raw) {
        let again = encode(&v).expect("encode");
        let back = decode::<T>(&again).expect("decode what was encoded");
        assert_eq!(format!("{back:?}"), format!("{v:?}"));
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn raft_messages(raw in bytes()) {
        round::<AppendEntriesRequest<TypeConfig>>(&raw);
        round::<AppendEntriesResponse<TypeConfig>>(&raw);
        round::<VoteRequest<TypeConfig>>(&raw);
        round::<VoteResponse<TypeConfig>>(&raw);
        round::<TransferLeaderRequest<TypeConfig>>(&raw);
        let _ = super::append_stream::decode_answer(&raw);
    }

    #[test]
    fn forwarded_requests(raw in bytes()) {
        round::<ForwardRequest>(&raw);
        round::<ForwardResponse>(&raw);
        round::<super::network::SnapshotHeader>(&raw);
    }

    #[test]
    fn append_connection_frames(raw in bytes(), huge: bool) {
        let mut raw = raw;
        if huge {
            raw.splice(0..0, ((MAX_PEER_MESSAGE + 1) as u32).to_be_bytes());
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(1024);
            let writer = tokio::spawn(async move {
                let _ = a.write_all(&raw).await;
            });
            let mut frames = FrameReader::new(b);
            let mut total = 0usize;
            while let Ok(Some(f)) = frames.next().await {
                assert!(f.len() <= MAX_PEER_MESSAGE);
                total += 4 + f.len();
            }
            let _ = writer.await;
            prop_assert!(!huge || total == 0);
            Ok(())
        })?;
    }
}
