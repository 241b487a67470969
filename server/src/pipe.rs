//! Bytes handed from one thread to another through an OS pipe: a kv
//! image exported on one side and turned into another format (or
//! imported) on the other, so neither side holds all of it.

use std::io::{self, BufReader, BufWriter, Read, Write};

/// Bytes buffered on each side of a pipe: an image is written and read
/// in small pieces (a record's header, its key), one system call each
/// without a buffer. Also the buffers of a Raft snapshot's export.
pub(crate) const BUFFER: usize = 256 << 10;

/// Runs `produce` (writing) and `consume` (reading) on two threads
/// joined by a pipe. The producer's error comes first: a consumer that
/// saw the pipe end early failed because of it.
pub fn through<P, C, T, E>(produce: P, consume: C) -> Result<T, E>
where
    P: FnOnce(&mut dyn Write) -> Result<(), E> + Send,
    C: FnOnce(&mut dyn Read) -> Result<T, E> + Send,
    T: Send,
    E: From<io::Error> + Send,
{
    let (r, w) = io::pipe()?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || -> Result<(), E> {
            let mut w = BufWriter::with_capacity(BUFFER, w);
            let out = produce(&mut w);
            let flushed = w.flush();
            out?;
            Ok(flushed?)
        });
        let mut r = BufReader::with_capacity(BUFFER, r);
        let consumed = consume(&mut r);
        // Unblocks a producer still writing to a consumer that stopped.
        drop(r);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the pipe's writer panicked").into()));
        produced?;
        consumed
    })
}
