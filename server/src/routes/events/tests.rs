use axum::http::StatusCode;
use serde_json::{Value, json};

use auditseal_core::details;
use auditseal_core::store::{Cursor, Order};

use super::query::{parse_count, parse_query, row_json};
use super::validate::{parse_bulk, parse_event};
use crate::auth::{Identity, SUBMITTER_KEY};

fn who() -> Identity {
    Identity {
        name: "token:signer-1".into(),
        role: auditseal_core::access::Role::Ingest,
    }
}

#[test]
fn the_submitter_is_recorded_and_cannot_be_claimed() {
    let plain =
        br#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m"}"#;
    let with = br#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m","additionalDetails":{"k":"v"}}"#;
    for body in [&plain[..], &with[..]] {
        let e = parse_event(body, &who(), false).unwrap();
        let xml = e.additional_details.as_deref().unwrap();
        let d = details::decode(xml).unwrap();
        let json = details::to_json(&d);
        assert_eq!(json[SUBMITTER_KEY], "token:signer-1");
        assert!(!e.details_listing.is_some());
        // Listed when asked for: the same XML, listed as decoding it lists.
        let kept = parse_event(body, &who(), true).unwrap();
        assert_eq!(kept.additional_details.as_deref(), Some(xml));
        let mut decoded = String::new();
        details::push_listing(&mut decoded, &d);
        assert!(decoded.contains("auditseal.submitter: token:signer-1; "));
        assert_eq!(kept.details_listing.of(xml), Some(decoded.as_str()));
    }
    for service in ["AUDITSEAL", "auditseal", " Auditseal "] {
        let system = format!(
            r#"{{"eventType":"TOKEN_CREATE","eventStatus":"SUCCESS","authToken":"a","service":"{service}","module":"SECURITY_AUDIT"}}"#
        );
        let e = parse_event(system.as_bytes(), &who(), false).unwrap_err();
        assert!(e.message.contains("reserved"), "{service:?}: {}", e.message);
    }
    for key in [
        SUBMITTER_KEY,
        "auditseal.other",
        "AUDITSEAL.SUBMITTER",
        " Auditseal.submitter",
    ] {
        let body = format!(
            r#"{{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m","additionalDetails":{{"{key}":"token:admin"}}}}"#
        );
        let e = parse_event(body.as_bytes(), &who(), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("reserved"), "{}", e.message);
    }
}

fn body_with(service: &str, event_type: &str, module: &str, details: &str) -> String {
    json!({
        "eventType": event_type, "eventStatus": "SUCCESS", "authToken": "a",
        "service": service, "module": module,
        "additionalDetails": serde_json::from_str::<Value>(details).unwrap(),
    })
    .to_string()
}

