//! The report of `auditseal-db analyze` over records (docs/HSM-LOGS.md "Analyse"): totals,
//! errors by return value, slowest operations, frequency, session lifecycle and potential
//! issues, as rust-hsm's analyze shows them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::record::{Record, Status};

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub total: usize,
    pub success: usize,
    pub failure: usize,
    /// Calls with no logged outcome.
    pub void: usize,
    /// Failures by return value name.
    pub errors_by_rv: BTreeMap<String, usize>,
    /// Calls by operation.
    pub frequency: BTreeMap<String, usize>,
    /// The ten slowest calls.
    pub slowest: Vec<Slow>,
    pub sessions: Sessions,
    pub pin_incorrect: usize,
    pub pin_locked: usize,
    /// Potential issues, one sentence each.
    pub findings: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Slow {
    pub op: String,
    pub line: u64,
    pub ms: f64,
    /// `duration` when the source logged it; `untilNextCall` when only time stamps were
    /// (pkcs11-spy): the time to the next call of the same process, an upper bound.
    pub measure: &'static str,
    /// Its share of the sum over all calls measured the same way, in percent.
    pub share: f64,
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sessions {
    pub opened: usize,
    /// By C_CloseSession.
    pub closed: usize,
    /// By C_CloseAllSessions or C_Finalize.
    pub closed_implicitly: usize,
    /// Still open where the process's log ends.
    pub never_closed: usize,
    pub max_concurrent: usize,
    pub logins: usize,
    pub logouts: usize,
    /// Successful logins whose session was closed, or whose process ended, without C_Logout.
    pub login_without_logout: usize,
}

/// Milliseconds since 1970 of `YYYY-MM-DD HH:MM:SS.mmm` (or with a `T`), if it is one.
pub fn parse_time(t: &str) -> Option<f64> {
    let t = t.trim().trim_end_matches('Z');
    let (date, time) = t.split_once([' ', 'T'])?;
    let mut d = date.split(['-', '/']);
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut parts = time.split(':');
    let (h, min): (i64, i64) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    let s: f64 = parts.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60) as f64 + s) * 1000.0)
}

