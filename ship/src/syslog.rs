//! Syslog messages as they arrive on the network (docs/HSM-LOGS.md "Receiving syslog"): RFC 5424
//! and the BSD form of RFC 3164 (what rsyslog forwards by default), and on TCP the two framings
//! of RFC 6587, octet counting (`LEN SP MSG`) and a line end after each message. No I/O here:
//! the listener feeds bytes in and gets lines out, in the form a syslog file has
//! (`TIME HOST TAG: MSG`), which the SoftHSM2 parser reads.

/// The longest message taken (RFC 5425 asks receivers for 8192 octets at least); a longer
/// octet count, or a longer line, ends the connection.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why received bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    #[error("not a syslog message (no <PRI>)")]
    NoPri,
    #[error("an RFC 5424 header without its fields")]
    ShortHeader,
    #[error("structured data that does not end")]
    Unterminated,
    #[error("an octet count that is not a number followed by a space")]
    BadCount,
    #[error("the octet count {0} is more than {MAX_MESSAGE}")]
    TooLong(usize),
    #[error("a message without its line end is longer than {MAX_MESSAGE} bytes")]
    LineTooLong,
}

/// One message as a syslog file line: RFC 3164 is written as it came without its `<PRI>`; RFC
/// 5424 as `TIMESTAMP HOSTNAME APP-NAME[PROCID]: MSG` (no `[PROCID]` when it is `-`). Line ends
/// inside the message become spaces, so one message is one line.
pub fn to_line(message: &[u8]) -> Result<String, SyslogError> {
    let text = String::from_utf8_lossy(message);
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let rest = text.strip_prefix('<').ok_or(SyslogError::NoPri)?;
    let close = rest.find('>').filter(|&i| (1..=3).contains(&i));
    let Some(close) = close.filter(|&i| rest[..i].bytes().all(|b| b.is_ascii_digit())) else {
        return Err(SyslogError::NoPri);
    };
    let rest = &rest[close + 1..];
    let line = match rest.strip_prefix("1 ") {
        Some(v1) => rfc5424(v1)?,
        None => rest.to_string(),
    };
    Ok(line.replace(['\n', '\r'], " "))
}

/// `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]` after the version.
fn rfc5424(text: &str) -> Result<String, SyslogError> {
    let mut fields = text.splitn(5, ' ');
    let mut next = || fields.next().ok_or(SyslogError::ShortHeader);
    let (time, host, app, procid) = (next()?, next()?, next()?, next()?);
    let rest = next()?;
    let (_msgid, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let msg = skip_structured_data(rest)?;
    let msg = msg.trim_start();
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg).trim_start();
    let tag = if procid == "-" {
        app.to_string()
    } else {
        format!("{app}[{procid}]")
    };
    Ok(format!("{time} {host} {tag}: {msg}"))
}

