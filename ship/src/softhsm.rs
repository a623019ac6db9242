//! SoftHSM2's log lines as syslog writes them to a file (docs/HSM-LOGS.md "SoftHSM2"):
//! `<syslog time and host> program[pid]: File.cpp(line): message`. SoftHSM 2.6 calls
//! syslog() without openlog(), so the program is the application's (`pkcs11-tool[4242]:`), and
//! writes the location as `File.cpp(412):`; the seed's form `softhsm2[pid]: File.cpp:412
//! message` is read too, and a tag without a pid (`pkcs11-tool:`: SoftHSM does not ask
//! syslog() for one). A line is SoftHSM's when its message starts with such a location.
//! One event per line: its type the PKCS#11 function the message names (`C_Login`), else
//! `SOFTHSM2_LOG`; FAILURE when it names an error, SUCCESS when it says success, VOID
//! otherwise (most lines are not an operation with an outcome).

use serde_json::json;

use crate::Parser;
use crate::record::{Record, Status};

#[derive(Debug, Default)]
pub struct SoftHsm;

fn failure(message: &str) -> Option<String> {
    if let Some(i) = message.find("CKR_") {
        let rv: String = message[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if rv != "CKR_OK" {
            return Some(rv);
        }
    }
    let m = message.to_ascii_lowercase();
    [
        "fail",
        "error",
        "could not",
        "cannot",
        "invalid",
        "incorrect",
    ]
    .iter()
    .any(|w| m.contains(w))
    .then(String::new)
}

impl Parser for SoftHsm {
    fn module(&self) -> &'static str {
        "SOFTHSM2"
    }

    fn line(&mut self, line: &str, offset: u64, next: u64, lineno: u64, out: &mut Vec<Record>) {
        let Some((prefix, program, pid, rest)) = program_and_pid(line) else {
            return;
        };
        let (location, message) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some(location) = softhsm_location(location) else {
            return;
        };
        let message = message.trim();
        let function = message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("C_") && w.len() > 2);
        let mut r = Record::new(function.unwrap_or("SOFTHSM2_LOG"), offset, lineno);
        r.end = next;
        r.end_line = lineno + 1;
        match failure(message) {
            Some(rv) => {
                r.status = Status::Failure;
                r.rv = Some(rv).filter(|s| !s.is_empty());
            }
            None if message.to_ascii_lowercase().contains("success") => r.status = Status::Success,
            None => r.status = Status::Void,
        }
        if !prefix.is_empty() {
            r.time = Some(prefix.to_string());
        }
        r.session = pid.map(str::to_string);
        r.details.insert("program".into(), json!(program));
        if let Some(pid) = pid {
            r.details.insert("pid".into(), json!(pid));
        }
        r.details.insert("location".into(), json!(location));
        r.details.insert(
            "message".into(),
            json!(message.chars().take(512).collect::<String>()),
        );
        out.push(r);
    }
}

/// `(syslog prefix, program, pid, the rest)` of `... program[pid]: rest` or `... program:
/// rest` (syslog() without LOG_PID, as SoftHSM calls it, writes no pid). The tag's `: ` is the
/// line's first: neither a syslog time stamp nor a host name holds one.
fn program_and_pid(line: &str) -> Option<(&str, &str, Option<&str>, &str)> {
    let colon = line.find(": ")?;
    let start = line[..colon].rfind(' ').map(|i| i + 1).unwrap_or(0);
    let tag = &line[start..colon];
    let (program, pid) = match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
        Some((program, pid)) => {
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (program, Some(pid))
        }
        None => (tag, None),
    };
    if program.is_empty() {
        return None;
    }
    Some((line[..start].trim(), program, pid, &line[colon + 2..]))
}

/// Whether `line` (a syslog line: time, host, tag, message) is one SoftHSM wrote.
pub fn is_softhsm_line(line: &str) -> bool {
    program_and_pid(line)
        .and_then(|(_, _, _, rest)| softhsm_location(rest.split(' ').next().unwrap_or("")))
        .is_some()
}

