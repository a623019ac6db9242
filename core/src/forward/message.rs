//! What a forwarded event looks like (docs/FORMAT.md section 12): the row as a JSON object, or
//! the line SignServer's Log4j device writes; over syslog, either one as the MSG of an RFC 5424
//! message whose structured data names node, sequence number, pk and rowProtection.

use crate::config::ForwardFormat;
use crate::evidence::sink::syslog::{self, Header, MessageRef, SdRef};
use crate::format::details::{self, Listing};
use crate::format::record::AuditRecord;

/// The default SD-ID of the element that identifies the row. 32473 is the private enterprise
/// number RFC 5612 sets aside for examples; an organisation with its own sets `sd_id`.
pub const DEFAULT_SD_ID: &str = "auditseal@32473";

/// The logger name SignServer's Log4j device logs under.
const LOG4J_LOGGER: &str = "org.signserver.server.log.SignServerLog4jDevice";

/// The event as text, in `format`, without a line end. `kept`: the listing of the row's
/// additionalDetails, if made at ingestion (`details::encode_listed`), so the Log4j line need not
/// decode them; `Listing::default()` otherwise.
pub fn text(format: ForwardFormat, r: &AuditRecord, kept: &Listing) -> String {
    match format {
        ForwardFormat::Json => json(r),
        ForwardFormat::Log4j => log4j(r, kept),
    }
}

/// The row's 15 columns as one JSON object, in the order and with the names of an NDJSON
/// export's row lines (docs/FORMAT.md section 9.2).
pub fn json(r: &AuditRecord) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// `TIME INFO  [logger] EVENT: t; MODULE: m; CUSTOM_ID: c; key: value; ...; REPLY_TIME:ms`,
/// as SignServer's Log4j device writes an event with Log4j's usual pattern, followed by node
/// and sequence number (docs/FORMAT.md section 12.2). The details come from `kept` when it
/// holds their listing, else from decoding the stored XML: the same text.
pub fn log4j(r: &AuditRecord, kept: &Listing) -> String {
    use std::fmt::Write;
    let details = r.additional_details.as_deref().unwrap_or("");
    let mut s = String::with_capacity(256 + details.len());
    let _ = write!(
        s,
        "{} INFO  [{LOG4J_LOGGER}] EVENT: {}; MODULE: {}; CUSTOM_ID: {}; ",
        crate::format::time::format_iso8601(r.time_stamp),
        r.event_type,
        r.module,
        r.custom_id.as_deref().unwrap_or("null"),
    );
    push_details(&mut s, details, kept);
    let _ = write!(
        s,
        "auditseal.nodeId: {}; auditseal.sequenceNumber: {}; REPLY_TIME:{}",
        r.node_id, r.sequence_number, r.time_stamp
    );
    // One event, one line: a line end inside a value would start a line of its own.
    if s.contains(['\r', '\n']) {
        s = s.replace(['\r', '\n'], " ");
    }
    s
}

/// Appends `key: value; ` for each of the additionalDetails `xml` as the API shows them
/// (`details::push_listing`; `details::decode` has replayed the puts, so a repeated key is
/// there once, as in the API's JSON object); details that do not decode are shown as stored,
/// under `additionalDetails`. The listing comes from `kept` when it was made with `xml`
/// (`Listing::of`: what decoding `xml` lists, made at ingestion from the map).
fn push_details(s: &mut String, xml: &str, kept: &Listing) {
    if xml.is_empty() {
        return;
    }
    if let Some(listing) = kept.of(xml) {
        s.push_str(listing);
        return;
    }
    match details::decode(xml) {
        Ok(d) => details::push_listing(s, &d),
        Err(_) => {
            s.push_str("additionalDetails: ");
            s.push_str(xml);
            s.push_str("; ");
        }
    }
}

/// The severity of an event's syslog message: `warning` for a FAILURE, `notice` otherwise.
fn severity(r: &AuditRecord) -> u8 {
    if r.event_status == "FAILURE" {
        syslog::SEVERITY_WARNING
    } else {
        syslog::SEVERITY_NOTICE
    }
}

