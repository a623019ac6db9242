//! RFC 5424 syslog messages sent over TCP or TLS with octet-counted framing (RFC 6587 section
//! 3.4.1; RFC 5425 for TLS). Not tied to checkpoints: a message is a severity, a MSGID,
//! structured data and a MSG (docs/FORMAT.md section 7.3 shows the checkpoint's).
//!
//! Each delivery opens a connection, writes the messages, closes its side and waits for the
//! receiver to close its own: a receiver closes only after it has read everything sent, so a
//! receiver that died or restarted meanwhile is noticed (the items stay queued). Plain syslog
//! has no acknowledgement beyond that: a receiver that read a message and then crashed before
//! storing it loses it.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SinkError;
use super::forwarder::{Transport, Undelivered};

/// Facility `authpriv` (security and authorization messages), as RFC 5424 numbers it.
pub const FACILITY_AUTHPRIV: u8 = 10;
/// Severity `warning`.
pub const SEVERITY_WARNING: u8 = 4;
/// Severity `notice`: normal but significant.
pub const SEVERITY_NOTICE: u8 = 5;

/// One SD-ELEMENT: `[id name="value" ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdElement {
    /// A registered SD-ID (`origin`, `meta`, ...) or `name@<private enterprise number>`.
    pub id: String,
    pub params: Vec<(String, String)>,
}

/// What a caller sends; the header's HOSTNAME, APP-NAME and PROCID come from the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub facility: u8,
    pub severity: u8,
    /// When the event happened, epoch milliseconds (the header's TIMESTAMP, in UTC).
    pub time_ms: i64,
    /// The header's MSGID (1 to 32 printable US-ASCII characters), or None for `-`.
    pub msgid: Option<String>,
    pub structured_data: Vec<SdElement>,
    /// The MSG, UTF-8, sent without a BOM.
    pub msg: String,
}

/// The `origin` SD-ELEMENT's parameters (RFC 5424 section 7.2): this software and its version.
const ORIGIN: [(&str, &str); 2] = [
    ("software", "auditseal"),
    ("swVersion", env!("CARGO_PKG_VERSION")),
];

/// The `origin` SD-ELEMENT naming this software and its version.
pub fn origin() -> SdElement {
    SdElement {
        id: "origin".into(),
        params: ORIGIN
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The `origin` SD-ELEMENT, borrowed.
pub fn origin_ref() -> SdRef<'static> {
    SdRef {
        id: "origin",
        params: &ORIGIN,
    }
}

/// One SD-ELEMENT as borrowed text.
pub struct SdRef<'a> {
    pub id: &'a str,
    pub params: &'a [(&'a str, &'a str)],
}

/// A message as borrowed text: what `Message` holds, for a caller that has the parts elsewhere.
pub struct MessageRef<'a> {
    pub facility: u8,
    pub severity: u8,
    pub time_ms: i64,
    pub msgid: Option<&'a str>,
    pub structured_data: &'a [SdRef<'a>],
    pub msg: &'a str,
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` when
/// empty. Other characters become `_`.
fn header_field(s: &str, max: usize) -> Cow<'_, str> {
    if s.is_empty() {
        return Cow::Borrowed("-");
    }
    if s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .take(max)
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect(),
    )
}

/// An SD-NAME: printable US-ASCII except `=`, space, `]` and `"`, at most 32 characters.
fn sd_name(s: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"');
    if s.is_empty() {
        return Cow::Borrowed("_");
    }
    if s.len() <= 32 && s.chars().all(ok) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .take(32)
            .map(|c| if ok(c) { c } else { '_' })
            .collect(),
    )
}

/// A PARAM-VALUE: UTF-8 with `"`, `\` and `]` escaped by a backslash. (The search for them is
/// memchr's vectorized one: a forwarded event's rowProtection is hundreds of characters, and a
/// loop over its bytes was most of the time spent writing its message.)
fn sd_value(s: &str) -> Cow<'_, str> {
    if memchr::memchr3(b'"', b'\\', b']', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// The header fields the sender adds to every message.
#[derive(Debug, Clone)]
pub struct Header {
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

impl Header {
    /// This host's name, the given APP-NAME and this process's id.
    pub fn this_process(app_name: &str) -> Header {
        Header {
            hostname: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            app_name: app_name.to_string(),
            procid: std::process::id().to_string(),
        }
    }
}

/// Whether `s` can be an APP-NAME as it is (1 to 48 printable US-ASCII characters).
pub fn valid_app_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_graphic())
}

