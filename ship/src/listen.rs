//! A source's syslog listeners (docs/HSM-LOGS.md "Receiving syslog"): UDP (one message per
//! datagram) and TCP (RFC 6587 framing), each on threads of its own. A message that is one of
//! SoftHSM2's lines is appended to the source's spool; messages of other programs are counted
//! and dropped (they never touch the disk), and so are bytes that are not syslog.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::config::Source;
use crate::softhsm::is_softhsm_line;
use crate::spool::Spool;
use crate::syslog::{Framer, MAX_MESSAGE, to_line};

/// Most TCP connections a listener serves at once (a thread each); further ones are closed at
/// once, so a peer that opens connections without end cannot exhaust the agent's threads.
const MAX_CONNECTIONS: usize = 64;

/// How long a TCP connection may send nothing before it is closed.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// What a listener did with what it received, since the agent started.
#[derive(Debug, Default)]
pub struct Counts {
    /// SoftHSM2 lines appended to the spool.
    pub spooled: AtomicU64,
    /// Syslog messages of other programs, dropped.
    pub other: AtomicU64,
    /// Datagrams, frames or TCP streams that were not syslog, dropped.
    pub unreadable: AtomicU64,
    /// SoftHSM2 lines the spool could not take (a full disk), lost.
    pub lost: AtomicU64,
}

impl Counts {
    /// `(spooled, other, unreadable, lost)`.
    pub fn snapshot(&self) -> [u64; 4] {
        [&self.spooled, &self.other, &self.unreadable, &self.lost]
            .map(|c| c.load(Ordering::Relaxed))
    }
}

/// A source's running listeners: their spool and what they counted.
pub struct Listener {
    pub spool: Arc<Mutex<Spool>>,
    pub counts: Arc<Counts>,
    /// `udp 127.0.0.1:5514`, `tcp ...`: what is bound, for the agent's output.
    pub bound: Vec<String>,
}

/// Opens `source`'s spool and binds its sockets (an error if one cannot be bound), then
/// receives on threads that live as long as the process.
pub fn start(source: &Source, state_dir: &Path) -> anyhow::Result<Listener> {
    let mut spool = Spool::open(state_dir, &source.name)?;
    spool.set_max(source.spool_max_bytes());
    let spool = Arc::new(Mutex::new(spool));
    let counts = Arc::new(Counts::default());
    let mut bound = Vec::new();
    if let Some(addr) = source.listen_udp {
        let socket =
            UdpSocket::bind(addr).with_context(|| format!("cannot listen on udp {addr}"))?;
        bound.push(format!("udp {}", socket.local_addr()?));
        let (spool, counts) = (spool.clone(), counts.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_MESSAGE];
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => take(&buf[..n], &spool, &counts),
                    Err(e) => {
                        eprintln!("auditseal-ship: udp {addr}: {e}");
                        // Not a busy loop if the error persists.
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        });
    }
    if let Some(addr) = source.listen_tcp {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on tcp {addr}"))?;
        bound.push(format!("tcp {}", listener.local_addr()?));
        let (spool, counts) = (spool.clone(), counts.clone());
        let open = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS => {
                        eprintln!(
                            "auditseal-ship: tcp {addr}: {MAX_CONNECTIONS} connections open; \
                             closing the one from {}",
                            stream
                                .peer_addr()
                                .map(|a| a.to_string())
                                .unwrap_or_default()
                        );
                    }
                    Ok(stream) => {
                        let (spool, counts, open) = (spool.clone(), counts.clone(), open.clone());
                        open.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            connection(stream, &spool, &counts);
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait before accepting again.
                        eprintln!("auditseal-ship: tcp {addr}: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        });
    }
    Ok(Listener {
        spool,
        counts,
        bound,
    })
}

/// Reads one TCP connection until it closes; bytes that cannot be framed end it.
fn connection(mut stream: TcpStream, spool: &Mutex<Spool>, counts: &Counts) {
    // A sender that says nothing for this long is let go, so idle connections cannot hold the
    // listener's `MAX_CONNECTIONS` slots for ever (rsyslog connects again when it next sends).
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let peer = stream
        .peer_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_default();
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match framer.push(&buf[..n]) {
            Ok(messages) => messages.iter().for_each(|m| take(m, spool, counts)),
            Err(e) => {
                counts.unreadable.fetch_add(1, Ordering::Relaxed);
                eprintln!("auditseal-ship: tcp from {peer}: {e}; connection closed");
                return;
            }
        }
    }
    if framer.pending() > 0 {
        counts.unreadable.fetch_add(1, Ordering::Relaxed);
    }
}