/// What follows the structured data: `-`, or `[id k="v" ...]` elements, in whose values `\"`,
/// `\\` and `\]` are escapes.
fn skip_structured_data(text: &str) -> Result<&str, SyslogError> {
    if let Some(rest) = text.strip_prefix('-') {
        return Ok(rest);
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while bytes.get(i) == Some(&b'[') {
        let mut quoted = false;
        loop {
            i += 1;
            match bytes.get(i) {
                None => return Err(SyslogError::Unterminated),
                Some(b'\\') if quoted => i += 1,
                Some(b'"') => quoted = !quoted,
                Some(b']') if !quoted => break,
                _ => {}
            }
        }
        i += 1;
    }
    if i == 0 {
        return Err(SyslogError::ShortHeader);
    }
    Ok(&text[i..])
}

/// The messages of one TCP connection, as its bytes arrive: each message is octet-counted when
/// it starts with a digit (RFC 6587 3.4.1) and ends at a line end otherwise (3.4.2), so a
/// sender may use either.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Adds `data` and returns the messages it completes. An error ends the connection.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, SyslogError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let Some(&first) = rest.first() else { break };
            if first.is_ascii_digit() {
                let Some(sp) = rest.iter().position(|&b| b == b' ') else {
                    if rest.len() > 6 {
                        return Err(SyslogError::BadCount);
                    }
                    break;
                };
                let digits = std::str::from_utf8(&rest[..sp]).unwrap_or("x");
                let len: usize = digits.parse().map_err(|_| SyslogError::BadCount)?;
                if len > MAX_MESSAGE {
                    return Err(SyslogError::TooLong(len));
                }
                if rest.len() < sp + 1 + len {
                    break;
                }
                out.push(rest[sp + 1..sp + 1 + len].to_vec());
                start += sp + 1 + len;
            } else if first == b'\n' || first == b'\r' || first == 0 {
                // Stray line ends between messages.
                start += 1;
            } else {
                let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                    if rest.len() > MAX_MESSAGE {
                        return Err(SyslogError::LineTooLong);
                    }
                    break;
                };
                out.push(rest[..end].to_vec());
                start += end + 1;
            }
        }
        self.buf.drain(..start);
        Ok(out)
    }

    /// Bytes of a message not yet complete (dropped when the connection closes: a sender that
    /// closes within a message did not send it).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message as it arrives, and the line it becomes.
    fn assert_lines(cases: &[(&[u8], &str)]) {
        for (message, line) in cases {
            assert_eq!(to_line(message).unwrap(), *line, "{message:?}");
        }
    }

    #[test]
    fn rfc_3164_as_rsyslog_forwards_it() {
        assert_lines(&[
            (
                b"<14>Dec  3 11:55:01 hsm1 pkcs11-tool: OSToken.cpp(64): Opened token /t\n",
                "Dec  3 11:55:01 hsm1 pkcs11-tool: OSToken.cpp(64): Opened token /t",
            ),
            (
                b"<191>Dec 13 01:02:03 h softhsm2[12]: SoftHSM.cpp:412 C_Initialize success",
                "Dec 13 01:02:03 h softhsm2[12]: SoftHSM.cpp:412 C_Initialize success",
            ),
        ]);
    }

    #[test]
    fn rfc_5424_with_and_without_structured_data() {
        assert_lines(&[
            (
                "<15>1 2026-12-03T11:55:01.123456+00:00 hsm1 pkcs11-tool - - - \u{feff}OSToken.cpp(64): Opened token".as_bytes(),
                "2026-12-03T11:55:01.123456+00:00 hsm1 pkcs11-tool: OSToken.cpp(64): Opened token",
            ),
            (
                br#"<15>1 2026-12-03T11:55:01Z hsm1 softhsm2 4242 ID47 [a@1 x="q\"]" y="\]"][b@2] SoftHSM.cpp(9): C_Login failed"#,
                "2026-12-03T11:55:01Z hsm1 softhsm2[4242]: SoftHSM.cpp(9): C_Login failed",
            ),
            // rsyslog's RSYSLOG_SyslogProtocol23Format: a space before the message, then its own.
            (
                b"<14>1 2026-12-03T11:55:01.1+00:00 h pkcs11-tool - - -  OSToken.cpp(64): a\nb\n",
                "2026-12-03T11:55:01.1+00:00 h pkcs11-tool: OSToken.cpp(64): a b",
            ),
            // No message at all.
            (b"<14>1 T h a - - -", "T h a: "),
        ]);
    }

    #[test]
    fn bad_messages() {
        assert_eq!(to_line(b"hello"), Err(SyslogError::NoPri));
        assert_eq!(to_line(b"<1234>x"), Err(SyslogError::NoPri));
        assert_eq!(to_line(b"<a>x"), Err(SyslogError::NoPri));
        assert_eq!(to_line(b"<14>1 T h"), Err(SyslogError::ShortHeader));
        assert_eq!(
            to_line(b"<14>1 T h a p m [x y=\"]"),
            Err(SyslogError::Unterminated)
        );
        assert_eq!(to_line(b"<14>1 T h a p m x"), Err(SyslogError::ShortHeader));
    }

    #[test]
    fn octet_counting_and_line_ends_in_any_split() {
        let stream = b"10 <14>a: b c\n<14>second\n5 <1>xy\r\n<2>last\n".to_vec();
        let want: Vec<Vec<u8>> = vec![
            b"<14>a: b c".to_vec(),
            b"<14>second".to_vec(),
            b"<1>xy".to_vec(),
            b"<2>last".to_vec(),
        ];
        // Every split point, and byte by byte.
        for cut in 0..stream.len() {
            let mut f = Framer::default();
            let mut got = f.push(&stream[..cut]).unwrap();
            got.extend(f.push(&stream[cut..]).unwrap());
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(f.pending(), 0);
        }
        let mut f = Framer::default();
        let mut got = Vec::new();
        for b in &stream {
            got.extend(f.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, want);
        // An octet count may hold a line end.
        let mut f = Framer::default();
        assert_eq!(f.push(b"6 <1>a\nb").unwrap(), vec![b"<1>a\nb".to_vec()]);
        // A message cut by the end of the connection stays pending.
        assert!(f.push(b"20 <1>abc").unwrap().is_empty());
        assert_eq!(f.pending(), 9);
    }

    #[test]
    fn oversized_frames_end_the_connection() {
        let mut f = Framer::default();
        assert_eq!(
            f.push(b"99999999 <1>"),
            Err(SyslogError::TooLong(99_999_999))
        );
        let mut f = Framer::default();
        assert_eq!(f.push(b"12345678"), Err(SyslogError::BadCount));
        let mut f = Framer::default();
        assert_eq!(f.push(b"12x <1>"), Err(SyslogError::BadCount));
        let mut f = Framer::default();
        assert_eq!(
            f.push(&vec![b'<'; MAX_MESSAGE + 1]),
            Err(SyslogError::LineTooLong)
        );
    }
}