/// The message as RFC 5424 writes it:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`.
pub fn format(h: &Header, m: &Message) -> String {
    let params: Vec<Vec<(&str, &str)>> = m
        .structured_data
        .iter()
        .map(|e| {
            e.params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let sd: Vec<SdRef<'_>> = m
        .structured_data
        .iter()
        .zip(&params)
        .map(|(e, params)| SdRef { id: &e.id, params })
        .collect();
    let mut line = String::with_capacity(128 + m.msg.len());
    write_line(
        &mut line,
        h,
        &MessageRef {
            facility: m.facility,
            severity: m.severity,
            time_ms: m.time_ms,
            msgid: m.msgid.as_deref(),
            structured_data: &sd,
            msg: &m.msg,
        },
    );
    line
}

/// Appends the message as `format` writes it to `line`.
pub fn write_line(line: &mut String, h: &Header, m: &MessageRef<'_>) {
    let pri = u16::from(m.facility.min(23)) * 8 + u16::from(m.severity.min(7));
    line.push('<');
    line.push_str(&pri.to_string());
    line.push_str(">1 ");
    line.push_str(&crate::format::time::format_iso8601(m.time_ms));
    for (field, max) in [
        (h.hostname.as_str(), 255),
        (h.app_name.as_str(), 48),
        (h.procid.as_str(), 128),
        (m.msgid.unwrap_or(""), 32),
    ] {
        line.push(' ');
        line.push_str(&header_field(field, max));
    }
    line.push(' ');
    if m.structured_data.is_empty() {
        line.push('-');
    }
    for e in m.structured_data {
        line.push('[');
        line.push_str(&sd_name(e.id));
        for (k, v) in e.params {
            line.push(' ');
            line.push_str(&sd_name(k));
            line.push_str("=\"");
            line.push_str(&sd_value(v));
            line.push('"');
        }
        line.push(']');
    }
    if !m.msg.is_empty() {
        line.push(' ');
        line.push_str(m.msg);
    }
}

/// Appends `line` to `out` with octet-counted framing: `MSG-LEN SP SYSLOG-MSG`, the length in
/// bytes.
pub fn frame_into(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(line.as_bytes());
}

/// TLS settings of a syslog receiver (RFC 5425).
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// CA certificates (PEM) the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// This sender's certificate chain and key (PEM), for receivers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the receiver's certificate must carry [default: the address's host].
    pub server_name: Option<String>,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    pub tls: Option<TlsTarget>,
    pub header: Header,
}

/// How long connecting, the TLS handshake, writing, and the receiver's close may each take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends syslog messages to one receiver.
pub struct SyslogSender {
    target: Target,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl SyslogSender {
    /// Reads the TLS files now, so that a bad setting stops the start.
    pub fn new(target: Target) -> Result<SyslogSender, SinkError> {
        let tls = match &target.tls {
            None => None,
            Some(t) => Some(tls_connector(&target.address, t)?),
        };
        Ok(SyslogSender { target, tls })
    }

    /// The header this sender's messages carry.
    pub fn header(&self) -> &Header {
        &self.target.header
    }

    /// Sends bytes already framed (`frame_into`) over one connection; the error says which
    /// step failed.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), String> {
        let tcp = step("connecting", TcpStream::connect(&self.target.address)).await?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => write_and_close(tcp, bytes).await,
            Some((connector, name)) => {
                let tls = step("the TLS handshake", connector.connect(name.clone(), tcp)).await?;
                write_and_close(tls, bytes).await
            }
        }
    }
}

async fn step<T>(what: &str, f: impl Future<Output = std::io::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {}s", STEP_TIMEOUT.as_secs())),
    }
}