/// Appends the RFC 5424 message of an event (docs/FORMAT.md section 12.1) to `line`; its MSG is
/// `text`, the event's `text(format, r)`.
pub fn write_syslog(line: &mut String, h: &Header, sd_id: &str, r: &AuditRecord, text: &str) {
    let seq = r.sequence_number.to_string();
    let params = [
        ("node", r.node_id.as_str()),
        ("seq", seq.as_str()),
        ("pk", r.pk.as_str()),
        ("rowProtection", r.row_protection.as_deref().unwrap_or("")),
    ];
    let n = if r.row_protection.is_some() { 4 } else { 3 };
    syslog::write_line(
        line,
        h,
        &MessageRef {
            facility: syslog::FACILITY_AUTHPRIV,
            severity: severity(r),
            time_ms: r.time_stamp,
            msgid: Some(&r.event_type),
            structured_data: &[
                syslog::origin_ref(),
                SdRef {
                    id: sd_id,
                    params: &params[..n],
                },
            ],
            msg: text,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRecord {
        AuditRecord {
            pk: "p1".into(),
            sequence_number: 17,
            time_stamp: 1_700_000_000_123,
            event_type: "PROCESS".into(),
            event_status: "FAILURE".into(),
            auth_token: "CN=Signer".into(),
            service: "SIGNSERVER".into(),
            module: "WORKER".into(),
            row_protection: Some("1:2:7:ab".into()),
            ..AuditRecord::example()
        }
    }

    #[test]
    fn the_syslog_message_names_the_row_and_carries_it_as_json() {
        let mut line = String::new();
        let h = Header {
            hostname: "h".into(),
            app_name: "auditseal".into(),
            procid: "9".into(),
        };
        write_syslog(&mut line, &h, DEFAULT_SD_ID, &row(), &json(&row()));
        let expected_sd = "[auditseal@32473 node=\"node1\" seq=\"17\" pk=\"p1\" \
                           rowProtection=\"1:2:7:ab\"]";
        assert!(
            line.starts_with("<84>1 2023-11-14T22:13:20.123Z h auditseal 9 PROCESS [origin "),
            "{line}"
        );
        let (head, msg) = line.split_once(expected_sd).expect(&line);
        assert!(head.ends_with(']'), "{line}");
        let back: AuditRecord = serde_json::from_str(msg.trim_start()).unwrap();
        assert_eq!(back, row());
    }

    #[test]
    fn the_log4j_line_is_signservers_with_node_and_number_and_stays_one_line() {
        let mut r = row();
        r.custom_id = Some("42".into());
        let d: details::Details = vec![(
            "FILENAME".into(),
            details::DetailValue::String("a\nb.pdf".into()),
        )];
        let (xml, kept) =
            details::encode_listed(&d, details::MapClass::LinkedHashMap, details::JAVA_VERSION);
        r.additional_details = Some(xml);
        let expected = "2023-11-14T22:13:20.123Z INFO  \
                        [org.signserver.server.log.SignServerLog4jDevice] EVENT: PROCESS; \
                        MODULE: WORKER; CUSTOM_ID: 42; FILENAME: a b.pdf; \
                        auditseal.nodeId: node1; auditseal.sequenceNumber: 17; \
                        REPLY_TIME:1700000000123";
        // Decoded from the row, and listed at ingestion: the same line.
        assert_eq!(log4j(&r, &Listing::default()), expected);
        assert_eq!(log4j(&r, &kept), expected);
        assert!(log4j(&row(), &Listing::default()).contains("CUSTOM_ID: null; auditseal.nodeId"));
    }

    /// What the Log4j line must show of `xml`: the API's JSON object of the details, strings as
    /// they are, other values as JSON.
    fn via_api_json(xml: &str) -> String {
        let mut s = String::new();
        for (key, value) in details::to_json(&details::decode(xml).unwrap()) {
            let value = match value {
                serde_json::Value::String(v) => v,
                other => other.to_string(),
            };
            s.push_str(&format!("{key}: {value}; "));
        }
        s
    }

    fn line_details(xml: &str, kept: &Listing) -> String {
        let line = log4j(
            &AuditRecord {
                additional_details: Some(xml.into()),
                ..row()
            },
            kept,
        );
        let start = line.find("CUSTOM_ID: null; ").unwrap() + "CUSTOM_ID: null; ".len();
        let end = line.find("auditseal.nodeId: ").unwrap();
        line[start..end].to_string()
    }

    #[test]
    fn the_log4j_details_are_the_apis_values_in_its_order_even_with_repeated_keys() {
        use details::DetailValue as V;
        let kinds = [
            V::String("plain".into()),
            V::String("B64:aGVsbG8=".into()),
            V::Null,
            V::Int(-3),
            V::Long(1 << 40),
            V::Date(1_700_000_000_000),
            V::Bool(true),
            V::Float(0.1),
            V::Double(1e20),
            V::Double(f64::NAN),
            V::Float(f32::NEG_INFINITY),
            V::Class("java.lang.String".into()),
            V::List(vec![V::Int(1), V::String("B64:eA==".into())]),
            V::Map(vec![("k".into(), V::Bool(false))]),
        ];
        // Few keys and many; k1 then also stands where k3 did, so it keeps its first place and
        // takes k3's value.
        for n in [3, kinds.len()] {
            let d: details::Details = (1..=n)
                .map(|i| (format!("k{i}"), kinds[(i + 6) % kinds.len()].clone()))
                .collect();
            let (plain, kept) =
                details::encode_listed(&d, details::MapClass::LinkedHashMap, details::JAVA_VERSION);
            let repeated = plain.replace("<string>k3</string>", "<string>k1</string>");
            assert_ne!(plain, repeated);
            for xml in [&plain, &repeated] {
                let expected = via_api_json(xml);
                assert_eq!(line_details(xml, &Listing::default()), expected, "{xml}");
            }
            // Listed at ingestion: what decoding its XML lists.
            assert_eq!(line_details(&plain, &kept), via_api_json(&plain));
            // The same map, its keys repeated as k1 then stands where k3 did.
            let mut d = d;
            d.push(("k1".into(), d[2].1.clone()));
            let (xml, kept) =
                details::encode_listed(&d, details::MapClass::LinkedHashMap, details::JAVA_VERSION);
            assert_eq!(line_details(&xml, &kept), via_api_json(&xml));
        }
        assert_eq!(
            line_details("<not xml", &Listing::default()),
            "additionalDetails: <not xml; "
        );
    }
}
