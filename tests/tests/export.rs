//! `GET /api/v1/export` end to end, on SQLite and PostgreSQL: each format with criteria, checked
//! offline by `auditseal-db verify-export` (configured keys, and a published public key alone);
//! one changed byte fails it; the CSV parses back to the stored rows; every export is logged as
//! LOG_EXPORT; bad parameters answer 400 naming them. A batched node's version 4 rows travel
//! with their batch statements in NDJSON.

use auditseal_e2e::{BACKENDS, Server, all_rows, cli};
use serde_json::{Value, json};

async fn post(url: &str, body: &Value) {
    let r = auditseal_e2e::client_for(url)
        .post(format!("{url}/api/v1/events"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

/// An event whose values need quoting and escaping in CSV and TSV.
fn awkward(event_type: &str) -> Value {
    json!({
        "eventType": event_type,
        "eventStatus": "SUCCESS",
        "authToken": "CN=signer, O=\"Test\"",
        "service": "SIGNSERVER",
        "module": "WORKER",
        "customId": "a,b\"c\td\\N",
        "searchDetail1": "",
        "additionalDetails": {"NOTE": "line1\nline2\r\n, \"q\"\ttab \\ end"}
    })
}

struct Exported {
    status: u16,
    body: Vec<u8>,
    signature: Option<String>,
    request: Option<String>,
    rows: Option<String>,
    sha256: Option<String>,
}

async fn export(url: &str, query: &str) -> Exported {
    let r = auditseal_e2e::get(format!("{url}/api/v1/export?{query}"))
        .await
        .unwrap();
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (signature, rows, sha256) = (
        h("x-auditseal-signature"),
        h("x-auditseal-rows"),
        h("x-auditseal-sha256"),
    );
    let request = h("x-auditseal-request");
    let status = r.status().as_u16();
    Exported {
        status,
        signature,
        request,
        rows,
        sha256,
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// A tiny RFC 4180 reader, independent of the one in core: records of fields, an empty
/// unquoted field is null.
fn parse_csv(text: &str) -> Vec<Vec<Option<String>>> {
    fn take(field: &mut String, quoted: &mut bool) -> Option<String> {
        let f = std::mem::take(field);
        let q = std::mem::replace(quoted, false);
        (q || !f.is_empty()).then_some(f)
    }
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut in_quotes, mut was_quoted) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => (in_quotes, was_quoted) = (true, true),
            ',' => row.push(take(&mut field, &mut was_quoted)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                row.push(take(&mut field, &mut was_quoted));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    assert!(row.is_empty() && field.is_empty(), "unterminated record");
    rows
}

fn fields(r: &auditseal_core::record::AuditRecord) -> Vec<Option<String>> {
    let mut f = auditseal_e2e::record_fields(r).to_vec();
    f.push(r.row_protection.clone());
    f
}

fn verify(base: &[&str], file: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let mut a = base.to_vec();
    a.extend(["verify-export", file.to_str().unwrap(), "--json"]);
    a.extend(extra);
    let (code, out, err) = cli(&a);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

/// The companion `FILE.sig` of a CSV or TSV export, as docs/API.md says to save it: the
/// `X-Auditseal-Request` line, then the `X-Auditseal-Signature` line.
fn sig_file(e: &Exported) -> String {
    format!(
        "{}\n{}\n",
        e.request.as_deref().unwrap(),
        e.signature.as_deref().unwrap()
    )
}

/// Writes a copy of `bytes` with the first `needle` changed by one byte.
fn tampered(bytes: &[u8], needle: &str, path: &std::path::Path) {
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[tokio::test]
async fn exports_verify_offline_and_fail_when_one_byte_changes() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = auditseal_e2e::new_database(backend, dir.path()).await;
        let base = ["--data-dir", d, "--database-url", &url];
        let mut a = base.to_vec();
        a.extend(["--node-id", "ex-s"]);
        let seq = Server::start(&a).unwrap();
        let mut a = base.to_vec();
        a.extend(["--node-id", "ex-b", "--device", "batched"]);
        let bat = Server::start(&a).unwrap();
        for _ in 0..5 {
            post(&seq.url, &awkward("PROCESS")).await;
        }
        for _ in 0..3 {
            post(&seq.url, &auditseal_e2e::event("KEYGEN")).await;
        }
        for _ in 0..4 {
            post(&bat.url, &awkward("PROCESS")).await;
        }

        // NDJSON, both nodes' PROCESS rows (the batched ones with their statements).
        let e = export(&seq.url, "format=ndjson&criteria=eventType%20EQ%20PROCESS").await;
        assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
        assert_eq!(e.rows.as_deref(), Some("9"));
        let text = String::from_utf8(e.body.clone()).unwrap();
        assert!(text.contains("{\"type\":\"batch\""), "{text}");
        let trailer: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(trailer["type"], "trailer");
        assert_eq!(trailer["rows"], 9);
        assert_eq!(
            trailer["signature"].as_str(),
            e.signature.as_deref(),
            "{trailer}"
        );
        // The first line is the request, signed with the rows, and sent as a header too.
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "request", "{first}");
        assert_eq!(Some(text.lines().next().unwrap()), e.request.as_deref());
        let nd = dir.path().join("e.ndjson");
        std::fs::write(&nd, &e.body).unwrap();
        let (code, rep) = verify(&base, &nd, &[]);
        assert_eq!(code, 0, "{backend:?}: {rep}");
        assert_eq!(
            (rep["rows"].as_u64(), rep["rowsVerified"].as_u64()),
            (Some(9), Some(9)),
            "{rep}"
        );
        assert_eq!(rep["version"], 2, "{rep}");
        assert_eq!(
            (
                &rep["request"]["nodeId"],
                &rep["request"]["format"],
                &rep["request"]["limit"]
            ),
            (&json!("ex-s"), &json!("ndjson"), &Value::Null),
            "{rep}"
        );
        assert_eq!(
            rep["request"]["criteria"],
            json!([{"field": "eventType", "op": "EQ", "value": "PROCESS"}]),
            "{rep}"
        );
        let made = rep["request"]["createdAt"].as_i64().unwrap();
        let logged = all_rows(&url)
            .await
            .into_iter()
            .rfind(|r| r.event_type == "LOG_EXPORT")
            .unwrap();
        assert!(
            logged
                .additional_details
                .unwrap()
                .contains(&format!("<long>{made}</long>")),
            "the LOG_EXPORT event records createdAt {made}"
        );
        // The verifier shows the request it checked.
        let mut a = base.to_vec();
        a.extend(["verify-export", nd.to_str().unwrap()]);
        let (code, out, err) = cli(&a);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("Request (signed): made by node ex-s")
                && out.contains("criteria: eventType EQ PROCESS; limit: none"),
            "{out}"
        );
        let bad = dir.path().join("bad.ndjson");
        tampered(&e.body, "SUCCESS", &bad);
        let (code, rep) = verify(&base, &bad, &[]);
        assert_eq!(code, 255, "{rep}");
        assert!(rep.to_string().contains("the file was changed"), "{rep}");
        // Another criterion or time in the request line: the signature fails.
        for (from, to) in [
            (
                "\"value\":\"PROCESS\"".to_string(),
                "\"value\":\"KEYGEN\"".to_string(),
            ),
            (
                format!("\"createdAt\":{made}"),
                format!("\"createdAt\":{}", made - 86_400_000),
            ),
        ] {
            let changed = text.replacen(from.as_str(), to.as_str(), 1);
            assert_ne!(changed, text);
            std::fs::write(&bad, changed).unwrap();
            let (code, rep) = verify(&base, &bad, &[]);
            assert_eq!(code, 255, "{to}: {rep}");
            assert!(rep.to_string().contains("the file was changed"), "{rep}");
        }

        // CSV of one node's PROCESS rows: verifies, parses back to the stored rows.
        let e = export(
            &seq.url,
            "format=csv&criteria=eventType+EQ+PROCESS&criteria=nodeId+EQ+ex-s",
        )
        .await;
        assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
        let csv = dir.path().join("e.csv");
        std::fs::write(&csv, &e.body).unwrap();
        std::fs::write(dir.path().join("e.csv.sig"), sig_file(&e)).unwrap();
        let (code, rep) = verify(&base, &csv, &[]);
        assert_eq!(code, 0, "{backend:?}: {rep}");
        assert_eq!(rep["rowsVerified"], 5, "{rep}");
        assert_eq!(rep["request"]["criteria"][1]["value"], "ex-s", "{rep}");
        // The request line of the .sig is signed too: a broader criterion fails.
        let narrowed = dir.path().join("narrowed.csv");
        std::fs::copy(&csv, &narrowed).unwrap();
        std::fs::write(
            dir.path().join("narrowed.csv.sig"),
            sig_file(&e).replacen("\"value\":\"ex-s\"", "\"value\":\"ex-b\"", 1),
        )
        .unwrap();
        let (code, rep) = verify(&base, &narrowed, &[]);
        assert_eq!(code, 255, "{rep}");
        assert!(rep.to_string().contains("the file was changed"), "{rep}");
        let parsed = parse_csv(std::str::from_utf8(&e.body).unwrap());
        assert_eq!(parsed[0][3].as_deref(), Some("timeStamp"));
        let stored: Vec<Vec<Option<String>>> = all_rows(&url)
            .await
            .iter()
            .filter(|r| r.node_id == "ex-s" && r.event_type == "PROCESS")
            .map(fields)
            .collect();
        assert_eq!(parsed[1..], stored[..]);
        assert_eq!(stored[0][9].as_deref(), Some("a,b\"c\td\\N"));
        assert_eq!(stored[0][10].as_deref(), Some(""));
        assert_eq!(stored[0][11], None);
        let bad = dir.path().join("bad.csv");
        tampered(&e.body, "SIGNSERVER", &bad);
        std::fs::copy(dir.path().join("e.csv.sig"), dir.path().join("bad.csv.sig")).unwrap();
        let (code, rep) = verify(&base, &bad, &[]);
        assert_eq!(code, 255, "{rep}");
        // --sig names the signature elsewhere.
        let (code, rep) = verify(
            &base,
            &csv,
            &["--sig", dir.path().join("e.csv.sig").to_str().unwrap()],
        );
        assert_eq!(code, 0, "{rep}");

        // TSV of every row, capped, checked with the published public key alone.
        let e = export(&seq.url, "format=tsv&limit=7").await;
        assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
        assert_eq!(e.rows.as_deref(), Some("7"));
        let tsv = dir.path().join("e.tsv");
        std::fs::write(&tsv, &e.body).unwrap();
        std::fs::write(dir.path().join("e.tsv.sig"), sig_file(&e)).unwrap();
        let keys: Value = auditseal_e2e::get(format!("{}/api/v1/keys", seq.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pem = dir.path().join("pub.pem");
        std::fs::write(&pem, keys["keys"][0]["publicKeyPem"].as_str().unwrap()).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let lone = ["--data-dir", empty.path().to_str().unwrap()];
        let (code, rep) = verify(&lone, &tsv, &["--public-key", pem.to_str().unwrap()]);
        assert_eq!(code, 0, "{backend:?}: {rep}");
        // The batched node's 4 rows come first (nodeId order); version 4 in TSV: not checkable.
        assert_eq!(
            (
                rep["rows"].as_u64(),
                rep["rowsVerified"].as_u64(),
                rep["rowsNotCheckable"].as_u64()
            ),
            (Some(7), Some(3), Some(4)),
            "{rep}"
        );
        let bad = dir.path().join("bad.tsv");
        tampered(&e.body, "ex-s", &bad);
        std::fs::copy(dir.path().join("e.tsv.sig"), dir.path().join("bad.tsv.sig")).unwrap();
        let (code, rep) = verify(&lone, &bad, &["--public-key", pem.to_str().unwrap()]);
        assert_eq!(code, 255, "{rep}");

        // Bad parameters: 400 naming them; nothing logged for them.
        for (query, needle) in [
            ("format=xml", "xml"),
            ("format=csv&criteria=bogus+EQ+1", "bogus"),
            ("format=csv&criteria=eventType+SORTOF+1", "SORTOF"),
            ("criteria=eventType+EQ+X", "format"),
            ("format=csv&sort=asc", "sort"),
        ] {
            let e = export(&seq.url, query).await;
            assert_eq!(e.status, 400, "{query}");
            let v: Value = serde_json::from_slice(&e.body).unwrap();
            assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
        }

        // Three exports, three LOG_EXPORT rows, each with its export's SHA-256.
        let logged: Vec<_> = all_rows(&url)
            .await
            .into_iter()
            .filter(|r| r.event_type == "LOG_EXPORT")
            .collect();
        assert_eq!(logged.len(), 3, "{logged:?}");
        let details = logged[2].additional_details.as_deref().unwrap();
        assert!(details.contains(&e.sha256.unwrap()), "{details}");
        assert!(details.contains("tsv"), "{details}");
        let (code, out, _) = cli(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "verifylog",
            "--all",
            "--quiet",
        ]);
        assert_eq!(code, 0, "{out}");

        // A row that no longer verifies fails the export before anything is sent or logged.
        auditseal_e2e::exec(
            &url,
            "UPDATE auditrecorddata SET eventstatus = 'FAILURE' WHERE nodeid = 'ex-s' AND sequencenumber = 6",
        )
        .await;
        let e = export(&seq.url, "format=ndjson&criteria=nodeId+EQ+ex-s").await;
        assert_eq!(e.status, 500, "{}", String::from_utf8_lossy(&e.body));
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            (v["error"].as_str(), v["sequenceNumber"].as_i64()),
            (Some("verification_failed"), Some(6)),
            "{v}"
        );
        let logged = all_rows(&url)
            .await
            .into_iter()
            .filter(|r| r.event_type == "LOG_EXPORT")
            .count();
        assert_eq!(logged, 3);
        seq.stop();
        bat.stop();
    }
}

#[tokio::test]
async fn without_signing_there_is_no_export() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auditseal.toml");
    std::fs::write(&config, "[protection]\nenable_sign = false\n").unwrap();
    let url = auditseal_e2e::new_database(auditseal_e2e::Backend::Sqlite, dir.path()).await;
    let s = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &url,
    ])
    .unwrap();
    let e = export(&s.url, "format=csv").await;
    assert_eq!(e.status, 503);
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["error"], "signing_disabled", "{v}");
    s.stop();
}

