//! Exec/attach over WebSocket (RFC 6455), as kube-apiserver ≥ 1.30 serves it.
//!
//! Every message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (the exit
//! `Status`), 4 resize; v5 adds 255, "close stream": `[255, 0]` half-closes stdin. The
//! `v4.base64.channel.k8s.io` variant sends text messages: an ASCII digit for the channel,
//! then the payload in standard base64. When the container exits the server sends the
//! status on channel 3 and closes the WebSocket (1000), which ends every stream for the
//! client, as kube-apiserver's stream translator does.
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::{
    Container, DRAIN_TIMEOUT, ExecError, ExecOptions, IDLE_TIMEOUT, Output, Session, await_upgrade,
    exit_status_json, header_str, header_tokens,
};
use crate::labapi::status::Status;
use crate::labapi::types::{LabResponse, empty};

/// Channel numbers.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: "close stream" signal; the payload is the channel being closed.
pub const CLOSE: u8 = 255;

/// Largest message or frame accepted from a client.
const MAX_MESSAGE: usize = 4 << 20;

/// The channel subprotocols served, in no particular order (the client's order wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 plus the close-stream signal.
    V5,
    /// `v4.channel.k8s.io`.
    V4,
    /// `v4.base64.channel.k8s.io`: v4 in base64 text messages.
    V4Base64,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::V5, Protocol::V4, Protocol::V4Base64];

    /// The `Sec-WebSocket-Protocol` token.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V4Base64 => "v4.base64.channel.k8s.io",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }

    fn binary(self) -> bool {
        self != Protocol::V4Base64
    }
}

fn bad_request(message: &str) -> LabResponse {
    Status::new(400, "BadRequest", message).response()
}

/// Validate the WebSocket handshake, answer 101 and run the session once upgraded.
pub(crate) fn accept(
    session: Session,
    opts: ExecOptions,
    container: Container,
    mut http: http::Request<hyper::body::Incoming>,
) -> LabResponse {
    if http.method() != http::Method::GET {
        return bad_request("websocket upgrade requires GET");
    }
    let connection = header_str(&http, http::header::CONNECTION).to_ascii_lowercase();
    if !connection.split(',').any(|t| t.trim() == "upgrade") {
        return bad_request("websocket upgrade requires Connection: Upgrade");
    }
    if header_str(&http, http::header::SEC_WEBSOCKET_VERSION) != "13" {
        let mut resp = bad_request("unsupported Sec-WebSocket-Version (want 13)");
        resp.headers_mut().insert(
            http::header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return resp;
    }
    let key = header_str(&http, http::header::SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return bad_request("missing Sec-WebSocket-Key");
    }
    let offered = header_tokens(&http, "sec-websocket-protocol");
    let Some(protocol) = offered.iter().find_map(|p| Protocol::from_name(p)) else {
        let served: Vec<_> = Protocol::ALL.iter().map(|p| p.name()).collect();
        return Status::new(
            403,
            "Forbidden",
            format!(
                "unable to upgrade: unable to negotiate websocket subprotocol: client offered {offered:?}, server accepts {served:?}"
            ),
        )
        .response();
    };
    let on_upgrade = hyper::upgrade::on(&mut http);
    tokio::spawn(async move {
        let Some(upgraded) = await_upgrade(on_upgrade, &session.pod, "websocket").await else {
            return;
        };
        match run(upgraded, protocol, opts, container).await {
            Ok(()) => {
                tracing::info!(pod = %session.pod, subresource = session.subresource, user = %session.identity.user, protocol = protocol.name(), "lab exec session ended")
            }
            Err(e) => {
                tracing::warn!(pod = %session.pod, error = %e, "lab exec websocket session failed")
            }
        }
    });
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol.name())
        .body(empty())
        .expect("valid response")
}