/// Writes, closes this side (TLS close_notify, then FIN) and waits until the receiver closes
/// its own: it has then read all of it.
async fn write_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    bytes: &[u8],
) -> Result<(), String> {
    step("writing", async {
        s.write_all(bytes).await?;
        s.flush().await?;
        s.shutdown().await
    })
    .await?;
    step("waiting for the receiver to close", async {
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // A TLS receiver may close the TCP connection without its own close_notify.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
}

#[async_trait::async_trait]
impl Transport for SyslogSender {
    type Item = Message;

    fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
        format!("syslog {scheme}://{}", self.target.address)
    }

    async fn deliver(&self, items: &[Message]) -> Result<(), Undelivered> {
        let mut bytes = Vec::new();
        for m in items {
            frame_into(&mut bytes, &format(&self.target.header, m));
        }
        self.send(&bytes).await.map_err(Undelivered::none)
    }
}

/// Sends each message as one UDP datagram (RFC 5426), without framing. UDP has no delivery
/// report at all: a message a receiver did not get is lost without a trace, so this is for
/// receivers that take nothing else; a message longer than `UDP_MAX` bytes is cut there (at a
/// character boundary), which leaves its header and structured data whole.
pub struct UdpSender {
    address: String,
    header: Header,
    socket: tokio::sync::OnceCell<tokio::net::UdpSocket>,
}

/// The most a UDP datagram over IPv4 can carry.
pub const UDP_MAX: usize = 65_507;

impl UdpSender {
    pub fn new(address: &str, header: Header) -> Result<UdpSender, SinkError> {
        if host_of(address).is_none() {
            return Err(SinkError::Config(format!(
                "address {address:?} is not host:port"
            )));
        }
        Ok(UdpSender {
            address: address.to_string(),
            header,
            socket: tokio::sync::OnceCell::new(),
        })
    }

    /// The header this sender's messages carry.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Sends each line (`format`'s text) as one datagram, cut at `UDP_MAX` bytes.
    pub async fn send_lines(&self, lines: &[String]) -> Result<(), Undelivered> {
        let socket = self
            .socket()
            .await
            .map_err(|e| Undelivered::none(format!("opening the UDP socket: {e}")))?;
        for (i, line) in lines.iter().enumerate() {
            let mut end = line.len().min(UDP_MAX);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            if let Err(e) = socket.send(&line.as_bytes()[..end]).await {
                return Err(Undelivered {
                    delivered: i,
                    reason: format!("sending: {e}"),
                });
            }
        }
        Ok(())
    }

    async fn socket(&self) -> std::io::Result<&tokio::net::UdpSocket> {
        self.socket
            .get_or_try_init(|| async {
                let s = tokio::net::UdpSocket::bind(if self.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await?;
                s.connect(&self.address).await?;
                Ok(s)
            })
            .await
    }
}

#[async_trait::async_trait]
impl Transport for UdpSender {
    type Item = Message;

    fn describe(&self) -> String {
        format!("syslog udp://{}", self.address)
    }

    async fn deliver(&self, items: &[Message]) -> Result<(), Undelivered> {
        let lines: Vec<String> = items.iter().map(|m| format(&self.header, m)).collect();
        self.send_lines(&lines).await
    }
}

fn tls_connector(
    address: &str,
    t: &TlsTarget,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    SinkError,
> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let bad = |path: &std::path::Path, reason: String| {
        SinkError::Config(format!("{}: {reason}", path.display()))
    };
    let read_certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, SinkError> {
        let pem = std::fs::read(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(path, format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad(path, "no CERTIFICATE in it".into()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&t.ca_file)? {
        roots
            .add(c)
            .map_err(|e| bad(&t.ca_file, format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match &t.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let pem = std::fs::read(key).map_err(|e| bad(key, format!("cannot read it: {e}")))?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| bad(key, format!("no usable private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| bad(cert, format!("does not go with its key: {e}")))?
        }
    };
    let host = match &t.server_name {
        Some(n) => n.clone(),
        None => host_of(address)
            .ok_or_else(|| SinkError::Config(format!("address {address:?} is not host:port")))?,
    };
    let name = ServerName::try_from(host.clone())
        .map_err(|e| SinkError::Config(format!("server name {host:?}: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// The host of `host:port` or `[v6]:port`.
pub fn host_of(address: &str) -> Option<String> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            hostname: "host1".into(),
            app_name: "auditseal".into(),
            procid: "42".into(),
        }
    }

    #[test]
    fn each_of_the_three_param_value_specials_alone_is_escaped() {
        for (value, escaped) in [
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a]b", "a\\]b"),
            ("1:2:7:ab", "1:2:7:ab"),
        ] {
            assert_eq!(sd_value(value), escaped, "{value}");
        }
    }

    #[test]
    fn formats_rfc5424_with_escaped_structured_data_and_frames_by_byte_count() {
        let m = Message {
            facility: FACILITY_AUTHPRIV,
            severity: SEVERITY_NOTICE,
            time_ms: 1_700_000_000_123,
            msgid: Some("checkpoint".into()),
            structured_data: vec![
                origin(),
                SdElement {
                    id: "x@32473".into(),
                    params: vec![("v".into(), "a\"b\\c]d é".into())],
                },
            ],
            msg: "héllo {\"a\":1}".into(),
        };
        let line = format(&header(), &m);
        assert_eq!(
            line,
            format!(
                "<85>1 2023-11-14T22:13:20.123Z host1 auditseal 42 checkpoint \
                 [origin software=\"auditseal\" swVersion=\"{}\"][x@32473 v=\"a\\\"b\\\\c\\]d é\"] \
                 héllo {{\"a\":1}}",
                env!("CARGO_PKG_VERSION")
            )
        );
        let mut framed = b"3 abc".to_vec();
        frame_into(&mut framed, &line);
        let framed = framed.split_off(5);
        let (len, rest) = std::str::from_utf8(&framed)
            .unwrap()
            .split_once(' ')
            .unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert!(
            rest.len() > rest.chars().count(),
            "counts bytes, not characters"
        );
    }

    #[test]
    fn header_fields_are_printable_ascii_and_nil_when_empty() {
        let h = Header {
            hostname: "my host".into(),
            app_name: "".into(),
            procid: "1".into(),
        };
        let m = Message {
            facility: 1,
            severity: 6,
            time_ms: 0,
            msgid: None,
            structured_data: vec![],
            msg: String::new(),
        };
        assert_eq!(
            format(&h, &m),
            "<14>1 1970-01-01T00:00:00.000Z my_host - 1 - -"
        );
        assert!(valid_app_name("auditseal") && !valid_app_name("a b") && !valid_app_name(""));
        assert_eq!(host_of("[::1]:6514").as_deref(), Some("::1"));
        assert_eq!(host_of("logs.example:514").as_deref(), Some("logs.example"));
        assert_eq!(host_of("logs.example"), None);
    }

    #[tokio::test]
    async fn udp_sends_one_datagram_per_message_and_cuts_one_too_long_at_a_character() {
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = receiver.local_addr().unwrap().to_string();
        let sender = UdpSender::new(&address, header()).unwrap();
        let message = |msg: String| Message {
            facility: FACILITY_AUTHPRIV,
            severity: SEVERITY_WARNING,
            time_ms: 0,
            msgid: Some("PROCESS".into()),
            structured_data: vec![],
            msg,
        };
        let long = "é".repeat(UDP_MAX);
        let items = [message("one".into()), message(long)];
        sender.deliver(&items).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        let n = receiver.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], format(&header(), &items[0]).as_bytes());
        let n = receiver.recv(&mut buf).await.unwrap();
        assert!(n <= UDP_MAX && n > UDP_MAX - 2, "{n}");
        let text = std::str::from_utf8(&buf[..n]).expect("cut at a character boundary");
        assert!(text.starts_with("<84>1 1970-01-01T00:00:00.000Z host1 auditseal 42 PROCESS - é"));
        assert_eq!(sender.describe(), format!("syslog udp://{address}"));
        assert!(UdpSender::new("nohost", header()).is_err());
    }
}
