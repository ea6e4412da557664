//! Exec/attach over SPDY/3.1, as kubelet and kube-apiserver serve it to client-go's
//! SPDY executor (moby/spdystream on the client side).
//!
//! After `101 Switching Protocols` (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version`), the
//! client opens one stream per `streamtype` (`error`, then `stdin`, `stdout`, `stderr`,
//! `resize` as requested); the server replies to each SYN_STREAM with an empty SYN_REPLY,
//! starts the container once all expected streams exist, writes stdout as DATA frames,
//! and on exit writes the status on the error stream and FINs every stream. Stdin EOF is a
//! DATA frame with FIN from the client.
//!
//! Header blocks are zlib streams (one per direction per connection, sync-flushed per
//! frame) with the SPDY/3 preset dictionary ([`dictionary`]).
use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    Container, DRAIN_TIMEOUT, ExecError, ExecOptions, IDLE_TIMEOUT, Output,
    STREAM_CREATION_TIMEOUT, Session, await_upgrade, exit_message, exit_status_json, header_str,
    header_tokens,
};
use crate::labapi::status::Status;
use crate::labapi::types::{LabResponse, empty};

/// The `X-Stream-Protocol-Version` header.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Sent with a 403 when no protocol could be negotiated.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";

/// Largest frame payload accepted (the wire allows 16 MiB).
const MAX_FRAME: usize = 1 << 20;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Largest number of header pairs in a block.
const MAX_HEADER_PAIRS: usize = 256;
/// Most streams a session may open.
const MAX_STREAMS: usize = 16;
/// Stdout is written in DATA frames of at most this size.
const DATA_CHUNK: usize = 32 << 10;
/// Stdin buffered before the container starts.
const MAX_EARLY_STDIN: usize = 1 << 20;

/// Data frame flag: last frame of this side of the stream.
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;

/// The channel protocol versions served over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    V2,
    V3,
    V4,
    /// Over SPDY v5 is v4 (half-close is native).
    V5,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::V5, Protocol::V4, Protocol::V3, Protocol::V2];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Validate the SPDY upgrade, negotiate the channel protocol, answer 101 and run the
/// session once upgraded.
pub(crate) fn accept(
    session: Session,
    opts: ExecOptions,
    container: Container,
    mut http: http::Request<hyper::body::Incoming>,
) -> LabResponse {
    let connection = header_str(&http, http::header::CONNECTION).to_ascii_lowercase();
    if !connection.split(',').any(|t| t.trim() == "upgrade") {
        return Status::new(400, "BadRequest", "Upgrade request required").response();
    }
    let offered = header_tokens(&http, PROTOCOL_HEADER);
    if offered.is_empty() {
        return Status::new(
            400,
            "BadRequest",
            "unable to upgrade: X-Stream-Protocol-Version is required",
        )
        .response();
    }
    let Some(protocol) = offered.iter().find_map(|p| Protocol::from_name(p)) else {
        let served: Vec<_> = Protocol::ALL.iter().map(|p| p.name()).collect();
        let mut resp = Status::new(
            403,
            "Forbidden",
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {served:?}"
            ),
        )
        .response();
        for p in served {
            resp.headers_mut()
                .append(ACCEPTED_PROTOCOLS_HEADER, http::HeaderValue::from_static(p));
        }
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut http);
    tokio::spawn(async move {
        let Some(upgraded) = await_upgrade(on_upgrade, &session.pod, "SPDY").await else {
            return;
        };
        match run(upgraded, protocol, opts, container).await {
            Ok(()) => {
                tracing::info!(pod = %session.pod, subresource = session.subresource, user = %session.identity.user, protocol = protocol.name(), "lab exec session ended (spdy)")
            }
            Err(e) => {
                tracing::warn!(pod = %session.pod, error = %e, "lab exec SPDY session failed")
            }
        }
    });
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header(PROTOCOL_HEADER, protocol.name())
        .body(empty())
        .expect("valid response")
}

// ---------------------------------------------------------------------------------------
// Frames

