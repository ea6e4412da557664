//! Front-door overhead, measured with h2load: the same HTTPS echo upstream (the test
//! suite's) hit directly and through an in-process mvp front door (anonymous caller, so
//! both paths carry the same request; h2load cannot present client certificates).
//!
//! `cargo run --release -p mvp-userspace --example frontdoor_bench [-- <h2load args>]`
//! (default: `-n 20000 -c 10 -m 10`, path `/version`). Numbers, not assertions.
#[path = "../tests/support/mod.rs"]
mod support;

use support::pki::Pki;
use support::upstream::Upstream;
use support::{Mvp, config};

fn h2load(label: &str, url: &str, args: &[String]) {
    let out = std::process::Command::new("h2load")
        .args(args)
        .arg(url)
        .output()
        .expect("h2load is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("== {label}: h2load {} {url}", args.join(" "));
    for line in text.lines().filter(|l| {
        l.starts_with("finished in")
            || l.starts_with("requests:")
            || l.starts_with("status codes:")
            || l.starts_with("time for request:")
            || l.starts_with("time to 1st byte:")
    }) {
        println!("   {line}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        args = ["-n", "20000", "-c", "10", "-m", "10"]
            .map(String::from)
            .to_vec();
    }
    let pki = Pki::new();
    let upstream = Upstream::start(&pki).await;
    let mvp = Mvp::start(&config(&pki, upstream.addr)).await;
    let direct = format!("https://127.0.0.1:{}/version", upstream.addr.port());
    let through = mvp.url("/version");
    tokio::task::spawn_blocking(move || {
        // Warm up both paths, then measure each.
        h2load(
            "warm-up direct",
            &direct,
            &["-n".into(), "2000".into(), "-c".into(), "4".into()],
        );
        h2load(
            "warm-up mvp",
            &through,
            &["-n".into(), "2000".into(), "-c".into(), "4".into()],
        );
        h2load("direct to upstream", &direct, &args);
        h2load("through mvp", &through, &args);
    })
    .await
    .unwrap();
}
