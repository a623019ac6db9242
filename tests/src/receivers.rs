//! Receivers of the server's checkpoints for the tests: a real rsyslogd (Debian's rsyslog, with
//! rsyslog-gnutls for TLS) that the test starts on a free port with imtcp and stops and starts
//! again, a test CA made with openssl, and a tiny HTTP witness that records what it is POSTed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port nothing listens on now (bound, then released), below Linux's ephemeral range
/// (32768-60999): a receiver that a test stops and starts again must get its port back, and a
/// port from that range can be handed meanwhile to any outgoing connection or `bind(:0)` of the
/// test run (the server's own connections to the receiver, a server of another test).
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread over 20000-32767 by process id, so concurrent test binaries rarely meet.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..1000 {
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = 20_000 + (n % 12_768) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32767")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates signed by it (EC P-256, PEM), made with the openssl command.
pub struct TestCa {
    pub dir: PathBuf,
    pub ca: PathBuf,
}

impl TestCa {
    /// A CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let ca = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&ca));
        TestCa {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    /// A certificate for 127.0.0.1 and localhost, usable by a server and a client: (cert, key).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let stem = self
            .ca
            .to_string_lossy()
            .trim_end_matches("-ca.pem")
            .to_string();
        let (cert, key, csr, ext) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write ext");
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca)
            .arg("-CAkey")
            .arg(format!("{stem}-ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }
}

/// TLS settings of an rsyslog receiver: its CA, its certificate and key; it asks every client
/// for a certificate from that CA (`x509/certvalid`).
pub struct RsyslogTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An rsyslogd the test owns: `rsyslogd -n -f CONF -i PIDFILE`, imtcp on `port` (octet-counted
/// and LF framing alike), every message written to `out` with the RFC 5424 template
/// (RSYSLOG_SyslogProtocol23Format) and to `out_traditional` with a classic
/// `TIMESTAMP HOST TAG: MSG` one. Stopped (SIGTERM) when dropped.
pub struct Rsyslog {
    pub port: u16,
    pub out: PathBuf,
    pub out_traditional: PathBuf,
    dir: PathBuf,
    /// Started with a configuration of the test's own whose input is this Unix socket
    /// (imuxsock), not imtcp on `port`: ready once the socket exists.
    socket: Option<PathBuf>,
    child: Option<Child>,
    /// Started in a session of its own (`start_apart`).
    own_session: bool,
}

/// Where Debian installs it.
const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

impl Rsyslog {
    /// Writes the configuration into `dir` and starts rsyslogd on `port`.
    pub fn start(dir: &Path, port: u16, tls: Option<&RsyslogTls>) -> Rsyslog {
        Self::start_in(dir, port, tls, false)
    }

    /// `start` (without TLS), rsyslogd in a session of its own: where the kernel groups
    /// processes by session for scheduling (autogroup), its CPU is then shared out apart from the
    /// test's and the server's, as a receiver on a machine of its own would be (scripts/bench
    /// lowers that group's share). Signals to the test's process group (Ctrl-C) do not reach it:
    /// it stops when dropped.
    pub fn start_apart(dir: &Path, port: u16) -> Rsyslog {
        Self::start_in(dir, port, None, true)
    }

    fn start_in(dir: &Path, port: u16, tls: Option<&RsyslogTls>, own_session: bool) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is missing: apt-get install rsyslog rsyslog-gnutls (scripts/test does)"
        );
        std::fs::create_dir_all(dir).expect("rsyslog dir");
        let out = dir.join("received.log");
        let out_traditional = dir.join("received-traditional.log");
        let (global_tls, module) = match tls {
            None => (String::new(), "module(load=\"imtcp\")".to_string()),
            Some(t) => (
                format!(
                    " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" \
                     DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" \
                 StreamDriver.AuthMode=\"x509/certvalid\")"
                    .to_string(),
            ),
        };
        let conf = format!(
            "global(workDirectory=\"{dir}\"{global_tls})\n\
             {module}\n\
             template(name=\"traditional\" type=\"string\" \
             string=\"%TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME%[%PROCID%]: %msg%\\n\")\n\
             ruleset(name=\"received\") {{\n\
             \x20 action(type=\"omfile\" file=\"{out}\" template=\"RSYSLOG_SyslogProtocol23Format\")\n\
             \x20 action(type=\"omfile\" file=\"{trad}\" template=\"traditional\")\n\
             }}\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"received\")\n",
            dir = dir.display(),
            out = out.display(),
            trad = out_traditional.display(),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("write rsyslog.conf");
        let mut r = Rsyslog {
            port,
            out,
            out_traditional,
            dir: dir.to_path_buf(),
            socket: None,
            child: None,
            own_session,
        };
        r.restart();
        r
    }

    /// Starts rsyslogd with `conf` (written into `dir`), whose input is an imuxsock on
    /// `socket`: the test sends to it as syslog(3) sends to /dev/log.
    pub fn start_with_socket(dir: &Path, conf: &str, socket: &Path) -> Rsyslog {
        std::fs::create_dir_all(dir).expect("rsyslog dir");
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("write rsyslog.conf");
        let mut r = Rsyslog {
            port: 0,
            out: dir.join("received.log"),
            out_traditional: dir.join("received-traditional.log"),
            dir: dir.to_path_buf(),
            socket: Some(socket.to_path_buf()),
            child: None,
            own_session: false,
        };
        r.restart();
        r
    }

    /// Whether rsyslogd's input is there: its Unix socket, or its port answers.
    fn ready(&self) -> bool {
        match &self.socket {
            Some(s) => s.exists(),
            None => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        }
    }

    /// Starts rsyslogd (again) on the same port and files, and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.join("rsyslogd.stderr")).expect("log file");
        let mut command = Command::new(RSYSLOGD);
        if self.own_session {
            // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let child = command
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ready() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "rsyslogd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen on {:?}",
                self.socket
                    .as_ref()
                    .map_or(self.port.to_string(), |s| s.display().to_string())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Something else may have answered on the port: rsyslogd must still run.
        std::thread::sleep(Duration::from_millis(100));
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "rsyslogd exited ({status}) after its port answered: {}",
                std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
            );
        }
    }

    /// Stops rsyslogd (SIGTERM: it writes what it has, then exits) and waits for it.
    /// The running rsyslogd's process id (`-n`: it does not fork, so it is the child's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What rsyslogd said on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `path` has a line for which `done` holds; returns the file's text.
pub fn wait_for_line(path: &Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(&done) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never got {what}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One POST a witness received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub body: String,
}

/// A tiny HTTP/1.1 witness on a fixed port: records each POST and answers 200, or 503 while
/// told to fail. `stop` closes its listener (connections are refused) and `start` opens it
/// again on the same port.
pub struct Witness {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Requests answered 503.
    pub refused: Arc<Mutex<usize>>,
    pub failing: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Witness {
    /// Not listening yet.
    pub fn new(port: u16) -> Witness {
        Witness {
            port,
            received: Arc::default(),
            refused: Arc::default(),
            failing: Arc::default(),
            running: Arc::default(),
            thread: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/witness/checkpoints", self.port)
    }

    pub fn start(&mut self) {
        self.stop();
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("witness bind");
        listener.set_nonblocking(true).expect("nonblocking");
        self.running.store(true, Ordering::SeqCst);
        let (running, received, refused, failing) = (
            self.running.clone(),
            self.received.clone(),
            self.refused.clone(),
            self.failing.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = serve(s, &received, &refused, &failing);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    pub fn stop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The bodies received so far, in order.
    pub fn bodies(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request (headers, then Content-Length bytes) and answers it; one per connection.
fn serve(
    mut s: TcpStream,
    received: &Mutex<Vec<Received>>,
    refused: &Mutex<usize>,
    failing: &AtomicBool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = if failing.load(Ordering::SeqCst) {
        *refused.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        "503 Service Unavailable"
    } else {
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_default()
            .to_string();
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Received {
                path,
                content_type: header("content-type"),
                body: String::from_utf8_lossy(&buf[head_end..]).to_string(),
            });
        "200 OK"
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    s.flush()
}
