//! A real HTTPS upstream standing in for kube-apiserver: it serves the apiserver's cert,
//! requests a front-proxy client cert (verified against the front-proxy CA, optional), and
//! echoes what it received: request line, `authority`, every header, the client cert's CN.
//!
//! Special paths: `/big?bytes=N` streams N bytes; `/watch` streams whatever the test pushes
//! into [`Upstream::watch`]; an `Upgrade: websocket` request becomes a WebSocket that first
//! sends the echo text, then echoes messages.
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::pki::Pki;

type Body = Either<
    Full<Bytes>,
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>,
>;

pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    watch: Arc<Mutex<HashMap<String, mpsc::Receiver<Bytes>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// The next `/watch` request streams what is sent on the returned channel.
    pub fn watch(&self) -> mpsc::Sender<Bytes> {
        self.watch_id("")
    }

    /// The next `/watch?id=<id>` request streams what is sent on the returned channel.
    pub fn watch_id(&self, id: &str) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(16);
        self.watch.lock().insert(id.to_owned(), rx);
        tx
    }

    pub async fn start(pki: &Pki) -> Upstream {
        Self::start_with(pki, "127.0.0.1:0".parse().unwrap(), 100).await
    }

    pub async fn start_on(pki: &Pki, addr: SocketAddr) -> Upstream {
        Self::start_with(pki, addr, 100).await
    }

    /// `h2_max_streams`: the per-connection stream limit (kube-apiserver's default is 100).
    pub async fn start_with(pki: &Pki, addr: SocketAddr, h2_max_streams: u32) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(server_config(pki));
        let requests = Arc::new(AtomicUsize::new(0));
        let watch = Arc::new(Mutex::new(HashMap::new()));
        let (r, w) = (requests.clone(), watch.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // Go (kube-apiserver) sets TCP_NODELAY on every connection.
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let (r, w) = (r.clone(), w.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer_cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| cn_of(c.as_ref()))
                        .unwrap_or_else(|| "-".to_owned());
                    let service = hyper::service::service_fn(move |req| {
                        r.fetch_add(1, Ordering::SeqCst);
                        let (peer_cn, w) = (peer_cn.clone(), w.clone());
                        async move { Ok::<_, Infallible>(handle(req, &peer_cn, &w).await) }
                    });
                    // kube-apiserver's limits: 1 MiB of headers on h1 and h2, no count limit.
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .max_buf_size((1 << 20) + 4096)
                        .max_headers(16 * 1024);
                    builder
                        .http2()
                        .max_header_list_size((1 << 20) + 4096)
                        .max_concurrent_streams(h2_max_streams);
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            requests,
            watch,
            task,
        }
    }
}

fn cn_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .last()
        .unwrap_or_default()
        .to_owned()
}

fn server_config(pki: &Pki) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(mvp::tls::load_roots(&pki.front_proxy_ca_file).unwrap());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let chain = mvp::tls::load_certs(&pki.serving.cert).unwrap();
    let key = mvp::tls::load_key(&pki.serving.key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

fn echo_text(req: &Request<Incoming>, peer_cn: &str) -> String {
    let mut out = format!(
        "{} {} {:?}\nauthority: {}\n",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        req.version(),
        req.uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| req
                .headers()
                .get("host")
                .map(|h| h.to_str().unwrap().to_owned()))
            .unwrap_or_default(),
    );
    for (name, value) in req.headers() {
        out.push_str(&format!(
            "{}: {}\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out.push_str(&format!("peer-cn: {peer_cn}\n"));
    out
}

async fn handle(
    mut req: Request<Incoming>,
    peer_cn: &str,
    watch: &Mutex<HashMap<String, mpsc::Receiver<Bytes>>>,
) -> Response<Body> {
    let text = echo_text(&req, peer_cn);
    let path = req.uri().path().to_owned();
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    if let Some(protocol) = upgrade.filter(|p| !p.eq_ignore_ascii_case("websocket")) {
        // SPDY/3.1 (kubectl exec/attach/port-forward before WebSockets): after 101 the
        // stream is raw; send the echo text, then echo bytes back.
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let upgraded = on_upgrade.await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
            wr.write_all(text.as_bytes()).await.unwrap();
            wr.write_all(b"--\n").await.unwrap();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", protocol)
            .body(Either::Left(Full::default()))
            .unwrap();
    }
    if req.headers().contains_key(http::header::UPGRADE) {
        let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            ws.send(text.into()).await.unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
                ws.send(msg).await.unwrap();
            }
        });
        let protocol = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|p| p.to_str().ok())
            .and_then(|p| p.split(',').next())
            .unwrap_or("")
            .trim()
            .to_owned();
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("sec-websocket-protocol", protocol)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header(
                "sec-websocket-accept",
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
            )
            .body(Either::Left(Full::default()))
            .unwrap();
    }
    if path == "/big" {
        let bytes: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(bytes, move |left| {
            let chunk = chunk.clone();
            async move {
                (left > 0).then(|| {
                    let n = left.min(chunk.len() as u64);
                    (Ok(Frame::data(chunk.slice(..n as usize))), left - n)
                })
            }
        });
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Either::Right(StreamBody::new(stream.boxed())))
            .unwrap();
    }
    if path == "/watch" {
        let id = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("id="))
            .unwrap_or("");
        let rx = watch
            .lock()
            .remove(id)
            .expect("test must call Upstream::watch first");
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Either::Right(StreamBody::new(stream.boxed())))
            .unwrap();
    }
    // Drain the body so POSTs work; report its size.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let text = format!("{text}body-bytes: {body}\n");
    Response::builder()
        .header("content-type", "text/plain")
        .header("audit-id", "echo")
        .body(Either::Left(Full::new(Bytes::from(text))))
        .unwrap()
}
