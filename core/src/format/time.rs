//! Time helpers: epoch milliseconds, and the ISO-8601 forms a query may use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in epoch milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date of a day number (inverse of `days_from_civil`).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats epoch millis as `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn format_iso8601(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `...:SS`, `...:SS.fff`, with `Z`, `+HH:MM`,
/// `-HH:MM` or nothing (UTC) after the time. Returns None for anything else.
pub fn parse_iso8601_millis(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (y, m, d) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    let Some(time) = time else { return Some(ms) };
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
        (c, sign * (num(oh)? * 3_600_000 + num(om)? * 60_000))
    } else {
        (time, 0)
    };
    let mut tp = clock.split(':');
    let h = num(tp.next()?)?;
    let min = num(tp.next()?)?;
    let (sec, frac) = match tp.next() {
        Some(sf) => match sf.split_once('.') {
            Some((s, f)) => (num(s)?, {
                let f3: String = f.chars().chain("000".chars()).take(3).collect();
                num(&f3)?
            }),
            None => (num(sf)?, 0),
        },
        None => (0, 0),
    };
    if tp.next().is_some() || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    ms += h * 3_600_000 + min * 60_000 + sec * 1000 + frac - offset_ms;
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(parse_iso8601_millis("1970-01-01"), Some(0));
        assert_eq!(parse_iso8601_millis("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_iso8601_millis("2026-11-25T12:00:00.5Z"),
            Some(1_795_608_000_500)
        );
        assert_eq!(
            parse_iso8601_millis("2026-11-25T13:00:00+01:00"),
            Some(1_795_608_000_000)
        );
        assert_eq!(
            parse_iso8601_millis("2026-11-25T12:00"),
            Some(1_795_608_000_000)
        );
        assert_eq!(parse_iso8601_millis("yesterday"), None);
        assert_eq!(parse_iso8601_millis("2026-13-01"), None);
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_iso8601(0), "1970-01-01T00:00:00.000Z");
        for ms in [0, 1_795_608_000_500, -86_400_001, 951_782_400_000] {
            assert_eq!(parse_iso8601_millis(&format_iso8601(ms)), Some(ms));
        }
    }
}