/// Run the channel protocol on an upgraded connection until the container exits or the
/// client goes away.
pub async fn run<S>(
    io: S,
    protocol: Protocol,
    opts: ExecOptions,
    mut container: Container,
) -> Result<(), ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..Default::default()
    };
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;

    let outputs = container.start();
    if deliver(&mut ws, protocol, &opts, &container, outputs).await? {
        return finish(ws).await;
    }
    loop {
        let msg = match tokio::time::timeout(IDLE_TIMEOUT, ws.next()).await {
            Err(_) => return Err(ExecError::Timeout("waiting for the websocket client")),
            Ok(None) => return Ok(()),
            Ok(Some(msg)) => msg?,
        };
        if let Message::Close(_) = msg {
            // The client hung up first; tungstenite answers the close.
            return Ok(());
        }
        let Some((channel, payload)) = decode(protocol, msg) else {
            continue;
        };
        let outputs = match channel {
            STDIN => container.stdin(payload),
            CLOSE if protocol == Protocol::V5 && payload.first() == Some(&STDIN) => {
                container.stdin_closed()
            }
            // Resize, a close of another channel, or channels only the server writes.
            _ => Vec::new(),
        };
        if deliver(&mut ws, protocol, &opts, &container, outputs).await? {
            return finish(ws).await;
        }
    }
}

/// Channel and payload of a data message; `None` for control or foreign messages.
fn decode(protocol: Protocol, msg: Message) -> Option<(u8, Bytes)> {
    match msg {
        Message::Binary(data) if protocol.binary() => {
            let data = Bytes::from(data);
            let channel = *data.first()?;
            Some((channel, data.slice(1..)))
        }
        Message::Text(text) if !protocol.binary() => {
            let mut chars = text.chars();
            let channel = chars.next()?.to_digit(10)? as u8;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(chars.as_str())
                .ok()?;
            Some((channel, Bytes::from(payload)))
        }
        _ => None,
    }
}

fn encode(protocol: Protocol, channel: u8, data: &[u8]) -> Message {
    if protocol.binary() {
        let mut v = Vec::with_capacity(data.len() + 1);
        v.push(channel);
        v.extend_from_slice(data);
        Message::Binary(v)
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        Message::Text(format!("{}{b64}", char::from(b'0' + channel)))
    }
}

/// Send what the container did; true once it exited (the status went out).
async fn deliver<S>(
    ws: &mut WebSocketStream<S>,
    protocol: Protocol,
    opts: &ExecOptions,
    container: &Container,
    outputs: Vec<Output>,
) -> Result<bool, ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for output in outputs {
        match output {
            Output::Stdout(data) if opts.stdout => {
                send(ws, encode(protocol, STDOUT, &data)).await?
            }
            Output::Stdout(_) => {}
            Output::Exit(code) => {
                let status = exit_status_json(code, container.command());
                send(ws, encode(protocol, ERROR, &status)).await?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Send one message; a client that stops reading cannot hold the session forever.
async fn send<S>(ws: &mut WebSocketStream<S>, msg: Message) -> Result<(), ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(IDLE_TIMEOUT, ws.send(msg))
        .await
        .map_err(|_| ExecError::Timeout("writing to the websocket client"))??;
    Ok(())
}

/// Close with 1000 and wait (bounded) for the client's close, so nothing in flight is lost.
async fn finish<S>(mut ws: WebSocketStream<S>) -> Result<(), ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await?;
        while let Some(msg) = ws.next().await {
            if msg.is_err() {
                break;
            }
        }
        Ok::<_, ExecError>(())
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("lab exec: websocket client did not close in time; dropping");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_both_codecs() {
        for p in Protocol::ALL {
            let m = encode(p, STDOUT, b"\x00hi\xff");
            // A client's message looks the same as a server's.
            assert_eq!(
                decode(p, m),
                Some((STDOUT, Bytes::from_static(b"\x00hi\xff"))),
                "{p:?}"
            );
        }
        assert_eq!(
            decode(Protocol::V4Base64, Message::Text("0aGk=".into())),
            Some((STDIN, Bytes::from_static(b"hi")))
        );
        assert_eq!(decode(Protocol::V5, Message::Binary(vec![])), None);
        assert_eq!(decode(Protocol::V5, Message::Text("0aGk=".into())), None);
        assert_eq!(
            decode(Protocol::V4Base64, Message::Text("x!!".into())),
            None
        );
    }
}
