//! Accepting any `:authority`, as etcd does.
//!
//! etcd's clients send `:authority` values that are not URI authorities:
//! clientv3 3.4 dials an endpoint given as a URL with the URL itself
//! (`http://127.0.0.1:2379`), clientv3 3.5.0 sends
//! `#initially=[http://127.0.0.1:2379]`. etcd's server ignores the value;
//! the HTTP/2 server under tonic (h2) resets such a request with
//! PROTOCOL_ERROR before any of Cairn's code sees it, and has no option to
//! accept it. So the bytes a client sends pass through [`AuthorityFilter`]
//! on their way to h2.
//!
//! A gRPC client names the same `:authority` on every request of a
//! connection (it is the channel's), so the connection's first request
//! decides. The filter follows the client's HTTP/2 frames up to the first
//! header block (HEADERS and its CONTINUATIONs) and HPACK-decodes it. If
//! its `:authority` is a URI authority (or absent), the block goes on as
//! it came and the filter switches off: every later byte passes
//! untouched, at no cost. Otherwise every header block of the connection
//! is decoded (keeping a copy of the client's dynamic table) and encoded
//! again without the dynamic table (literal fields only, an invalid
//! `:authority` left out, which HTTP/2 allows), so h2's table, never
//! written, cannot disagree with the client's. Other frames pass as they
//! are, unbuffered. Anything that is not HTTP/2 as expected (no client
//! preface, a block that does not decode, frames out of order) switches
//! the filter off: h2 then answers what it would have anyway. (A client
//! that switched to an invalid `:authority` later on a connection would
//! have those requests refused by h2, as before; none does.)

use bytes::{BufMut, BytesMut};

/// HTTP/2's client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The largest frame payload the filter writes (HTTP/2's default, which
/// every peer accepts).
const MAX_FRAME: usize = 16_384;

/// The largest header block the filter gathers before it gives up and
/// passes the connection through untouched (h2 bounds what it accepts far
/// below this).
const MAX_BLOCK: usize = 1 << 20;

/// Where in the client's byte stream the filter is.
enum State {
    /// Matching the client preface; how many bytes matched.
    Preface(usize),
    /// Reading a frame header.
    Header,
    /// Copying the rest of a frame's payload as it is.
    Copy(usize),
    /// Gathering a HEADERS or CONTINUATION payload of this many bytes.
    Gather(usize),
    /// Not filtering any more.
    Off,
}

/// A header block being gathered.
struct Block {
    /// The frames as received.
    raw: BytesMut,
    /// The HPACK fragment, over all frames.
    fragment: BytesMut,
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// The filter on one client connection's inbound bytes (see the module
/// documentation).
pub struct AuthorityFilter {
    state: State,
    /// The frame header being read.
    head: Vec<u8>,
    /// The current frame's type and flags.
    kind: u8,
    flags: u8,
    /// The current frame's payload, while gathered.
    payload: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// Set when the first block had to be rewritten: every later block is
    /// too.
    rewriting: bool,
}

impl Default for AuthorityFilter {
    fn default() -> Self {
        Self {
            state: State::Preface(0),
            head: Vec::with_capacity(9),
            kind: 0,
            flags: 0,
            payload: BytesMut::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            rewriting: false,
        }
    }
}

/// Whether `v` is an `:authority` h2 accepts.
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// Appends an HPACK integer with an `n`-bit prefix whose high bits are
/// `first`.
fn put_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header as a literal field without indexing, with a literal name.
fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    put_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    put_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

impl AuthorityFilter {
    /// Whether the filter has stopped (every byte now passes as it is).
    pub fn is_off(&self) -> bool {
        matches!(self.state, State::Off)
    }

