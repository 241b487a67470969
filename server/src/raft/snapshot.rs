//! A Raft snapshot's data. A member's snapshot is its kv store: building
//! one copies nothing (the store is made durable, so the log below its
//! applied position may be purged), and an image of the store is
//! exported only when a follower needs one, as it is sent.
//!
//! An exported image describes itself: its meta (log id, membership) is
//! the applied position fixed at the moment the export starts, and the
//! records written are those of that moment, while the member goes on
//! applying. While an image is being sent, the store's physical
//! compaction waits for it, as for a backup; dropping the data (a send
//! that failed) ends the export. A follower's received image is read
//! from the file it was received into, and is not kept once imported.
//!
//! etcd's snapshot is likewise its backend file, sent only to a member
//! that needs it; copying the whole store every `--snapshot-count`
//! entries wrote it out in full and freed the previous copy at once, and
//! held the Raft log's fsyncs behind both (benches/README.md, "What
//! stalled puts around a save").
//!
//! Owns: reading a snapshot's data, and the export behind it.
//!
//! May not: decide when snapshots are built or sent (openraft does).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, PipeReader, Read, Write};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use cairn_kv::Store;

use crate::pipe::BUFFER;

/// The data of a Raft snapshot: nothing to read (the snapshot is the
/// store as it stands), an image file, or an image being exported.
pub struct SnapshotData(Source);

enum Source {
    /// A snapshot built here: its contents are the store itself.
    InStore,
    /// An image received from the leader.
    File(BufReader<File>),
    /// An image being exported from the store by a background thread.
    Export {
        pipe: BufReader<PipeReader>,
        /// The export's outcome, read once the pipe ends.
        done: Option<mpsc::Receiver<io::Result<()>>>,
    },
}

impl SnapshotData {
    /// The data of a snapshot built here: the store itself, nothing to
    /// read.
    pub fn in_store() -> SnapshotData {
        SnapshotData(Source::InStore)
    }

    /// The image in `file` (received from the leader), read from its
    /// start.
    pub fn file(file: File) -> SnapshotData {
        SnapshotData(Source::File(BufReader::new(file)))
    }

    /// Starts exporting an image of `store` on a background thread, and
    /// answers once the image's moment is fixed: the data to read, and
    /// the applied position the image holds. Dropping the data stops
    /// the export.
    pub async fn export(store: Arc<Store>) -> io::Result<(SnapshotData, Option<Bytes>)> {
        let (r, w) = io::pipe()?;
        let (fixed_tx, fixed_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        crate::background::spawn("cairn-snapshot", move || {
            let mut w = BufWriter::with_capacity(BUFFER, w);
            let exported = store
                .export_fixed(&mut w, |applied| {
                    let _ = fixed_tx.send(applied.cloned());
                })
                .map_err(io::Error::other)
                .and_then(|_| w.flush());
            // Nobody reads the outcome of an export whose data was dropped.
            let _ = done_tx.send(exported);
        })?;
        let applied = match fixed_rx.await {
            Ok(applied) => applied,
            // The export failed before its moment was fixed: say why.
            Err(_) => {
                return Err(match done_rx.recv() {
                    Ok(Err(e)) => e,
                    _ => io::Error::other("the snapshot export ended before it started"),
                })
            }
        };
        let data = SnapshotData(Source::Export {
            pipe: BufReader::with_capacity(BUFFER, r),
            done: Some(done_rx),
        });
        Ok((data, applied))
    }
}

impl Read for SnapshotData {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Source::InStore => Err(io::Error::other(
                "this snapshot is the store itself: it has no image to read",
            )),
            Source::File(f) => f.read(buf),
            Source::Export { pipe, done } => {
                let n = pipe.read(buf)?;
                if n == 0 && !buf.is_empty() {
                    // The pipe ended: whole only if the export says so.
                    if let Some(done) = done.take() {
                        done.recv().unwrap_or_else(|_| {
                            Err(io::Error::other(
                                "the snapshot export ended without an answer",
                            ))
                        })?;
                    }
                }
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, key: &str, applied: &[u8]) {
        store
            .put(
                &cairn_kv::PutRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                },
                applied,
            )
            .expect("put");
    }

    #[tokio::test]
    async fn an_export_holds_the_store_as_of_its_start() -> io::Result<()> {
        let store = Arc::new(Store::open_temporary().map_err(io::Error::other)?);
        for i in 0..2000 {
            put(&store, &format!("key-{i:05}"), b"before");
        }
        let (mut data, applied) = SnapshotData::export(Arc::clone(&store)).await?;
        assert_eq!(applied.as_deref(), Some(&b"before"[..]));
        // Written after the export started: not in its image.
        put(&store, "after", b"after");
        let mut image = Vec::new();
        data.read_to_end(&mut image)?;
        let copy = Store::open_temporary().map_err(io::Error::other)?;
        let info = copy
            .import(&mut image.as_slice())
            .map_err(io::Error::other)?;
        assert_eq!(info.applied.as_deref(), Some(&b"before"[..]));
        assert_eq!(copy.current_revision(), 2001);
        assert_eq!(store.current_revision(), 2002);
        Ok(())
    }

    #[tokio::test]
    async fn a_dropped_export_stops_and_lets_compaction_run() -> io::Result<()> {
        let store = Arc::new(Store::open_temporary().map_err(io::Error::other)?);
        // More than the pipe and its buffers hold, so the export blocks;
        // each key written twice, so compaction has records to remove.
        let value = Bytes::from(vec![7u8; 4096]);
        for i in 0..2000 {
            store
                .put(
                    &cairn_kv::PutRequest {
                        key: Bytes::from(format!("key-{:05}", i % 1000)),
                        value: value.clone(),
                        ..Default::default()
                    },
                    b"p",
                )
                .map_err(io::Error::other)?;
        }
        let (mut data, _) = SnapshotData::export(Arc::clone(&store)).await?;
        let mut first = [0u8; 8];
        data.read_exact(&mut first)?;
        assert_eq!(&first, b"CAIRNKV1");
        drop(data);
        // Physical compaction waits for every export: it finishes only if
        // the dropped one stopped.
        store.compact(1500, b"p").map_err(io::Error::other)?;
        store.defragment().map_err(io::Error::other)?;
        Ok(())
    }

    #[test]
    fn a_built_snapshot_has_no_image() {
        let mut data = SnapshotData::in_store();
        let err = data.read(&mut [0u8; 16]).expect_err("nothing to read");
        assert!(err.to_string().contains("store itself"), "{err}");
    }
}
