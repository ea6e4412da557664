//! `cargo xtask bench`: mvp as a plain TLS front door next to the anchor proxies.
//!
//! `shared/bench/anchors.sh` measures, in one run, an nginx TLS+h2 upstream reached directly,
//! through HAProxy and through nginx as a reverse proxy; with `MVP_PROXY_PORT` it adds a row
//! for a proxy already listening there. This task builds mvp in release, starts it with
//! `--no-steer` (no eBPF: a listener on loopback) in front of the anchors' upstream
//! (127.0.0.1:19443, the anchors' own certs), runs the script once and prints the rows side
//! by side, then mvp's memory after the run.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::repo_root;

/// Where mvp listens (the anchors use 19443-19445).
const MVP_PORT: u16 = 19446;
/// mvp's admin endpoint (readiness).
const MVP_ADMIN: &str = "127.0.0.1:19447";
/// The anchors' upstream (nginx, TLS + h2).
const UPSTREAM: &str = "https://127.0.0.1:19443";

/// `$MVP_ANCHORS`, else `shared/bench/anchors.sh` next to the checkout or one of its
/// parents (`../shared` from the main checkout, `../../shared` from a worktree).
fn anchors_script() -> PathBuf {
    if let Some(p) = std::env::var_os("MVP_ANCHORS") {
        return PathBuf::from(p);
    }
    let root = repo_root();
    root.ancestors()
        .skip(1)
        .map(|d| d.join("shared/bench/anchors.sh"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| root.join("../shared/bench/anchors.sh"))
}

/// The anchors' work dir (their certs live there): `$W`, default `/tmp/anchors`.
fn work_dir() -> PathBuf {
    std::env::var_os("W")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/anchors"))
}

/// mvp, killed when dropped.
struct Mvp(Child);

impl Drop for Mvp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: mvp\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn start_mvp(bin: &Path, w: &Path, log: &Path) -> Result<Mvp> {
    let f = |name: &str| w.join(name).display().to_string();
    let log_file =
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let child = Command::new(bin)
        .args(["run", "--no-steer", "--listen"])
        .arg(format!("127.0.0.1:{MVP_PORT}"))
        .args(["--admin-address", MVP_ADMIN])
        .arg(format!("--tls-cert-file={}", f("srv.crt")))
        .arg(format!("--tls-private-key-file={}", f("srv.key")))
        .arg(format!("--upstream={UPSTREAM}"))
        .arg(format!("--upstream-ca-file={}", f("ca.crt")))
        .arg("--upstream-server-name=localhost")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut mvp = Mvp(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = mvp.0.try_wait()? {
            bail!(
                "mvp exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        match http_get(MVP_ADMIN, "/readyz") {
            Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") => {
                return Ok(mvp);
            }
            _ if Instant::now() > deadline => bail!("mvp not ready on {MVP_ADMIN} within 20 s"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One anchors.sh row: `name req/s=X 2xx=Y mean_latency=Z`.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    rps: f64,
    ok: String,
    latency: String,
}

fn parse_row(line: &str) -> Option<Row> {
    let mut words = line.split_whitespace();
    let name = words.next()?.to_string();
    let mut rps = None;
    let mut ok = String::new();
    let mut latency = String::new();
    for w in words {
        if let Some(v) = w.strip_prefix("req/s=") {
            rps = v.parse().ok();
        } else if let Some(v) = w.strip_prefix("2xx=") {
            ok = v.to_string();
        } else if let Some(v) = w.strip_prefix("mean_latency=") {
            latency = v.to_string();
        }
    }
    Some(Row {
        name,
        rps: rps?,
        ok,
        latency,
    })
}

/// The side-by-side table: one line per proxy, one column per round, and the ratio of the
/// best round to the best direct round.
fn table(rows: &[Row]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let best = |name: &str| {
        rows.iter()
            .filter(|r| r.name == name)
            .map(|r| r.rps)
            .fold(0.0, f64::max)
    };
    let direct = best("direct");
    let mut out = format!(
        "{:<12} {:>24} {:>10}   {}\n",
        "", "req/s per round", "vs direct", "2xx / mean latency per round"
    );
    for name in names {
        let own: Vec<&Row> = rows.iter().filter(|r| r.name == name).collect();
        let rounds: Vec<String> = own.iter().map(|r| format!("{:.0}", r.rps)).collect();
        let detail: Vec<String> = own
            .iter()
            .map(|r| format!("{} / {}", r.ok, r.latency))
            .collect();
        let ratio = if direct > 0.0 {
            format!("{:.0}%", 100.0 * best(name) / direct)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "{name:<12} {:>24} {ratio:>10}   {}\n",
            rounds.join("  "),
            detail.join(", ")
        ));
    }
    out
}

pub fn bench() -> Result<()> {
    let script = anchors_script();
    if !script.is_file() {
        bail!(
            "{} not found (set MVP_ANCHORS to the anchors script)",
            script.display()
        );
    }
    for tool in ["nginx", "haproxy", "h2load", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("{tool} is not installed; the anchors need nginx, haproxy, h2load and openssl");
        }
    }
    let mut build = crate::run::cargo();
    build.args(["build", "--release", "-p", "mvp-userspace", "--bin", "mvp"]);
    crate::run::run("building mvp (release)", build)?;
    let bin = repo_root().join("target/release/mvp");

    let w = work_dir();
    if !w.join("srv.crt").is_file() {
        // anchors.sh makes its certs on first use: a short run makes them for mvp too.
        eprintln!(
            "xtask: first run: a short anchors run makes the certs in {}",
            w.display()
        );
        let out = Command::new("bash")
            .arg(&script)
            .env("W", &w)
            .env("N", "64")
            .env("C", "1")
            .env("M", "1")
            .env_remove("MVP_PROXY_PORT")
            .output()
            .context("run anchors.sh")?;
        if !out.status.success() || !w.join("srv.crt").is_file() {
            bail!(
                "anchors.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let log = std::env::temp_dir().join("mvp-bench.log");
    let mvp = start_mvp(&bin, &w, &log)?;
    let pid = mvp.0.id();
    let rss_start = vm_kib(pid, "VmRSS:");
    eprintln!(
        "xtask: mvp (release, --no-steer) on 127.0.0.1:{MVP_PORT} → {UPSTREAM}; running {}",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .env("W", &w)
        .env("MVP_PROXY_PORT", MVP_PORT.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("run anchors.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        bail!("anchors.sh failed ({})", out.status);
    }
    let rss_end = vm_kib(pid, "VmRSS:");
    let hwm = vm_kib(pid, "VmHWM:");
    let rows: Vec<Row> = stdout.lines().filter_map(parse_row).collect();
    if !rows.iter().any(|r| r.name == "mvp") {
        bail!(
            "no mvp row in the anchors output; mvp log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    println!(
        "\nside by side (one run; h2load N={} C={} M={}):",
        std::env::var("N").unwrap_or_else(|_| "60000".into()),
        std::env::var("C").unwrap_or_else(|_| "16".into()),
        std::env::var("M").unwrap_or_else(|_| "8".into()),
    );
    print!("{}", table(&rows));
    let kib = |v: Option<u64>| v.map_or("?".to_string(), |v| format!("{v} KiB"));
    println!(
        "mvp memory: VmRSS {} at start, {} after the run; peak (VmHWM) {}",
        kib(rss_start),
        kib(rss_end),
        kib(hwm)
    );
    drop(mvp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_and_tabulate() {
        let out = "direct         req/s=1000.5 2xx=60000 mean_latency=1.2ms\n\
                   mvp            req/s=500 2xx=60000 mean_latency=2.5ms\n\
                   garbage\n\
                   direct         req/s=1100 2xx=60000 mean_latency=1.1ms\n";
        let rows: Vec<Row> = out.lines().filter_map(parse_row).collect();
        assert_eq!(rows.len(), 3);
        let t = table(&rows);
        assert!(t.contains("direct"), "{t}");
        assert!(t.contains("1000  1100"), "{t}");
        assert!(t.contains("45%"), "mvp 500 vs best direct 1100: {t}");
    }
}