    /// Takes `input` (bytes from the client, in order) and appends what h2
    /// is to read to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) {
        while !input.is_empty() {
            match self.state {
                State::Off => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Preface(n) => {
                    let take = (PREFACE.len() - n).min(input.len());
                    let (now, rest) = input.split_at(take);
                    out.extend_from_slice(now);
                    input = rest;
                    if PREFACE[n..n + take] != *now {
                        self.state = State::Off;
                    } else if n + take == PREFACE.len() {
                        self.state = State::Header;
                    } else {
                        self.state = State::Preface(n + take);
                    }
                }
                State::Header => {
                    let take = (9 - self.head.len()).min(input.len());
                    self.head.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.head.len() == 9 {
                        self.frame_header(out);
                    }
                }
                State::Copy(left) => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take == left {
                        State::Header
                    } else {
                        State::Copy(left - take)
                    };
                }
                State::Gather(left) => {
                    let take = left.min(input.len());
                    self.payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if take == left {
                        self.state = State::Header;
                        self.gathered(out);
                    } else {
                        self.state = State::Gather(left - take);
                    }
                }
            }
        }
    }

    /// A whole frame header was read.
    fn frame_header(&mut self, out: &mut BytesMut) {
        let h = std::mem::take(&mut self.head);
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        self.kind = h[3];
        self.flags = h[4];
        let is_block = self.kind == HEADERS || self.kind == CONTINUATION;
        if self.block.is_some() != (self.kind == CONTINUATION) || (is_block && len > MAX_BLOCK) {
            // Out of order (h2 will say so) or too large to gather.
            self.give_up(out);
            out.extend_from_slice(&h);
            return;
        }
        if is_block {
            let block = self.block.get_or_insert_with(|| Block {
                raw: BytesMut::new(),
                fragment: BytesMut::new(),
                stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                end_stream: h[4] & END_STREAM != 0,
                priority: None,
            });
            block.raw.extend_from_slice(&h);
            self.payload.clear();
            self.state = State::Gather(len);
            if len == 0 {
                self.state = State::Header;
                self.gathered(out);
            }
        } else {
            out.extend_from_slice(&h);
            self.state = if len == 0 {
                State::Header
            } else {
                State::Copy(len)
            };
        }
        self.head = h;
        self.head.clear();
    }

    /// A HEADERS or CONTINUATION payload was gathered.
    fn gathered(&mut self, out: &mut BytesMut) {
        let payload = std::mem::take(&mut self.payload);
        let Some(block) = self.block.as_mut() else {
            return;
        };
        block.raw.extend_from_slice(&payload);
        let mut frag: &[u8] = &payload;
        if self.kind == HEADERS {
            let mut pad = 0;
            if self.flags & PADDED != 0 {
                let Some((&p, rest)) = frag.split_first() else {
                    return self.give_up(out);
                };
                pad = usize::from(p);
                frag = rest;
            }
            if self.flags & PRIORITY != 0 {
                if frag.len() < 5 {
                    return self.give_up(out);
                }
                let mut p = [0u8; 5];
                p.copy_from_slice(&frag[..5]);
                block.priority = Some(p);
                frag = &frag[5..];
            }
            if pad > frag.len() {
                return self.give_up(out);
            }
            frag = &frag[..frag.len() - pad];
        }
        block.fragment.extend_from_slice(frag);
        if block.fragment.len() > MAX_BLOCK {
            return self.give_up(out);
        }
        if self.flags & END_HEADERS != 0 {
            self.finish(out);
        }
    }

    /// A whole header block was gathered: passes it on, or its rewrite.
    fn finish(&mut self, out: &mut BytesMut) {
        let Some(block) = self.block.take() else {
            return;
        };
        // The decoder's table must follow every block, so every block is
        // decoded; its fields are kept in case this one is rewritten (the
        // table cannot be rewound to decode it twice).
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(8);
        let mut bad_authority = false;
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            if &*name == b":authority" && !valid_authority(&value) {
                bad_authority = true;
            }
            fields.push((name.into_owned(), value.into_owned()));
        });
        if decoded.is_err() {
            // Not HPACK h2 can read either; let it say so.
            out.extend_from_slice(&block.raw);
            self.state = State::Off;
            return;
        }
        self.rewriting |= bad_authority;
        if !self.rewriting {
            // The connection's first block, and a valid one: nothing to
            // do for this connection.
            out.extend_from_slice(&block.raw);
            self.state = State::Off;
            return;
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            if name == b":authority" && !valid_authority(value) {
                continue;
            }
            put_literal(&mut encoded, name, value);
        }
        write_block(out, &block, &encoded);
    }

    /// Stops filtering: what was gathered goes on as it came.
    fn give_up(&mut self, out: &mut BytesMut) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        if !self.payload.is_empty() {
            out.extend_from_slice(&std::mem::take(&mut self.payload));
        }
        self.state = State::Off;
    }
}