/// One received message: spooled if it is SoftHSM2's, counted otherwise.
fn take(message: &[u8], spool: &Mutex<Spool>, counts: &Counts) {
    let line = match to_line(message) {
        Ok(line) => line,
        Err(_) => {
            counts.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if !is_softhsm_line(&line) {
        counts.other.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let written = match spool.lock() {
        Ok(mut s) => s.append(&line),
        Err(_) => return,
    };
    match written {
        Ok(()) => counts.spooled.fetch_add(1, Ordering::Relaxed),
        Err(refused) => {
            // Once per run of refusals; the count of lost lines says how many.
            if refused.first {
                eprintln!("auditseal-ship: ERROR {}", refused.reason);
            }
            counts.lost.fetch_add(1, Ordering::Relaxed)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn wait_for(counts: &Counts, want: [u64; 4]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while counts.snapshot() != want {
            assert!(
                Instant::now() < deadline,
                "{:?} != {want:?}",
                counts.snapshot()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn udp_and_tcp_messages_reach_the_spool_and_others_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let source: Source = toml::from_str(
            "name = 'net'\nformat = 'softhsm2-syslog'\nlisten_udp = '127.0.0.1:0'\nlisten_tcp = '127.0.0.1:0'\n",
        )
        .unwrap();
        let l = start(&source, dir.path()).unwrap();
        let addr = |kind: &str| -> SocketAddr {
            let b = l.bound.iter().find(|b| b.starts_with(kind)).unwrap();
            b[4..].parse().unwrap()
        };
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.send_to(
            b"<14>Dec  3 11:55:01 h pkcs11-tool: OSToken.cpp(64): Opened token",
            addr("udp"),
        )
        .unwrap();
        udp.send_to(b"<14>Dec  3 11:55:01 h sshd[7]: Accepted", addr("udp"))
            .unwrap();
        udp.send_to(b"garbage", addr("udp")).unwrap();
        wait_for(&l.counts, [1, 1, 1, 0]);

        let msg = "<14>1 2026-12-03T11:55:02Z h softhsm2 42 - - SoftHSM.cpp(9): C_Login failed";
        let mut tcp = TcpStream::connect(addr("tcp")).unwrap();
        write!(tcp, "{} {msg}", msg.len()).unwrap();
        tcp.write_all(
            b"<14>Dec  3 11:55:03 h pkcs11-tool: Slot.cpp(1): x\n<14>Dec  3 11:55:03 h cron: y\n",
        )
        .unwrap();
        tcp.write_all(b"<14>Dec  3 11:55:04 h pkcs11-tool: Slot.cpp(2): cut")
            .unwrap();
        drop(tcp);
        // The message cut by the close is dropped, counted as unreadable.
        wait_for(&l.counts, [3, 2, 2, 0]);
        let text = std::fs::read_to_string(crate::spool::path(dir.path(), "net")).unwrap();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "Dec  3 11:55:01 h pkcs11-tool: OSToken.cpp(64): Opened token",
                "2026-12-03T11:55:02Z h softhsm2[42]: SoftHSM.cpp(9): C_Login failed",
                "Dec  3 11:55:03 h pkcs11-tool: Slot.cpp(1): x",
            ]
        );
        assert!(!text.contains("sshd") && !text.contains("cron"));

        // A port taken is an error that names it.
        let taken: Source = toml::from_str(&format!(
            "name = 'n2'\nformat = 'softhsm2-syslog'\nlisten_tcp = '{}'\n",
            addr("tcp")
        ))
        .unwrap();
        let err = start(&taken, dir.path()).err().unwrap();
        assert!(
            format!("{err:#}").contains("cannot listen on tcp"),
            "{err:#}"
        );
    }

    #[test]
    fn at_most_max_connections_are_served_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let source: Source = toml::from_str(
            "name = 'cap'\nformat = 'softhsm2-syslog'\nlisten_tcp = '127.0.0.1:0'\n",
        )
        .unwrap();
        let l = start(&source, dir.path()).unwrap();
        let addr: SocketAddr = l.bound[0][4..].parse().unwrap();
        let line = b"<14>Dec  3 11:55:01 h pkcs11-tool: Slot.cpp(1): x\n";
        let mut open: Vec<TcpStream> = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(line).unwrap();
            open.push(c);
            // Each one served (its line spooled) before the next is opened.
            wait_for(&l.counts, [i as u64 + 1, 0, 0, 0]);
        }
        let mut refused = TcpStream::connect(addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        match refused.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the connection past the limit was not closed: {other:?}"),
        }
        // One closed: a new connection is served again.
        drop(open.pop());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = TcpStream::connect(addr).unwrap();
            let _ = c.write_all(line);
            drop(c);
            std::thread::sleep(Duration::from_millis(50));
            if l.counts.snapshot()[0] > MAX_CONNECTIONS as u64 {
                break;
            }
            assert!(Instant::now() < deadline, "{:?}", l.counts.snapshot());
        }
    }
}