pub fn analyze(records: &[Record]) -> Report {
    // Findings (chain breaks, counter gaps) are reported apart, not counted as operations.
    let is_finding = |r: &Record| r.sub > 0 || r.op.starts_with("HSM_");
    let findings: Vec<&Record> = records.iter().filter(|r| is_finding(r)).collect();
    let records: Vec<Record> = records.iter().filter(|r| !is_finding(r)).cloned().collect();
    let records = records.as_slice();
    let mut r = Report {
        total: records.len(),
        ..Report::default()
    };
    let mut timed: Vec<(usize, f64, &'static str)> = Vec::new();
    let mut sessions = SessionTracker::default();
    for (i, rec) in records.iter().enumerate() {
        if rec.new_run && i > 0 {
            sessions.end_run(&mut r.sessions);
        }
        count(&mut r, rec);
        if let Some(d) = rec.duration_ms {
            timed.push((i, d, "duration"));
        } else if let (Some(t), Some(next)) = (rec.time.as_deref(), records.get(i + 1))
            && !next.new_run
            && let (Some(a), Some(b)) = (parse_time(t), next.time.as_deref().and_then(parse_time))
        {
            timed.push((i, (b - a).max(0.0), "untilNextCall"));
        }
        sessions.call(rec, &mut r.sessions);
    }
    sessions.end_run(&mut r.sessions);
    r.slowest = slowest(records, timed);
    r.findings = findings_of(&r, &findings);
    r
}

/// Counts one call by status, return value and operation.
fn count(r: &mut Report, rec: &Record) {
    match rec.status {
        Status::Success => r.success += 1,
        Status::Failure => {
            r.failure += 1;
            let rv = rec.rv.clone().unwrap_or_else(|| "unknown".into());
            *r.errors_by_rv.entry(rv).or_default() += 1;
        }
        Status::Void => r.void += 1,
    }
    *r.frequency.entry(rec.op.clone()).or_default() += 1;
    match rec.rv.as_deref() {
        Some("CKR_PIN_INCORRECT") => r.pin_incorrect += 1,
        Some("CKR_PIN_LOCKED") => r.pin_locked += 1,
        _ => {}
    }
}

/// The sessions open and logged in during one process run.
#[derive(Default)]
struct SessionTracker {
    open: HashSet<String>,
    logged_in: HashSet<String>,
}

impl SessionTracker {
    /// The run ended (the log ends, or a new process starts): what is still open never closed.
    fn end_run(&mut self, s: &mut Sessions) {
        s.never_closed += self.open.len();
        s.login_without_logout += self.logged_in.len();
        self.open.clear();
        self.logged_in.clear();
    }

    /// Follows the session calls among `rec`'s successful ones.
    fn call(&mut self, rec: &Record, s: &mut Sessions) {
        if rec.status != Status::Success {
            return;
        }
        let session = rec.session.clone().unwrap_or_default();
        match rec.op.as_str() {
            "C_OpenSession" => {
                s.opened += 1;
                self.open.insert(session);
                s.max_concurrent = s.max_concurrent.max(self.open.len());
            }
            "C_CloseSession" => {
                s.closed += 1;
                self.open.remove(&session);
                if self.logged_in.remove(&session) {
                    s.login_without_logout += 1;
                }
            }
            "C_CloseAllSessions" | "C_Finalize" => {
                s.closed_implicitly += self.open.len();
                self.open.clear();
                s.login_without_logout += self.logged_in.len();
                self.logged_in.clear();
            }
            "C_Login" => {
                s.logins += 1;
                self.logged_in.insert(session);
            }
            "C_Logout" => {
                s.logouts += 1;
                self.logged_in.remove(&session);
            }
            _ => {}
        }
    }
}

/// The ten slowest calls, each with its share of the total time measured the same way.
fn slowest(records: &[Record], mut timed: Vec<(usize, f64, &'static str)>) -> Vec<Slow> {
    let mut sums: HashMap<&str, f64> = HashMap::new();
    for (_, ms, how) in &timed {
        *sums.entry(how).or_default() += ms;
    }
    timed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    timed
        .iter()
        .take(10)
        .map(|&(i, ms, how)| Slow {
            op: records[i].op.clone(),
            line: records[i].line,
            ms,
            measure: how,
            share: match sums.get(how) {
                Some(&sum) if sum > 0.0 => (ms / sum * 1000.0).round() / 10.0,
                _ => 0.0,
            },
        })
        .collect()
}

/// What an auditor should look at: unclosed sessions, PIN failures, and the findings.
fn findings_of(r: &Report, findings: &[&Record]) -> Vec<String> {
    let mut f = Vec::new();
    let s = &r.sessions;
    if s.never_closed > 0 {
        f.push(format!(
            "{} session(s) never closed (the log ends while they are open)",
            s.never_closed
        ));
    }
    if s.login_without_logout > 0 {
        f.push(format!(
            "{} login(s) without logout",
            s.login_without_logout
        ));
    }
    if r.pin_incorrect >= 2 {
        f.push(format!(
            "repeated CKR_PIN_INCORRECT: {} times",
            r.pin_incorrect
        ));
    }
    if r.pin_locked > 0 {
        f.push(format!("CKR_PIN_LOCKED: {} times", r.pin_locked));
    }
    for rec in findings {
        f.push(format!("line {}: {}", rec.line, describe(rec)));
    }
    f
}

/// A finding record (chain break, counter gap) in one line.
fn describe(rec: &Record) -> String {
    let details = serde_json::Value::Object(rec.details.clone());
    format!("{} {details}", rec.op)
}

pub fn render_text(r: &Report) -> String {
    let pct = |n: usize| {
        if r.total == 0 {
            0.0
        } else {
            (n as f64 * 1000.0 / r.total as f64).round() / 10.0
        }
    };
    let mut t = String::new();
    let _ = writeln!(t, "Summary");
    let _ = writeln!(t, "  Total operations: {}", r.total);
    let _ = writeln!(t, "  Successful: {} ({}%)", r.success, pct(r.success));
    let _ = writeln!(t, "  Failed: {} ({}%)", r.failure, pct(r.failure));
    if r.void > 0 {
        let _ = writeln!(t, "  Without outcome: {}", r.void);
    }
    let _ = writeln!(t, "Errors by return value");
    if r.errors_by_rv.is_empty() {
        let _ = writeln!(t, "  none");
    }
    for (rv, n) in &r.errors_by_rv {
        let _ = writeln!(t, "  {rv}: {n}");
    }
    let _ = writeln!(t, "Slowest operations");
    for (i, s) in r.slowest.iter().enumerate() {
        let how = if s.measure == "duration" {
            ""
        } else {
            " until the next call"
        };
        let _ = writeln!(
            t,
            "  {}. {} (line {}): {:.1} ms{how} ({}% of total)",
            i + 1,
            s.op,
            s.line,
            s.ms,
            s.share
        );
    }
    let _ = writeln!(t, "Operation frequency");
    let mut freq: Vec<_> = r.frequency.iter().collect();
    freq.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in freq {
        let _ = writeln!(t, "  {op}: {n} ({}%)", pct(*n));
    }
    let s = &r.sessions;
    let _ = writeln!(t, "Session lifecycle");
    let _ = writeln!(t, "  Sessions opened: {}", s.opened);
    let _ = writeln!(t, "  Sessions closed: {}", s.closed);
    let _ = writeln!(
        t,
        "  Closed by C_CloseAllSessions or C_Finalize: {}",
        s.closed_implicitly
    );
    let _ = writeln!(t, "  Never closed: {}", s.never_closed);
    let _ = writeln!(t, "  Max concurrent: {}", s.max_concurrent);
    let _ = writeln!(t, "  Logins: {}, logouts: {}", s.logins, s.logouts);
    let _ = writeln!(t, "  Logins without logout: {}", s.login_without_logout);
    let _ = writeln!(t, "  CKR_PIN_INCORRECT: {}", r.pin_incorrect);
    let _ = writeln!(t, "  CKR_PIN_LOCKED: {}", r.pin_locked);
    let _ = writeln!(t, "Potential issues");
    if r.findings.is_empty() {
        let _ = writeln!(t, "  none");
    }
    for f in &r.findings {
        let _ = writeln!(t, "  - {f}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse_all};

    fn rec(op: &str, ok: bool, session: &str, rv: &str) -> Record {
        let mut r = Record::new(op, 0, 1);
        r.status = if ok { Status::Success } else { Status::Failure };
        r.session = Some(session.into()).filter(|s: &String| !s.is_empty());
        r.rv = Some(rv.into());
        r
    }

    #[test]
    fn sessions_logins_and_pin_errors() {
        let mut records = vec![
            rec("C_Initialize", true, "", "CKR_OK"),
            rec("C_OpenSession", true, "1", "CKR_OK"),
            rec("C_OpenSession", true, "2", "CKR_OK"),
            rec("C_Login", true, "1", "CKR_OK"),
            rec("C_Logout", true, "1", "CKR_OK"),
            rec("C_CloseSession", true, "1", "CKR_OK"),
            rec("C_Login", false, "2", "CKR_PIN_INCORRECT"),
            rec("C_Login", false, "2", "CKR_PIN_INCORRECT"),
            rec("C_Login", false, "2", "CKR_PIN_LOCKED"),
            rec("C_Finalize", true, "", "CKR_OK"),
        ];
        // A second process that logs in and stops logging with its session open.
        let mut second = rec("C_OpenSession", true, "1", "CKR_OK");
        second.new_run = true;
        records.push(second);
        records.push(rec("C_Login", true, "1", "CKR_OK"));
        let r = analyze(&records);
        assert_eq!((r.total, r.success, r.failure), (12, 9, 3));
        assert_eq!(r.errors_by_rv["CKR_PIN_INCORRECT"], 2);
        assert_eq!(r.errors_by_rv["CKR_PIN_LOCKED"], 1);
        assert_eq!((r.pin_incorrect, r.pin_locked), (2, 1));
        let s = &r.sessions;
        assert_eq!(
            (s.opened, s.closed, s.closed_implicitly, s.never_closed),
            (3, 1, 1, 1)
        );
        assert_eq!(s.max_concurrent, 2);
        assert_eq!((s.logins, s.logouts, s.login_without_logout), (2, 1, 1));
        assert_eq!(r.findings.len(), 4, "{:?}", r.findings);
        let text = render_text(&r);
        assert!(text.contains("CKR_PIN_INCORRECT: 2"), "{text}");
        assert!(text.contains("Never closed: 1"), "{text}");
    }

    #[test]
    fn slowest_from_time_stamps_when_no_duration_is_logged() {
        let log = "0: C_Initialize\n2026-12-03 11:17:43.000\nReturned:  0 CKR_OK\n\n\
                   1: C_GenerateKeyPair\n2026-12-03 11:17:43.100\nReturned:  0 CKR_OK\n\n\
                   2: C_Finalize\n2026-12-03 11:17:44.100\nReturned:  0 CKR_OK\n";
        let r = analyze(&parse_all(log.as_bytes(), Format::Pkcs11Spy));
        assert_eq!(r.slowest[0].op, "C_GenerateKeyPair");
        assert_eq!(r.slowest[0].ms, 1000.0);
        assert_eq!(r.slowest[0].share, 90.9);
        assert_eq!(r.slowest.len(), 2);
        assert_eq!(parse_time("1970-01-02 00:00:01.5"), Some(86_401_500.0));
    }
}
