//! Name-echo servers (tubular style): on accept, the server writes
//! `"<name> <peer address it sees>\n"` and closes (or, with [`EchoServer::start_echoing`],
//! then echoes bytes back until the peer closes: a long-lived connection). A dial therefore proves *which*
//! socket got the connection and *from where* it arrived (a relayed connection comes
//! from the relay's address, not the client's).
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::Netns;

/// A name-echo server on its own thread. Stopped on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    fd: i32,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Bind `addr` inside `ns` (the socket stays in that namespace) and serve `name`.
    /// IPv6 listeners are v6-only so IPv4 and IPv6 servers can share a port.
    pub fn start(ns: &Netns, addr: &str, name: &str) -> io::Result<EchoServer> {
        Self::start_mode(ns, addr, name, false)
    }

    /// Like [`EchoServer::start`], but after the name line every connection echoes
    /// what it receives until the peer closes (one thread per connection).
    pub fn start_echoing(ns: &Netns, addr: &str, name: &str) -> io::Result<EchoServer> {
        Self::start_mode(ns, addr, name, true)
    }

    fn start_mode(ns: &Netns, addr: &str, name: &str, echo: bool) -> io::Result<EchoServer> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let listener = ns.run(|| bind(addr))?;
        let addr = listener.local_addr()?;
        let fd = listener.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let name = name.to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let accepted = accepted.clone();
            move || {
                while let Ok((mut conn, peer)) = listener.accept() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.write_all(format!("{name} {peer}\n").as_bytes());
                    if echo {
                        std::thread::spawn(move || {
                            if let Ok(mut reader) = conn.try_clone() {
                                let _ = io::copy(&mut reader, &mut conn);
                            }
                        });
                    }
                }
            }
        });
        Ok(EchoServer {
            addr,
            fd,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(512)?)?;
    Ok(TcpListener::from(fd))
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept(): shutdown on a listening socket makes it fail.
        let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a dial learned: the server's name, the peer address the server saw, and the
/// client socket's own local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The answering server's name.
    pub name: String,
    /// The peer address as the server saw it.
    pub seen_peer: SocketAddr,
    /// The dialling socket's local address.
    pub local: SocketAddr,
}

impl Reply {
    /// True when the server saw the dialling socket itself (no relay in between).
    pub fn is_direct(&self) -> bool {
        self.seen_peer == self.local
    }
}

/// Dial `addr` from the current thread's namespace and read the name line.
pub fn dial(addr: SocketAddr, timeout: Duration) -> io::Result<Reply> {
    let (reply, conn) = dial_keep(addr, timeout)?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(reply)
}

/// Like [`dial`], but keep the connection open (for servers started with
/// [`EchoServer::start_echoing`]).
pub fn dial_keep(addr: SocketAddr, timeout: Duration) -> io::Result<(Reply, TcpStream)> {
    let conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let local = conn.local_addr()?;
    let mut line = String::new();
    // Byte by byte: nothing after the newline may be consumed from the stream.
    let mut byte = [0u8; 1];
    while (&conn).read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(char::from(byte[0]));
    }
    let mut parts = line.split_whitespace();
    let (Some(name), Some(peer)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("no name line from {addr} (got {line:?})"),
        ));
    };
    let seen_peer = peer.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad peer {peer:?}: {e}"),
        )
    })?;
    Ok((
        Reply {
            name: name.to_string(),
            seen_peer,
            local,
        },
        conn,
    ))
}

/// Dial `addr` from inside `ns`.
pub fn dial_in(ns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<Reply> {
    ns.run(|| dial(addr, timeout))
}