#[test]
fn look_alike_reserved_names_and_invisible_characters_are_refused() {
    // Seen in the wild: the reserved service with a zero-width space or a Cyrillic А, and
    // a zero-width space before the submitter key beside the real one.
    for (service, event_type, module, details, needle) in [
        (
            "AUDITSEAL\u{200B}",
            "LOG_VERIFY",
            "SECURITY_AUDIT",
            "{}",
            "U+200B",
        ),
        (
            "\u{410}UDITSEAL",
            "TOKEN_CREATE",
            "SECURITY_AUDIT",
            "{}",
            "reserved",
        ),
        (
            "AUD\u{399}TSEAL",
            "LOG_VERIFY",
            "SECURITY_AUDIT",
            "{}",
            "reserved",
        ),
        (
            "\u{FF21}UDITSEAL",
            "LOG_VERIFY",
            "SECURITY_AUDIT",
            "{}",
            "reserved",
        ),
        (
            "AUDlTSEAL",
            "LOG_VERIFY",
            "SECURITY_AUDIT",
            "{}",
            "reserved",
        ),
        (
            "\u{202E}LAESTIDUA",
            "LOG_VERIFY",
            "SECURITY_AUDIT",
            "{}",
            "U+202E",
        ),
        (
            "SIGNSERVER",
            "LOG_VERIFY\u{2060}",
            "SECURITY_AUDIT",
            "{}",
            "eventType",
        ),
        ("SIGNSERVER", "PROCESS", "WORKER\u{FE0F}", "{}", "module"),
        ("SIGNSERVER", "PROCESS", "WORKER\t", "{}", "U+0009"),
        (
            "SIGNSERVER",
            "PROCESS",
            "WORKER",
            r#"{"\u200bauditseal.submitter": "token:admin"}"#,
            "U+200B",
        ),
        (
            "SIGNSERVER",
            "PROCESS",
            "WORKER",
            r#"{"\u0430uditseal.submitter": "token:admin"}"#,
            "reserved",
        ),
        (
            "SIGNSERVER",
            "PROCESS",
            "WORKER",
            r#"{"auditseal\uff0esubmitter": "token:admin"}"#,
            "reserved",
        ),
        (
            "SIGNSERVER",
            "PROCESS",
            "WORKER",
            r#"{"auditseal_submitter": "token:admin"}"#,
            "reserved",
        ),
        (
            "SIGNSERVER",
            "PROCESS",
            "WORKER",
            r#"{"outer": {"in\u2066ner": 1}}"#,
            "U+2066",
        ),
    ] {
        let body = body_with(service, event_type, module, details);
        let e = parse_event(body.as_bytes(), &who(), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(e.message.contains(needle), "{body}: {}", e.message);
    }
    // Not names: values may hold anything but NUL; and other scripts are fine in names.
    for (service, details) in [
        ("SIGNSERVER", r#"{"NOTE": "a\u200bb\u202e"}"#),
        (
            "СЕРВИС",
            r#"{"ÅÄÖ": "x", "auditsealing": 1, "my.auditseal.x": 2}"#,
        ),
    ] {
        let body = body_with(service, "PROCESS", "WORKER", details);
        parse_event(body.as_bytes(), &who(), false).unwrap_or_else(|e| panic!("{body}: {e:?}"));
    }
}

#[test]
fn details_are_shown_as_cesecore_shows_them() {
    // What the query, get and live-follow answers show in `details`: top-level `B64:`
    // values decoded (prefix in any case), nested ones and undecodable ones as stored.
    let body = body_with(
        "SIGNSERVER",
        "PROCESS",
        "WORKER",
        r#"{"a": "b64:dG9rZW46YWRtaW4=", "b": "B64:", "c": "B64:%%%%", "d": "åäö",
            "list": ["B64:w6XDpMO2"], "map": {"x": "B64:w6XDpMO2"}}"#,
    );
    let row = parse_event(body.as_bytes(), &who(), false)
        .unwrap()
        .into_record("n", 0, 0);
    let shown = row_json(row, Value::Null);
    assert_eq!(
        shown["details"],
        json!({"a": "token:admin", "b": "B64:", "c": "B64:%%%%", "d": "åäö",
               "list": ["B64:w6XDpMO2"], "map": {"x": "B64:w6XDpMO2"},
               SUBMITTER_KEY: "token:signer-1"}),
        "{shown}"
    );
}

#[test]
fn rejects_bad_events_with_field_names() {
    let ok = br#"{"eventType":"PROCESS","eventStatus":"SUCCESS","authToken":"CLI User","service":"SIGNSERVER","module":"WORKER"}"#;
    assert!(parse_event(ok, &who(), false).is_ok());
    for (body, needle) in [
        (&br#"{"eventType":"PROCESS"}"#[..], "missing field"),
        (br#"{"eventType":"PROCESS","eventStatus":"SUCCESS","authToken":"a","service":"s","module":"m","bogus":1}"#, "bogus"),
        (br#"{"eventType":5,"eventStatus":"SUCCESS","authToken":"a","service":"s","module":"m"}"#, "invalid type"),
        (br#"{"eventType":"P","eventStatus":"MAYBE","authToken":"a","service":"s","module":"m"}"#, "MAYBE"),
        (br#"{"eventType":"","eventStatus":"VOID","authToken":"a","service":"s","module":"m"}"#, "eventType"),
        (br#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m","customId":"a\u0000b"}"#, "NUL"),
        (br#"not json"#, "invalid event JSON"),
    ] {
        let e = parse_event(body, &who(), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
    }
}

#[test]
fn bulk_bodies_array_ndjson_and_all_or_nothing() {
    let good =
        r#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m"}"#;
    assert_eq!(
        parse_bulk(format!("[{good},{good}]").as_bytes(), &who(), false)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        parse_bulk(
            format!("{good}\n\n{good}\n{good}\n").as_bytes(),
            &who(),
            false
        )
        .unwrap()
        .len(),
        3
    );
    let bad =
        r#"{"eventType":"P","eventStatus":"NOPE","authToken":"a","service":"s","module":"m"}"#;
    let e = parse_bulk(
        format!("[{good},{bad},{good},{{}}]").as_bytes(),
        &who(),
        false,
    )
    .unwrap_err();
    let extra = e.extra.unwrap();
    let invalid = extra["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 2);
    assert_eq!(
        (invalid[0]["index"].as_i64(), invalid[1]["index"].as_i64()),
        (Some(1), Some(3))
    );
    assert!(invalid[0]["reason"].as_str().unwrap().contains("NOPE"));
    assert!(parse_bulk(b"[]", &who(), false).is_err());
    assert!(parse_bulk(b"[1,", &who(), false).is_err());
}

#[test]
fn query_parameters() {
    let q = parse_query(Some(
        "criteria=eventType+EQ+PROCESS&criteria=customId%20NULL&limit=5",
    ))
    .unwrap();
    assert_eq!((q.criteria.len(), q.limit), (2, 5));
    assert!(parse_query(Some("limit=0")).is_err());
    assert_eq!(parse_query(Some("order=asc")).unwrap().order, Order::Asc);
    assert_eq!(parse_query(None).unwrap().order, Order::Desc);
    assert!(
        parse_query(Some("order=sideways"))
            .unwrap_err()
            .message
            .contains("order")
    );
    assert!(
        parse_query(Some("sort=asc"))
            .unwrap_err()
            .message
            .contains("sort")
    );
    assert!(
        parse_query(Some("criteria=nope+EQ+1"))
            .unwrap_err()
            .message
            .contains("nope")
    );
}

#[test]
fn cursor_parameter_must_decode_and_match_the_order() {
    let c = Cursor {
        order: Order::Asc,
        time_stamp: 10,
        node_id: "node1".into(),
        sequence_number: 3,
    }
    .encode();
    let q = parse_query(Some(&format!("order=asc&cursor={c}&limit=2"))).unwrap();
    assert_eq!(q.after.map(|a| a.sequence_number), Some(3));
    // The order may come after the cursor in the query string.
    assert!(parse_query(Some(&format!("cursor={c}&order=asc"))).is_ok());
    for bad in [
        format!("cursor={c}"),
        format!("order=desc&cursor={c}"),
        "cursor=not-a-cursor".to_string(),
        "cursor=%27%3B%20DROP%20TABLE%20auditrecorddata%3B--".to_string(),
    ] {
        let e = parse_query(Some(&bad)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("cursor"), "{bad}: {}", e.message);
    }
}

#[test]
fn count_parameters() {
    assert_eq!(
        parse_count(Some("criteria=eventType+EQ+A&criteria=customId+NULL"))
            .unwrap()
            .len(),
        2
    );
    assert!(parse_count(None).unwrap().is_empty());
    for (bad, needle) in [
        ("limit=5", "limit"),
        ("order=asc", "order"),
        ("criteria=colour+EQ+red", "colour"),
        ("criteria=eventType+ABOUT+x", "ABOUT"),
        ("criteria=timeStamp+GE+yesterday", "yesterday"),
    ] {
        let e = parse_count(Some(bad)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains(needle), "{bad}: {}", e.message);
    }
}