/// CSV and TSV cells a spreadsheet would run as formulas (first character `=`, `+`, `-`, `@`,
/// TAB, CR) go out with a `'` before them (docs/FORMAT.md section 9.5), the file still verifies,
/// and removing that `'` gives the stored values back.
#[tokio::test]
async fn csv_and_tsv_cells_cannot_start_a_formula() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = auditseal_e2e::new_database(auditseal_e2e::Backend::Sqlite, dir.path()).await;
    let base = ["--data-dir", d, "--database-url", &url];
    let mut a = base.to_vec();
    a.extend(["--node-id", "fx"]);
    let s = Server::start(&a).unwrap();
    // Names may not hold TAB or CR (docs/API.md "Names"): those start values here.
    post(
        &s.url,
        &json!({
            "eventType": "=FORMULA", "eventStatus": "SUCCESS", "authToken": "-1",
            "service": "+SVC", "module": "@MOD",
            "customId": "=HYPERLINK(\"http://evil.example\",\"x\")",
            "searchDetail1": "\tTAB", "searchDetail2": "\rCR",
            "additionalDetails": {"k": "=1+2", "-": "@x"}
        }),
    )
    .await;
    post(
        &s.url,
        &json!({
            "eventType": "@CMD", "eventStatus": "FAILURE", "authToken": "'quoted",
            "service": "SIGNSERVER", "module": "-m", "customId": "-2", "searchDetail1": "+3"
        }),
    )
    .await;
    let stored: Vec<Vec<Option<String>>> = all_rows(&url).await.iter().map(fields).collect();
    let unmarked = |rows: Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .enumerate()
                    .map(|(i, f)| match f {
                        Some(t) if i != 2 && i != 3 && t.starts_with('\'') => Some(t[1..].into()),
                        f => f,
                    })
                    .collect()
            })
            .collect()
    };
    let formula = |f: &str| f.starts_with(['=', '+', '-', '@', '\t', '\r']);

    let e = export(&s.url, "format=csv&criteria=nodeId+EQ+fx").await;
    assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
    let text = std::str::from_utf8(&e.body).unwrap();
    assert!(
        text.contains(",\"'=FORMULA\",SUCCESS,\"'-1\",\"'+SVC\",\"'@MOD\",\"'=HYPERLINK("),
        "{text}"
    );
    let parsed = parse_csv(text);
    for f in parsed.iter().flatten().flatten() {
        assert!(!formula(f), "a CSV cell starts a formula: {f:?}");
    }
    assert_eq!(unmarked(parsed[1..].to_vec()), stored);
    let csv = dir.path().join("f.csv");
    std::fs::write(&csv, &e.body).unwrap();
    std::fs::write(dir.path().join("f.csv.sig"), sig_file(&e)).unwrap();
    let (code, rep) = verify(&base, &csv, &[]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(rep["rowsVerified"], 3, "{rep}");

    let e = export(&s.url, "format=tsv&criteria=nodeId+EQ+fx").await;
    assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
    let text = std::str::from_utf8(&e.body).unwrap();
    for f in text.lines().flat_map(|l| l.split('\t')) {
        assert!(!formula(f), "a TSV cell starts a formula: {f:?}");
    }
    assert!(text.contains("\t'\\tTAB\t'\\rCR\t"), "{text}");
    let tsv = dir.path().join("f.tsv");
    std::fs::write(&tsv, &e.body).unwrap();
    std::fs::write(dir.path().join("f.tsv.sig"), sig_file(&e)).unwrap();
    let (code, rep) = verify(&base, &tsv, &[]);
    assert_eq!(code, 0, "{rep}");
    // The three rows and the CSV export's LOG_EXPORT.
    assert_eq!(rep["rowsVerified"], 4, "{rep}");
    s.stop();
}