/// A SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Vec<(String, String)>,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type this codec skips (NOOP, CREDENTIAL, ...).
    Other {
        kind: u16,
    },
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// The SPDY/3 header-compression dictionary (SPDY draft 3, section 2.6.10.1): 64
/// length-prefixed words followed by common values.
pub fn dictionary() -> &'static [u8] {
    static DICT: LazyLock<Vec<u8>> = LazyLock::new(|| {
        const WORDS: [&str; 65] = [
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    });
    &DICT
}

/// Frame codec for one side of a SPDY/3 connection: it owns the two header-compression
/// contexts, so use one codec per connection (and per side).
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

fn spdy_err(msg: impl Into<String>) -> ExecError {
    ExecError::Spdy(msg.into())
}

impl Codec {
    pub fn new() -> Result<Self, ExecError> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|e| ExecError::Compression(e.to_string()))?;
        Ok(Codec {
            deflate,
            inflate: Decompress::new(true),
        })
    }

    /// Append the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), ExecError> {
        let mut body = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() >= 1 << 24 {
                    return Err(spdy_err("data frame too large"));
                }
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u8(*flags);
                put_u24(out, data.len());
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.put_u32(associated_to & STREAM_ID_MASK);
                body.put_u8((priority & 0x7) << 5);
                body.put_u8(0); // slot
                self.compress_headers(headers, &mut body)?;
                (SYN_STREAM, *flags)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                self.compress_headers(headers, &mut body)?;
                (SYN_REPLY, *flags)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                self.compress_headers(headers, &mut body)?;
                (HEADERS, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.put_u32(*status);
                (RST_STREAM, 0)
            }
            Frame::Settings { flags, entries } => {
                body.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    body.put_u8(*f);
                    put_u24(&mut body, *id as usize);
                    body.put_u32(*value);
                }
                (SETTINGS, *flags)
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                (PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                body.put_u32(last_good_stream_id & STREAM_ID_MASK);
                body.put_u32(*status);
                (GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.put_u32(delta & STREAM_ID_MASK);
                (WINDOW_UPDATE, 0)
            }
            Frame::Other { kind } => (*kind, 0),
        };
        if body.len() >= 1 << 24 {
            return Err(spdy_err("control frame too large"));
        }
        out.put_u16(0x8000 | 3);
        out.put_u16(kind);
        out.put_u8(flags);
        put_u24(out, body.len());
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Take one frame off the front of `buf`; `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ExecError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if len > MAX_FRAME {
            return Err(spdy_err(format!(
                "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
            )));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != 3 {
            return Err(spdy_err(format!("unsupported SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if len < n {
                Err(spdy_err(format!(
                    "control frame type {kind} too short ({len} bytes)"
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                let stream_id = body.get_u32() & STREAM_ID_MASK;
                let associated_to = body.get_u32() & STREAM_ID_MASK;
                let priority = body.get_u8() >> 5;
                let _slot = body.get_u8();
                let headers = self.decompress_headers(&body)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream_id = body.get_u32() & STREAM_ID_MASK;
                let headers = self.decompress_headers(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & STREAM_ID_MASK,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(4)?;
                let n = body.get_u32() as usize;
                if n.checked_mul(8) != Some(body.len()) {
                    return Err(spdy_err("SETTINGS entry count does not match its length"));
                }
                let entries = (0..n)
                    .map(|_| {
                        let id = body.get_u32();
                        ((id >> 24) as u8, id & 0xff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(4)?;
                let last_good_stream_id = body.get_u32() & STREAM_ID_MASK;
                let status = if body.remaining() >= 4 {
                    body.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & STREAM_ID_MASK,
                    delta: body.get_u32() & STREAM_ID_MASK,
                }
            }
            other => Frame::Other { kind: other },
        };
        Ok(Some(frame))
    }

    fn compress_headers(
        &mut self,
        headers: &[(String, String)],
        out: &mut Vec<u8>,
    ) -> Result<(), ExecError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (name, value) in headers {
            raw.put_u32(name.len() as u32);
            raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            raw.put_u32(value.len() as u32);
            raw.extend_from_slice(value.as_bytes());
        }
        let mut input = &raw[..];
        loop {
            out.reserve(input.len() + 64);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| ExecError::Compression(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before_in) as usize..];
            // Done when everything went in and the flush did not fill the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }

    fn decompress_headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, ExecError> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(spdy_err(format!(
                        "header block exceeds {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve(out.len().max(256));
            }
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before_in) as usize..];
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| {
                        ExecError::Compression(format!("the SPDY/3 dictionary was refused: {e}"))
                    })?;
                    continue;
                }
                Err(e) => return Err(ExecError::Compression(e.to_string())),
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => {}
            }
            let progressed = out.len() > before_out;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progressed && !input.is_empty() && out.len() < out.capacity() {
                return Err(spdy_err("header block does not decompress"));
            }
        }
        parse_header_block(&out)
    }
}

fn put_u24(out: &mut Vec<u8>, n: usize) {
    out.put_u8((n >> 16) as u8);
    out.put_u8((n >> 8) as u8);
    out.put_u8(n as u8);
}

fn parse_header_block(mut raw: &[u8]) -> Result<Vec<(String, String)>, ExecError> {
    fn take<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8], ExecError> {
        if raw.remaining() < 4 {
            return Err(spdy_err("truncated header block"));
        }
        let n = raw.get_u32() as usize;
        if raw.remaining() < n {
            return Err(spdy_err("truncated header block"));
        }
        let (s, rest) = raw.split_at(n);
        *raw = rest;
        Ok(s)
    }
    if raw.remaining() < 4 {
        return Err(spdy_err("truncated header block"));
    }
    let n = raw.get_u32() as usize;
    if n > MAX_HEADER_PAIRS {
        return Err(spdy_err(format!(
            "{n} header pairs exceed {MAX_HEADER_PAIRS}"
        )));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = String::from_utf8_lossy(take(&mut raw)?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(take(&mut raw)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

// ---------------------------------------------------------------------------------------
// Session

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StreamType {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl StreamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "error" => StreamType::Error,
            "stdin" => StreamType::Stdin,
            "stdout" => StreamType::Stdout,
            "stderr" => StreamType::Stderr,
            "resize" => StreamType::Resize,
            _ => return None,
        })
    }
}

struct Conn<R, W> {
    rd: R,
    wr: W,
    buf: BytesMut,
    codec: Codec,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// The next frame, `None` at end of stream.
    async fn next(&mut self) -> Result<Option<Frame>, ExecError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(16 << 10);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(spdy_err("connection closed inside a frame"))
                };
            }
        }
    }

    async fn send(&mut self, frames: &[Frame]) -> Result<(), ExecError> {
        let mut out = Vec::new();
        for f in frames {
            self.codec.encode(f, &mut out)?;
        }
        let write = async {
            self.wr.write_all(&out).await?;
            self.wr.flush().await
        };
        tokio::time::timeout(IDLE_TIMEOUT, write)
            .await
            .map_err(|_| ExecError::Timeout("writing to the SPDY client"))??;
        Ok(())
    }
}

/// Run the SPDY session on an upgraded connection until the container exits (and the
/// client hangs up, bounded) or the client goes away.
pub async fn run<S>(
    io: S,
    protocol: Protocol,
    opts: ExecOptions,
    mut container: Container,
) -> Result<(), ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = tokio::io::split(io);
    let mut conn = Conn {
        rd,
        wr,
        buf: BytesMut::with_capacity(16 << 10),
        codec: Codec::new()?,
    };
    let mut expected = vec![StreamType::Error];
    if opts.stdin {
        expected.push(StreamType::Stdin);
    }
    if opts.stdout {
        expected.push(StreamType::Stdout);
    }
    if opts.stderr {
        expected.push(StreamType::Stderr);
    }
    if opts.tty && protocol >= Protocol::V3 {
        expected.push(StreamType::Resize);
    }
    let mut streams: HashMap<StreamType, u32> = HashMap::new();
    let mut types: HashMap<u32, StreamType> = HashMap::new();
    let mut started = false;
    let mut early_stdin: Vec<Bytes> = Vec::new();
    let mut early_len = 0usize;
    let mut stdin_eof = false;
    let creation_deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;

    loop {
        let deadline = if started {
            tokio::time::Instant::now() + IDLE_TIMEOUT
        } else {
            creation_deadline
        };
        let frame = match tokio::time::timeout_at(deadline, conn.next()).await {
            Err(_) if started => return Err(ExecError::Timeout("waiting for the SPDY client")),
            Err(_) => {
                return Err(ExecError::Timeout(
                    "waiting for the client to create its streams",
                ));
            }
            Ok(r) => match r? {
                Some(frame) => frame,
                None => return Ok(()),
            },
        };
        let mut outputs = Vec::new();
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let kind = headers
                    .iter()
                    .find(|(k, _)| k == "streamtype")
                    .and_then(|(_, v)| StreamType::parse(v));
                match kind {
                    Some(kind)
                        if stream_id % 2 == 1
                            && !streams.contains_key(&kind)
                            && !types.contains_key(&stream_id)
                            && types.len() < MAX_STREAMS =>
                    {
                        streams.insert(kind, stream_id);
                        types.insert(stream_id, kind);
                        conn.send(&[Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Vec::new(),
                        }])
                        .await?;
                    }
                    _ => {
                        tracing::debug!(stream_id, ?headers, "lab exec: refusing SPDY stream");
                        conn.send(&[Frame::RstStream {
                            stream_id,
                            status: RST_REFUSED_STREAM,
                        }])
                        .await?;
                    }
                }
                if !started && expected.iter().all(|t| streams.contains_key(t)) {
                    started = true;
                    outputs.extend(container.start());
                    for data in early_stdin.drain(..) {
                        outputs.extend(container.stdin(data));
                    }
                    if stdin_eof {
                        outputs.extend(container.stdin_closed());
                    }
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if types.get(&stream_id) == Some(&StreamType::Stdin) && !stdin_eof {
                    let fin = flags & FLAG_FIN != 0;
                    if started {
                        outputs.extend(container.stdin(data));
                        if fin {
                            outputs.extend(container.stdin_closed());
                        }
                    } else {
                        early_len += data.len();
                        if early_len > MAX_EARLY_STDIN {
                            return Err(spdy_err("too much stdin before all streams were created"));
                        }
                        early_stdin.push(data);
                    }
                    stdin_eof |= fin;
                }
                // Resize events and data on other streams are ignored.
            }
            Frame::RstStream { stream_id, .. } => {
                if types.get(&stream_id) == Some(&StreamType::Stdin) && !stdin_eof {
                    stdin_eof = true;
                    if started {
                        outputs.extend(container.stdin_closed());
                    }
                }
            }
            Frame::Ping { id } => conn.send(&[Frame::Ping { id }]).await?,
            Frame::GoAway { .. } => return Ok(()),
            Frame::SynReply { .. }
            | Frame::Settings { .. }
            | Frame::Headers { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Other { .. } => {}
        }
        if deliver(&mut conn, protocol, &opts, &container, &streams, outputs).await? {
            return drain(conn).await;
        }
    }
}

/// Send what the container did; true once it exited (status sent, streams FINed).
async fn deliver<R, W>(
    conn: &mut Conn<R, W>,
    protocol: Protocol,
    opts: &ExecOptions,
    container: &Container,
    streams: &HashMap<StreamType, u32>,
    outputs: Vec<Output>,
) -> Result<bool, ExecError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Vec::new();
    let mut exited = false;
    for output in outputs {
        match output {
            Output::Stdout(data) => {
                if let (true, Some(&id)) = (opts.stdout, streams.get(&StreamType::Stdout)) {
                    let mut data = data;
                    while !data.is_empty() {
                        let chunk = data.split_to(data.len().min(DATA_CHUNK));
                        frames.push(Frame::Data {
                            stream_id: id,
                            flags: 0,
                            data: chunk,
                        });
                    }
                }
            }
            Output::Exit(code) => {
                let status = if protocol >= Protocol::V4 {
                    exit_status_json(code, container.command())
                } else if code.0 != 0 {
                    exit_message(code, container.command()).into_bytes()
                } else {
                    Vec::new()
                };
                if let (Some(&id), false) = (streams.get(&StreamType::Error), status.is_empty()) {
                    frames.push(Frame::Data {
                        stream_id: id,
                        flags: 0,
                        data: status.into(),
                    });
                }
                // Close the server's half of every stream, the error stream last.
                let mut ids: Vec<_> = streams
                    .iter()
                    .filter(|(t, _)| **t != StreamType::Error)
                    .map(|(_, id)| *id)
                    .collect();
                ids.sort_unstable();
                ids.extend(streams.get(&StreamType::Error));
                for id in ids {
                    frames.push(Frame::Data {
                        stream_id: id,
                        flags: FLAG_FIN,
                        data: Bytes::new(),
                    });
                }
                exited = true;
                break;
            }
        }
    }
    if !frames.is_empty() {
        conn.send(&frames).await?;
    }
    Ok(exited)
}

/// After exit: keep answering pings until the client hangs up (bounded), so closing never
/// races data still in flight to it.
async fn drain<R, W>(mut conn: Conn<R, W>) -> Result<(), ExecError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(until, conn.next()).await {
            Err(_) => {
                tracing::debug!("lab exec: SPDY client did not hang up in time; closing");
                let _ = conn
                    .send(&[Frame::GoAway {
                        last_good_stream_id: 0,
                        status: 0,
                    }])
                    .await;
                return Ok(());
            }
            Ok(Ok(Some(Frame::Ping { id }))) => conn.send(&[Frame::Ping { id }]).await?,
            Ok(Ok(Some(Frame::GoAway { .. }))) | Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(_))) => {}
            // The client may reset the connection once it has everything.
            Ok(Err(_)) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(d.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
    }

    #[test]
    fn frames_round_trip_with_compressed_headers() {
        let mut client = Codec::new().unwrap();
        let mut server = Codec::new().unwrap();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "stdin".into()),
                    ("x".into(), "a\0b".into()),
                ],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping { id: 1 },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 1000,
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_REFUSED_STREAM,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            client.encode(f, &mut wire).unwrap();
        }
        // The first header block says it needs the SPDY/3 dictionary (FDICT + its Adler-32).
        assert_eq!(wire[19] & 0x20, 0x20, "FDICT set");
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // Feed byte by byte: decoding is incremental.
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut c = Codec::new().unwrap();
        // Wrong version.
        let mut b = BytesMut::from(&b"\x80\x02\x00\x01\x00\x00\x00\x00"[..]);
        assert!(c.decode(&mut b).is_err());
        // Oversized.
        let mut b = BytesMut::from(&b"\x80\x03\x00\x01\x00\xff\xff\xff"[..]);
        assert!(c.decode(&mut b).is_err());
        // Short SYN_STREAM.
        let mut b = BytesMut::from(&b"\x80\x03\x00\x01\x00\x00\x00\x02ab"[..]);
        assert!(c.decode(&mut b).is_err());
        // Garbage header block.
        let mut b = BytesMut::from(&b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garb"[..]);
        assert!(c.decode(&mut b).is_err());
        // SETTINGS count lies.
        let mut b = BytesMut::from(&b"\x80\x03\x00\x04\x00\x00\x00\x04\x00\x00\x10\x00"[..]);
        assert!(c.decode(&mut b).is_err());
    }

    /// A client end built on the same codec, for driving [`run`] over a pipe.
    struct Client {
        io: tokio::io::DuplexStream,
        codec: Codec,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut out = Vec::new();
            self.codec.encode(&frame, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        async fn recv(&mut self) -> Option<Frame> {
            let patience = crate::eventually::patience();
            loop {
                if let Some(f) = self.codec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                let n = tokio::time::timeout(patience, self.io.read_buf(&mut self.buf))
                    .await
                    .expect("the server answers")
                    .unwrap();
                if n == 0 {
                    return None;
                }
            }
        }
    }

    fn syn(stream_id: u32, kind: &str) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamType".into(), kind.into())],
        }
    }

    fn data(stream_id: u32, flags: u8, bytes: &'static [u8]) -> Frame {
        Frame::Data {
            stream_id,
            flags,
            data: Bytes::from_static(bytes),
        }
    }

    #[tokio::test]
    async fn tty_session_with_early_stdin_pings_and_half_close() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let opts = ExecOptions {
            command: vec!["cat".into()],
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        };
        let container = Container::new(&opts, &crate::labapi::types::Identity::default());
        let session = tokio::spawn(run(server, Protocol::V4, opts, container));
        let mut c = Client {
            io: client,
            codec: Codec::new().unwrap(),
            buf: BytesMut::new(),
        };
        let reply = |id| Frame::SynReply {
            stream_id: id,
            flags: 0,
            headers: vec![],
        };
        c.send(syn(1, "error")).await;
        assert_eq!(c.recv().await, Some(reply(1)));
        c.send(syn(3, "stdin")).await;
        assert_eq!(c.recv().await, Some(reply(3)));
        // Stdin before stdout and resize exist is kept until the container starts.
        c.send(data(3, 0, b"early ")).await;
        c.send(syn(5, "stdout")).await;
        assert_eq!(c.recv().await, Some(reply(5)));
        // An unknown stream type is refused, the session goes on.
        c.send(syn(7, "bogus")).await;
        assert_eq!(
            c.recv().await,
            Some(Frame::RstStream {
                stream_id: 7,
                status: RST_REFUSED_STREAM
            })
        );
        c.send(syn(9, "resize")).await;
        assert_eq!(c.recv().await, Some(reply(9)));
        assert_eq!(c.recv().await, Some(data(5, 0, b"early ")));
        c.send(data(9, 0, br#"{"Width":80,"Height":24}"#)).await;
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.recv().await, Some(Frame::Ping { id: 1 }));
        c.send(data(3, FLAG_FIN, b"late")).await;
        assert_eq!(c.recv().await, Some(data(5, 0, b"late")));
        assert_eq!(
            c.recv().await,
            Some(data(1, 0, br#"{"metadata":{},"status":"Success"}"#))
        );
        // Every server half is FINed, the error stream last.
        for id in [3, 5, 9, 1] {
            assert_eq!(c.recv().await, Some(data(id, FLAG_FIN, b"")));
        }
        drop(c);
        session.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn v2_reports_failure_as_text_and_success_as_nothing() {
        for (command, status) in [
            ("false", &b"command terminated with non-zero exit code: error executing command [false], exit code 1"[..]),
            ("true", &b""[..]),
        ] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let opts = ExecOptions {
                command: vec![command.into()],
                stdout: true,
                ..Default::default()
            };
            let container = Container::new(&opts, &crate::labapi::types::Identity::default());
            let session = tokio::spawn(run(server, Protocol::V2, opts, container));
            let mut c = Client {
                io: client,
                codec: Codec::new().unwrap(),
                buf: BytesMut::new(),
            };
            c.send(syn(1, "error")).await;
            c.send(syn(3, "stdout")).await;
            let mut got = Vec::new();
            while let Some(f) = c.recv().await {
                let done = f == data(1, FLAG_FIN, b"");
                got.push(f);
                if done {
                    break;
                }
            }
            let mut want = vec![
                Frame::SynReply { stream_id: 1, flags: 0, headers: vec![] },
                Frame::SynReply { stream_id: 3, flags: 0, headers: vec![] },
            ];
            if !status.is_empty() {
                want.push(Frame::Data {
                    stream_id: 1,
                    flags: 0,
                    data: Bytes::copy_from_slice(status),
                });
            }
            want.push(data(3, FLAG_FIN, b""));
            want.push(data(1, FLAG_FIN, b""));
            assert_eq!(got, want, "{command}");
            drop(c);
            session.await.unwrap().unwrap();
        }
    }
}