/// `File.cpp(412):` or `File.cpp:412` as `File.cpp:412`, if it is a SoftHSM source location.
fn softhsm_location(word: &str) -> Option<String> {
    let word = word.trim_end_matches(':');
    let (file, line) = match word.split_once('(') {
        Some((f, l)) => (f, l.strip_suffix(')')?),
        None => word.rsplit_once(':')?,
    };
    let known = [".cpp", ".h", ".c"].iter().any(|e| file.ends_with(e));
    (known && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{file}:{line}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse_all};

    #[test]
    fn seed_lines_and_syslog_prefixes() {
        let log = "Dec  3 11:17:43 hsm1 softhsm2[12345]: SoftHSM.cpp:412 C_Initialize success\n\
                   2026-12-03T11:17:44.120+00:00 hsm1 softhsm2[12345]: OSToken.cpp:88 Transaction in database is already active.\n\
                   Dec  3 11:17:45 hsm1 softhsm2[12345]: SoftHSM.cpp:1234 C_Login: Incorrect PIN (CKR_PIN_INCORRECT)\n\
                   Dec  3 11:17:45 hsm1 kernel: something else\n\
                   Dec  3 11:17:46 hsm1 softhsm2[12345]: SoftHSM.cpp:2 Could not load the object store\n";
        let r = parse_all(log.as_bytes(), Format::Softhsm2Syslog);
        let ops: Vec<&str> = r.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(
            ops,
            ["C_Initialize", "SOFTHSM2_LOG", "C_Login", "SOFTHSM2_LOG"]
        );
        assert_eq!(r[0].status, Status::Success);
        assert_eq!(r[1].status, Status::Void);
        assert_eq!(r[0].time.as_deref(), Some("Dec  3 11:17:43 hsm1"));
        assert_eq!(r[0].details["location"], "SoftHSM.cpp:412");
        assert_eq!(
            r[1].details["message"],
            "Transaction in database is already active."
        );
        assert_eq!(r[2].status, Status::Failure);
        assert_eq!(r[2].rv.as_deref(), Some("CKR_PIN_INCORRECT"));
        assert_eq!(r[3].status, Status::Failure);
        assert_eq!(r[3].rv, None);
        assert_eq!(r[3].line, 5);
    }

    /// Messages SoftHSM 2.6 wrote with log.level = DEBUG for `pkcs11-tool --login` with a
    /// wrong PIN (captured from its syslog() calls), as rsyslog writes them to a file.
    #[test]
    fn real_softhsm_2_6_lines() {
        let log = "Dec  3 11:55:01 hsm1 pkcs11-tool[4242]: OSToken.cpp(64): Opened token /var/lib/softhsm/tokens/9b8a6cf7\n\
                   Dec  3 11:55:01 hsm1 pkcs11-tool[4242]: Configuration.cpp(96): Missing slots.mechanisms in configuration. Using default value: ALL\n\
                   Dec  3 11:55:01 hsm1 pkcs11-tool[4242]: OSSLEVPSymmetricAlgorithm.cpp(512): EVP_DecryptFinal failed (0x00000000): error:12800067:DSO support routines::could not load the shared library\n\
                   Dec  3 11:55:01 hsm1 sshd[77]: Accepted publickey for root\n\
                   2026-12-03T11:55:02.5+00:00 hsm1 pkcs11-tool: SoftHSM.cpp(1223): Could not open session\n\
                   Dec  3 11:55:03 hsm1 cron: (root) CMD (true)\n";
        let r = parse_all(log.as_bytes(), Format::Softhsm2Syslog);
        assert_eq!(r.len(), 4, "{r:?}");
        // Without a pid (glibc's syslog() without LOG_PID), as rsyslog receives SoftHSM's lines.
        assert_eq!(r[3].details["program"], "pkcs11-tool");
        assert_eq!(r[3].details.get("pid"), None);
        assert_eq!(r[3].session, None);
        assert_eq!(r[3].status, Status::Failure);
        assert_eq!(
            r[3].time.as_deref(),
            Some("2026-12-03T11:55:02.5+00:00 hsm1")
        );
        assert!(is_softhsm_line(
            "Dec  3 11:55:01 hsm1 p[1]: OSToken.cpp(64): Opened"
        ));
        assert!(!is_softhsm_line(
            "Dec  3 11:55:01 hsm1 sshd[77]: Accepted publickey"
        ));
        assert!(!is_softhsm_line(
            "Dec  3 11:55:01 hsm1 x[a]: OSToken.cpp(64): Opened"
        ));
        assert_eq!(r[0].details["program"], "pkcs11-tool");
        assert_eq!(r[0].details["location"], "OSToken.cpp:64");
        assert_eq!(r[0].time.as_deref(), Some("Dec  3 11:55:01 hsm1"));
        assert_eq!(r[0].status, Status::Void);
        assert_eq!(r[2].status, Status::Failure);
        assert!(
            r[2].details["message"]
                .as_str()
                .unwrap()
                .starts_with("EVP_DecryptFinal failed")
        );
    }
}
