//! The front door end to end: real TLS with a generated PKI, curl (and a WebSocket client) in
//! front, a real HTTPS upstream behind that echoes what reached it.
mod support;

use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use support::pki::Pki;
use support::upstream::Upstream;
use support::{Mvp, config, curl};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const SPOOF: [&str; 6] = [
    "-H",
    "X-Remote-User: bob",
    "-H",
    "X-Remote-Group: system:masters",
    "-H",
    "X-Remote-Extra-Scopes: all",
];

async fn setup() -> (Pki, Upstream, Mvp) {
    let pki = Pki::new();
    let upstream = Upstream::start(&pki).await;
    let mvp = Mvp::start(&config(&pki, upstream.addr)).await;
    (pki, upstream, mvp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_caller_is_forwarded_with_front_proxy_identity_over_h1_and_h2() {
    let (pki, _upstream, mvp) = setup().await;
    for proto in ["--http1.1", "--http2"] {
        let url = mvp.url("/api/v1/namespaces?limit=1");
        let mut args = vec![proto, url.as_str()];
        args.extend(SPOOF);
        args.extend([
            "-H",
            "Authorization: Bearer should-not-travel",
            "-H",
            "Impersonate-User: carol",
        ]);
        let r = curl(&pki, Some(&pki.admin), &args).await;
        assert_eq!(r.status, 200, "{proto}: {r:?}");
        assert_eq!(r.echoed("x-remote-user"), ["admin"], "{proto}: {}", r.body);
        assert_eq!(
            r.echoed("x-remote-group"),
            ["system:masters", "team-b"],
            "{proto}"
        );
        assert!(
            r.echoed("x-remote-extra-scopes").is_empty(),
            "spoofed extra stripped"
        );
        let cred = r.echoed("x-remote-extra-authentication.kubernetes.io%2fcredential-id");
        assert!(
            cred.len() == 1 && cred[0].starts_with("X509SHA256="),
            "{cred:?}"
        );
        assert!(
            r.echoed("authorization").is_empty(),
            "token dropped for x509 callers"
        );
        assert_eq!(
            r.echoed("impersonate-user"),
            ["carol"],
            "impersonation passes"
        );
        assert_eq!(
            r.echoed("peer-cn"),
            ["front-proxy-client"],
            "front-proxy cert upstream"
        );
        assert_eq!(r.echoed("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(
            r.echoed("authority"),
            [format!("127.0.0.1:{}", mvp.addr.port())],
            "authority kept"
        );
        assert!(
            r.body.starts_with("GET /api/v1/namespaces?limit=1 "),
            "{}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_passes_untouched_without_identity_headers_or_client_cert() {
    let (pki, _upstream, mvp) = setup().await;
    for proto in ["--http1.1", "--http2"] {
        let url = mvp.url("/api");
        let mut args = vec![proto, url.as_str(), "-H", "Authorization: Bearer abc.def"];
        args.extend(SPOOF);
        let r = curl(&pki, None, &args).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.echoed("authorization"), ["Bearer abc.def"]);
        assert!(r.echoed("x-remote-user").is_empty(), "{}", r.body);
        assert!(r.echoed("x-remote-group").is_empty());
        assert!(r.echoed("x-remote-extra-scopes").is_empty());
        assert_eq!(r.echoed("peer-cn"), ["-"], "no client cert upstream");
    }
}

/// kubectl (client-go: h2, its own TLS stack) as the client, x509 and token users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_x509_and_token_users_reach_the_apiserver_as_themselves() {
    let (pki, _upstream, mvp) = setup().await;
    let kubeconfig = pki.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\n\
             - name: tok\n  user:\n    token: s3cr3t\n\
             contexts:\n- name: admin\n  context:\n    cluster: c\n    user: admin\n\
             - name: tok\n  context:\n    cluster: c\n    user: tok\n\
             current-context: admin\n",
            mvp.url(""),
            pki.cluster_ca_file.display(),
            pki.admin.cert.display(),
            pki.admin.key.display(),
        ),
    )
    .unwrap();
    let kubectl = |context: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "--context",
                    context,
                    "get",
                    "--raw",
                    "/api/v1/namespaces?limit=1",
                ])
                .output()
                .await
                .expect("kubectl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let echo = kubectl("admin").await;
    assert!(
        echo.starts_with("GET /api/v1/namespaces?limit=1 HTTP/2.0\n"),
        "{echo}"
    );
    assert!(echo.contains("\nx-remote-user: admin\n"), "{echo}");
    assert!(
        echo.contains("\nx-remote-group: system:masters\nx-remote-group: team-b\n"),
        "{echo}"
    );
    assert!(echo.contains("\npeer-cn: front-proxy-client\n"), "{echo}");
    assert!(echo.contains("\nuser-agent: kubectl/"), "{echo}");
    let echo = kubectl("tok").await;
    assert!(echo.contains("\nauthorization: Bearer s3cr3t\n"), "{echo}");
    assert!(!echo.contains("x-remote-user"), "{echo}");
    assert!(echo.contains("\npeer-cn: -\n"), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_caller_has_no_identity_and_no_client_cert_upstream() {
    let (pki, _upstream, mvp) = setup().await;
    let url = mvp.url("/version");
    let mut args = vec![url.as_str()];
    args.extend(SPOOF);
    let r = curl(&pki, None, &args).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.echoed("x-remote-user").is_empty(), "{}", r.body);
    assert!(r.echoed("x-remote-group").is_empty());
    assert!(r.echoed("authorization").is_empty());
    assert_eq!(r.echoed("peer-cn"), ["-"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_front_proxy_headers_are_kept() {
    let (pki, _upstream, mvp) = setup().await;
    let url = mvp.url("/api/v1/pods");
    let r = curl(
        &pki,
        Some(&pki.outer_front_proxy),
        &[
            url.as_str(),
            "-H",
            "X-Remote-User: bob",
            "-H",
            "X-Remote-Group: team-x",
            "-H",
            "X-Remote-Group: team-y",
            "-H",
            "X-Remote-Extra-Acme.com%2Fproject: p1",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-remote-user"), ["bob"]);
    assert_eq!(r.echoed("x-remote-group"), ["team-x", "team-y"]);
    assert_eq!(r.echoed("x-remote-extra-acme.com%2fproject"), ["p1"]);
    assert_eq!(r.echoed("peer-cn"), ["front-proxy-client"]);
}

/// kube-apiserver requests client certs without verifying them in the handshake
/// (`tls.RequestClientCert`); a cert that authenticates nothing gets 401 per request, and a
/// bearer token on the same request still authenticates. mvp must behave the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_that_authenticate_nothing_get_401_and_never_reach_the_apiserver() {
    let (pki, upstream, mvp) = setup().await;
    let url = mvp.url("/api/v1/namespaces/default/configmaps");
    let before = upstream.requests.load(Ordering::SeqCst);
    for (what, cert, extra) in [
        ("unknown CA", &pki.unknown, None),
        ("expired", &pki.expired, None),
        (
            "front-proxy CN not allowed",
            &pki.bad_front_proxy,
            Some("X-Remote-User: bob"),
        ),
        (
            "front-proxy without user header",
            &pki.outer_front_proxy,
            None,
        ),
    ] {
        for proto in ["--http1.1", "--http2"] {
            let mut args = vec![proto, url.as_str()];
            if let Some(h) = extra {
                args.extend(["-H", h]);
            }
            let r = curl(&pki, Some(cert), &args).await;
            assert_eq!(
                r.exit, 0,
                "{what}: handshake must succeed as at kube-apiserver: {r:?}"
            );
            assert_eq!(r.status, 401, "{what} {proto}: {r:?}");
            assert_eq!(
                r.body,
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
            );
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/json")
            );
        }
    }
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        before,
        "nothing forwarded"
    );

    // Unknown cert + bearer token: the token authenticates (apiserver's union), forwarded
    // as a bearer caller without any client cert.
    let r = curl(
        &pki,
        Some(&pki.unknown),
        &[url.as_str(), "-H", "Authorization: Bearer t0k"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("authorization"), ["Bearer t0k"]);
    assert_eq!(r.echoed("peer-cn"), ["-"]);
    assert!(r.echoed("x-remote-user").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_streams_through_without_buffering() {
    let (pki, _upstream, mvp) = setup().await;
    const SIZE: u64 = 200 * 1024 * 1024;
    let hwm_before = vm_kib("VmHWM:");
    let rss_before = vm_kib("VmRSS:");
    let started = std::time::Instant::now();
    let url = mvp.url(&format!("/big?bytes={SIZE}"));
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "--cacert",
        ])
        .arg(&pki.cluster_ca_file)
        .arg("--cert")
        .arg(&pki.admin.cert)
        .arg("--key")
        .arg(&pki.admin.key)
        .arg(&url)
        .output()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let got: u64 = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    assert_eq!(got, SIZE, "{}", String::from_utf8_lossy(&out.stderr));
    let hwm_growth = vm_kib("VmHWM:") - hwm_before;
    println!(
        "streamed {} MiB through mvp (h2 both sides) in {:.2?} ({:.0} MiB/s, debug build); \
         peak RSS growth of the test process (mvp + upstream) {} KiB, RSS {} -> {} KiB",
        SIZE >> 20,
        elapsed,
        (SIZE >> 20) as f64 / elapsed.as_secs_f64(),
        hwm_growth,
        rss_before,
        vm_kib("VmRSS:")
    );
    assert!(
        hwm_growth < 64 * 1024,
        "peak RSS grew by {hwm_growth} KiB for a 200 MiB body: something buffers it"
    );
}

fn vm_kib(field: &str) -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_arrive_one_by_one_while_the_stream_is_open() {
    let (pki, upstream, mvp) = setup().await;
    for proto in ["--http1.1", "--http2"] {
        let events = upstream.watch();
        let mut child = tokio::process::Command::new("curl")
            .args(["-sS", "-N", proto, "--cacert"])
            .arg(&pki.cluster_ca_file)
            .arg("--cert")
            .arg(&pki.admin.cert)
            .arg("--key")
            .arg(&pki.admin.key)
            .arg(mvp.url("/watch"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        for i in 0..3 {
            let event = format!("{{\"type\":\"ADDED\",\"object\":{{\"n\":{i}}}}}\n");
            events.send(event.clone().into()).await.unwrap();
            // The upstream response is still open: the event can only arrive if mvp flushed it.
            let line = tokio::time::timeout(support::patience(), lines.next_line())
                .await
                .expect("event delivered while the watch is open")
                .unwrap()
                .unwrap();
            assert_eq!(format!("{line}\n"), event, "{proto}");
        }
        drop(events);
        assert!(
            lines.next_line().await.unwrap().is_none(),
            "stream ends when upstream ends"
        );
        assert!(child.wait().await.unwrap().success(), "{proto}");
    }
}

fn watch_curl(pki: &Pki, url: &str, proto: &str) -> tokio::process::Child {
    tokio::process::Command::new("curl")
        .args(["-sS", "-N", proto, "--cacert"])
        .arg(&pki.cluster_ca_file)
        .arg("--cert")
        .arg(&pki.admin.cert)
        .arg("--key")
        .arg(&pki.admin.key)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The apiserver limits h2 streams per connection (100 by default). If mvp funnelled every
/// client into one shared upstream h2 connection, the (limit+1)th concurrent watch would
/// wait forever for a stream. Upstream connections follow client connections, so it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_watches_beyond_one_connections_stream_limit_all_stream() {
    let pki = Pki::new();
    let upstream = Upstream::start_with(&pki, "127.0.0.1:0".parse().unwrap(), 2).await;
    let mvp = Mvp::start(&config(&pki, upstream.addr)).await;
    let mut watches = Vec::new();
    for i in 0..4 {
        let events = upstream.watch_id(&i.to_string());
        let mut child = watch_curl(&pki, &mvp.url(&format!("/watch?id={i}")), "--http2");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        watches.push((events, child, lines));
    }
    for (i, (events, _, lines)) in watches.iter_mut().enumerate() {
        let event = format!("{{\"type\":\"ADDED\",\"object\":{{\"n\":{i}}}}}");
        events.send(format!("{event}\n").into()).await.unwrap();
        let line = tokio::time::timeout(support::patience(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("watch {i} stalled: upstream stream limit hit"))
            .unwrap()
            .unwrap();
        assert_eq!(line, event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_carries_identity_and_splices_both_ways() {
    let (pki, _upstream, mvp) = setup().await;
    let tls = support::tls_connect(
        mvp.addr,
        support::client_tls(&pki, Some(&pki.admin), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "wss://127.0.0.1:{}/api/v1/namespaces/default/pods/p/exec?command=sh",
            mvp.addr.port()
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("x-remote-user", "bob".parse().unwrap());
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    let hello = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(hello.contains("\nx-remote-user: admin\n"), "{hello}");
    assert!(!hello.contains("bob"), "spoofed user stripped: {hello}");
    assert!(
        hello.contains("\nx-remote-group: system:masters\n"),
        "{hello}"
    );
    assert!(hello.contains("\npeer-cn: front-proxy-client\n"), "{hello}");
    assert!(
        hello.contains("\nsec-websocket-protocol: v5.channel.k8s.io\n"),
        "{hello}"
    );
    for msg in ["stdin-1", "stdin-2"] {
        ws.send(msg.into()).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap().into_text().unwrap();
        assert_eq!(echo, msg);
    }
    ws.close(None).await.unwrap();
}

/// `kubectl exec` over SPDY/3.1: an HTTP/1.1 Upgrade; after 101 the stream is raw bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_upgrade_carries_identity_and_splices_raw_bytes() {
    let (pki, _upstream, mvp) = setup().await;
    let mut tls = support::tls_connect(
        mvp.addr,
        support::client_tls(&pki, Some(&pki.admin), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    tls.write_all(
        b"POST /api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true HTTP/1.1\r\n\
          Host: kube\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Remote-User: bob\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reader = tokio::io::BufReader::new(tls);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(support::patience(), reader.read_line(&mut line))
            .await
            .expect("upgrade answered")
            .unwrap();
        assert!(n > 0, "connection closed early: {seen}");
        if line == "--\n" {
            break;
        }
        seen.push_str(&line);
    }
    assert!(
        seen.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{seen}"
    );
    assert!(
        seen.to_ascii_lowercase()
            .contains("\r\nupgrade: spdy/3.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\nx-remote-user: admin\n"), "{seen}");
    assert!(!seen.contains("bob"), "{seen}");
    assert!(
        seen.contains("\nx-stream-protocol-version: v4.channel.k8s.io\n"),
        "{seen}"
    );
    assert!(seen.contains("\npeer-cn: front-proxy-client\n"), "{seen}");
    let mut tls = reader.into_inner();
    tls.write_all(b"raw spdy frame bytes").await.unwrap();
    let mut echo = [0u8; 20];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"raw spdy frame bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_503_status_with_retry_after_then_recovers_without_restart() {
    let pki = Pki::new();
    let addr = support::free_port();
    let mvp = Mvp::start(&config(&pki, addr)).await;
    for proto in ["--http1.1", "--http2"] {
        let r = curl(&pki, Some(&pki.admin), &[proto, &mvp.url("/api")]).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        let status: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "ServiceUnavailable");
        assert_eq!(status["code"], 503);
    }
    let _upstream = Upstream::start_on(&pki, addr).await;
    let r = curl(&pki, Some(&pki.admin), &[&mvp.url("/api")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-remote-user"), ["admin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_serving_cert_is_presented_to_new_handshakes() {
    let (pki, _upstream, mvp) = setup().await;
    let presented_cn = || async {
        let tls = support::tls_connect(mvp.addr, support::client_tls(&pki, None, &[b"h2"]))
            .await
            .map_err(|e| e.to_string())?;
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        Ok::<_, String>(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert_eq!(presented_cn().await.unwrap(), "kube-apiserver");
    // Rotate: a new pair from the same CA, written beside and renamed over (as kubeadm does).
    let renewed = pki
        .cluster_ca
        .serving(pki.dir.path(), "renewed", "kube-apiserver-renewed");
    std::fs::rename(&renewed.key, &pki.serving.key).unwrap();
    std::fs::rename(&renewed.cert, &pki.serving.cert).unwrap();
    support::eventually("the renewed cert to be served", || async {
        match presented_cn().await? {
            cn if cn == "kube-apiserver-renewed" => Ok(()),
            cn => Err(format!("still presenting {cn}")),
        }
    })
    .await;
    let r = curl(&pki, Some(&pki.admin), &[&mvp.url("/healthz")]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// kube-apiserver reloads its client CA bundles; `kubeadm certs renew` rewrites the
/// front-proxy client pair. New connections must use what is on disk now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_client_ca_and_front_proxy_client_cert_apply_to_new_connections() {
    let (pki, _upstream, mvp) = setup().await;
    let url = mvp.url("/api");
    let r = curl(&pki, Some(&pki.unknown), &[url.as_str()]).await;
    assert_eq!(r.status, 401, "not trusted yet: {r:?}");

    // Trust the new CA too (a CA rotation bundle), written beside and renamed over.
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&pki.cluster_ca_file).unwrap(),
        std::fs::read_to_string(&pki.unknown_ca_file).unwrap()
    );
    let tmp = pki.dir.path().join("ca.crt.new");
    std::fs::write(&tmp, bundle).unwrap();
    std::fs::rename(&tmp, &pki.cluster_ca_file).unwrap();
    let r = support::eventually("a cert of the newly trusted CA to authenticate", || async {
        let r = curl(&pki, Some(&pki.unknown), &[url.as_str()]).await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    })
    .await;
    assert_eq!(r.echoed("x-remote-user"), ["admin"]);

    // Renew mvp's front-proxy client cert.
    let renewed = pki.front_proxy_ca.client(
        pki.dir.path(),
        "front-proxy-client-renewed",
        "front-proxy-client-renewed",
        &[],
        false,
    );
    std::fs::rename(&renewed.key, &pki.proxy_client.key).unwrap();
    std::fs::rename(&renewed.cert, &pki.proxy_client.cert).unwrap();
    support::eventually(
        "new upstream connections to present the renewed cert",
        || async {
            let r = curl(&pki, Some(&pki.admin), &[url.as_str()]).await;
            match r.echoed("peer-cn").as_slice() {
                [cn] if cn == "front-proxy-client-renewed" => Ok(()),
                other => Err(format!("upstream saw {other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_malformed_requests_get_400() {
    let (pki, upstream, mvp) = setup().await;
    let before = upstream.requests.load(Ordering::SeqCst);
    // 1.2 MiB of headers (curl itself refuses to send more than 1 MiB; kube-apiserver's limit
    // is 1 MiB): written raw over TLS.
    let value = "v".repeat(6 * 1024);
    let mut request = String::from("GET /api HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        request.push_str(&format!("X-Big-{i}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let reply = raw_exchange(&pki, &mvp, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // Just under the limit still goes through.
    let mut request = String::from("GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..150 {
        request.push_str(&format!("X-Big-{i}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let reply = raw_exchange(&pki, &mvp, request.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let before = before + 1;

    // A Host that is not an authority: mvp answers 400 with a Status.
    let r = curl(
        &pki,
        None,
        &["--http1.1", &mvp.url("/api"), "-H", "Host: bad host"],
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let status: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(status["reason"], "BadRequest");

    // A broken header line straight over TLS: hyper's 400, connection closed, no hang.
    let reply = raw_exchange(
        &pki,
        &mvp,
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        before,
        "nothing forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_idle_connections_and_lets_open_watches_finish() {
    let (pki, upstream, mvp) = setup().await;
    // An idle HTTP/1.1 keep-alive connection after one exchange.
    let mut idle = support::tls_connect(mvp.addr, support::client_tls(&pki, None, &[b"http/1.1"]))
        .await
        .unwrap();
    idle.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A watch in progress.
    let events = upstream.watch();
    let mut child = watch_curl(&pki, &mvp.url("/watch"), "--http2");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    events.send("{\"n\":1}\n".into()).await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "{\"n\":1}");

    mvp.door.begin_drain();

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(support::patience(), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle keep-alive connection closed on drain");
    events.send("{\"n\":2}\n".into()).await.unwrap();
    assert_eq!(
        lines.next_line().await.unwrap().unwrap(),
        "{\"n\":2}",
        "the open watch keeps streaming while draining"
    );
    drop(events);
    assert!(lines.next_line().await.unwrap().is_none());
    assert!(child.wait().await.unwrap().success(), "watch ended cleanly");
}

/// Send raw bytes over TLS (HTTP/1.1) and read until mvp closes the connection.
async fn raw_exchange(pki: &Pki, mvp: &Mvp, request: &[u8]) -> String {
    let mut tls = support::tls_connect(mvp.addr, support::client_tls(pki, None, &[b"http/1.1"]))
        .await
        .unwrap();
    // mvp may answer (and close) before it has read everything; a failed write is fine.
    let _ = tls.write_all(request).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(support::patience(), tls.read_to_end(&mut reply))
        .await
        .expect("mvp answers and closes the connection");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_to_the_upstream() {
    let (pki, _upstream, mvp) = setup().await;
    let file = pki.dir.path().join("body");
    std::fs::write(&file, vec![b'y'; 5 * 1024 * 1024]).unwrap();
    let data = format!("@{}", file.display());
    for proto in ["--http1.1", "--http2"] {
        let r = curl(
            &pki,
            Some(&pki.admin),
            &[
                proto,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &data,
                &mvp.url("/api/v1/namespaces/fx/configmaps"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.echoed("body-bytes"), ["5242880"], "{proto}");
    }
}