/// Writes `fragment` as HEADERS (and CONTINUATIONs) of `block`'s stream.
fn write_block(out: &mut BytesMut, block: &Block, fragment: &[u8]) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first = fragment.len().min(MAX_FRAME - prio_len);
    let (head, mut rest) = fragment.split_at(first);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    put_frame_header(out, head.len() + prio_len, HEADERS, flags, block.stream);
    if let Some(p) = block.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let (part, tail) = rest.split_at(n);
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        put_frame_header(out, n, CONTINUATION, flags, block.stream);
        out.extend_from_slice(part);
        rest = tail;
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A HEADERS frame carrying `fields`, encoded by an HPACK encoder that
    /// uses its dynamic table (as clients do).
    fn headers(
        enc: &mut loona_hpack::Encoder<'_>,
        stream: u32,
        fields: &[(&[u8], &[u8])],
    ) -> Vec<u8> {
        let block = enc.encode(fields.iter().copied());
        let mut out = BytesMut::new();
        put_frame_header(&mut out, block.len(), HEADERS, END_HEADERS, stream);
        out.extend_from_slice(&block);
        out.to_vec()
    }

    /// Decodes every header block of `bytes` (after the preface) as h2
    /// would: one decoder over the connection.
    fn h2_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = loona_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut blocks = Vec::new();
        let mut frag = Vec::new();
        while rest.len() >= 9 {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[9..9 + len];
            if kind == HEADERS || kind == CONTINUATION {
                frag.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    blocks.push(dec.decode(&frag).expect("h2 decodes the block"));
                    frag.clear();
                }
            }
            rest = &rest[9 + len..];
        }
        blocks
    }

    fn request(authority: &[u8], path: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", path.to_vec()),
            (b":authority", authority.to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
            (b"te", b"trailers".to_vec()),
        ]
    }

    fn run(authorities: &[&[u8]], chunk: usize) -> (Vec<u8>, Vec<u8>) {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for (i, a) in authorities.iter().enumerate() {
            let fields = request(a, format!("/etcdserverpb.KV/Range{i}").as_bytes());
            let refs: Vec<(&[u8], &[u8])> =
                fields.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            input.extend(headers(&mut enc, 1 + 2 * i as u32, &refs));
            // A DATA frame between requests passes untouched.
            let mut data = BytesMut::new();
            put_frame_header(&mut data, 3, 0x0, END_STREAM, 1 + 2 * i as u32);
            data.extend_from_slice(b"abc");
            input.extend_from_slice(&data);
        }
        let mut f = AuthorityFilter::default();
        let mut out = BytesMut::new();
        for part in input.chunks(chunk) {
            f.feed(part, &mut out);
        }
        (input, out.to_vec())
    }

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        for chunk in [1, 7, 4096] {
            let (input, out) = run(&[b"127.0.0.1:2379", b"127.0.0.1:2379", b"host:1"], chunk);
            assert_eq!(out, input, "chunk {chunk}");
        }
    }

    #[test]
    fn etcd_client_authorities_are_dropped_and_every_later_block_reads_the_same() {
        let forms: [&[u8]; 3] = [
            b"127.0.0.1:2379",
            b"http://127.0.0.1:2379",
            b"#initially=[http://127.0.0.1:2379]",
        ];
        for chunk in [1, 5, 4096] {
            // The bad value is then indexed by the client's encoder and
            // referred to again; valid ones in between too.
            let seq = [forms[1], forms[1], forms[2], forms[0], forms[2], forms[0]];
            let (_, out) = run(&seq, chunk);
            let blocks = h2_view(&out);
            assert_eq!(blocks.len(), seq.len(), "chunk {chunk}");
            for (i, (b, a)) in blocks.iter().zip(seq).enumerate() {
                let auth: Vec<_> = b.iter().filter(|(n, _)| n == b":authority").collect();
                if valid_authority(a) {
                    assert_eq!(auth, vec![&(b":authority".to_vec(), a.to_vec())], "{i}");
                } else {
                    assert!(auth.is_empty(), "block {i} kept {auth:?}");
                }
                let path = format!("/etcdserverpb.KV/Range{i}").into_bytes();
                assert!(b.contains(&(b":path".to_vec(), path)), "block {i}: {b:?}");
                assert!(
                    b.contains(&(b"te".to_vec(), b"trailers".to_vec())),
                    "block {i}"
                );
            }
        }
    }

    /// A connection whose first request names a valid authority is left
    /// alone from then on, whatever it sends.
    #[test]
    fn a_valid_first_authority_switches_the_filter_off() {
        let (input, out) = run(&[b"127.0.0.1:2379", b"http://127.0.0.1:2379"], 4096);
        assert_eq!(out, input);
        let mut f = AuthorityFilter::default();
        let mut enc = loona_hpack::Encoder::new();
        let fields = request(b"127.0.0.1:2379", b"/x");
        let refs: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let mut input = PREFACE.to_vec();
        input.extend(headers(&mut enc, 1, &refs));
        f.feed(&input, &mut BytesMut::new());
        assert!(f.is_off());
    }

    #[test]
    fn anything_but_http2_passes_untouched() {
        let mut f = AuthorityFilter::default();
        let mut out = BytesMut::new();
        f.feed(b"GET /health HTTP/1.1\r\n\r\n", &mut out);
        assert_eq!(&out[..], b"GET /health HTTP/1.1\r\n\r\n");
        assert!(f.is_off());
    }

    #[test]
    fn hpack_integers() {
        let mut v = Vec::new();
        put_int(&mut v, 0, 7, 10);
        assert_eq!(v, [10]);
        v.clear();
        put_int(&mut v, 0, 7, 127);
        assert_eq!(v, [127, 0]);
        v.clear();
        put_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10]);
    }
}
