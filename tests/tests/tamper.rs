//! Tampering must be caught: each protected column changed, a middle row deleted, a sequence
//! number duplicated, a rowProtection nulled, an unknown keyid. `auditseal-db verifylog` must name
//! each precisely and exit 255; an untouched log exits 0. Runs on SQLite and PostgreSQL.

use auditseal_core::config::{KeyMode, ProtectionSection, load_keys};
use auditseal_core::device::{LogDevice, NewEvent, SequentialDevice};
use auditseal_core::store;
use auditseal_e2e::{BACKENDS, Backend, cli, exec, new_database};
use serde_json::Value;

const NODE: &str = "node-a";

/// Writes `n` protected rows through the real sequential device; returns the database URL.
async fn log_with_rows(backend: Backend, dir: &std::path::Path, n: usize) -> String {
    let url = new_database(backend, dir).await;
    let (keys, _) = load_keys(&ProtectionSection::default(), dir, KeyMode::Server).unwrap();
    let store = store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let device = SequentialDevice::start(store, NODE.into(), keys.current.clone())
        .await
        .unwrap();
    for i in 0..n {
        device
            .append(NewEvent {
                event_type: "PROCESS".into(),
                event_status: "SUCCESS".into(),
                auth_token: "CN=signer".into(),
                service: "SIGNSERVER".into(),
                module: "WORKER".into(),
                custom_id: Some("CN=Issuer".into()),
                search_detail1: Some(format!("{i:x}")),
                search_detail2: Some("worker1".into()),
                additional_details: Some(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<java version=\"17.0.15\" class=\"java.beans.XMLDecoder\">\n <object class=\"org.cesecore.util.Base64PutHashMap\">\n  <void method=\"put\">\n   <string>LOG_ID</string>\n   <string>{i}</string>\n  </void>\n </object>\n</java>\n"
                )),
                pk: None,
                details_listing: Default::default(),
            })
            .await
            .unwrap();
    }
    url
}

fn verifylog(dir: &std::path::Path, url: &str) -> (i32, Value, String) {
    let d = dir.to_str().unwrap();
    let (code, out, err) = cli(&[
        "verifylog",
        "--all",
        "--json",
        "--data-dir",
        d,
        "--database-url",
        url,
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let (_, text, _) = cli(&["--data-dir", d, "--database-url", url, "verifylog", "-all"]);
    (code, report, text)
}

fn failed_seqs(report: &Value) -> Vec<(i64, String)> {
    report["nodes"][0]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["sequenceNumber"].as_i64().unwrap(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn untouched_log_verifies_and_prints_last_sequences() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let url = log_with_rows(backend, dir.path(), 5).await;
        let (code, report, text) = verifylog(dir.path(), &url);
        assert_eq!(code, 0, "{backend:?}: {text}");
        assert_eq!(report["rows"], 5);
        assert_eq!(report["errors"], 0);
        assert!(text.contains("Last sequences: {node-a=4}"), "{text}");
    }
}

#[tokio::test]
async fn every_protected_column_change_is_caught() {
    let columns = [
        ("pk", "pk = 'ffffffffffffffffffffffffffffffff'"),
        ("timestamp", "\"timestamp\" = \"timestamp\" + 1"),
        ("eventtype", "eventtype = 'KEYGEN'"),
        ("eventstatus", "eventstatus = 'FAILURE'"),
        ("authtoken", "authtoken = 'CN=mallory'"),
        ("service", "service = 'CORE'"),
        ("module", "module = 'SERVICE'"),
        ("customid", "customid = NULL"),
        ("searchdetail1", "searchdetail1 = 'ff'"),
        ("searchdetail2", "searchdetail2 = 'worker2'"),
        (
            "additionaldetails",
            "additionaldetails = replace(additionaldetails, '>2<', '>9<')",
        ),
    ];
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        for (column, set) in columns {
            let url = log_with_rows(backend, dir.path(), 5).await;
            exec(
                &url,
                &format!("UPDATE auditrecorddata SET {set} WHERE sequencenumber = 2"),
            )
            .await;
            let (code, report, text) = verifylog(dir.path(), &url);
            assert_eq!(code, 255, "{backend:?} {column}: {text}");
            let failed = failed_seqs(&report);
            assert_eq!(failed.len(), 1, "{backend:?} {column}: {failed:?}");
            assert_eq!(failed[0].0, 2);
            assert!(
                failed[0].1.contains("wrong signature"),
                "{column}: {}",
                failed[0].1
            );
            assert!(
                text.contains("ERROR verification failed: node=node-a sequenceNumber=2"),
                "{text}"
            );
            assert!(!text.contains("Last sequences"), "{text}");
        }
        // Moving a row to another node: a hole in its own node, a failed row in the other.
        let url = log_with_rows(backend, dir.path(), 5).await;
        exec(
            &url,
            "UPDATE auditrecorddata SET nodeid = 'node-b' WHERE sequencenumber = 2",
        )
        .await;
        let (code, report, text) = verifylog(dir.path(), &url);
        assert_eq!(code, 255, "{text}");
        assert_eq!(report["nodes"][0]["nodeId"], "node-a");
        assert_eq!(report["nodes"][0]["holes"][0]["thisSequenceNumber"], 3);
        assert_eq!(report["nodes"][1]["nodeId"], "node-b");
        assert_eq!(report["nodes"][1]["failed"][0]["sequenceNumber"], 2);
        // The sequence number itself is protected too: renumbering a row breaks it and leaves a hole.
        let url = log_with_rows(backend, dir.path(), 5).await;
        exec(
            &url,
            "UPDATE auditrecorddata SET sequencenumber = 7 WHERE sequencenumber = 4",
        )
        .await;
        let (code, report, _) = verifylog(dir.path(), &url);
        assert_eq!(code, 255);
        assert_eq!(failed_seqs(&report)[0].0, 7);
        assert_eq!(report["nodes"][0]["holes"][0]["thisSequenceNumber"], 7);
    }
}

#[tokio::test]
async fn deleted_duplicated_nulled_and_unknown_key_rows_are_reported() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();

        let url = log_with_rows(backend, dir.path(), 5).await;
        exec(&url, "DELETE FROM auditrecorddata WHERE sequencenumber = 2").await;
        let (code, report, text) = verifylog(dir.path(), &url);
        assert_eq!(code, 255, "{text}");
        let hole = &report["nodes"][0]["holes"][0];
        assert_eq!(
            (
                hole["lastVerifiedSequenceNumber"].as_i64(),
                hole["thisSequenceNumber"].as_i64()
            ),
            (Some(1), Some(3))
        );
        assert!(
            text.contains("lastVerifiedSequenceNumber=1 thisSequenceNumber=3"),
            "{text}"
        );
        assert!(failed_seqs(&report).is_empty());

        // A duplicate needs the unique index out of the way, as an attacker with DDL rights would.
        let url = log_with_rows(backend, dir.path(), 5).await;
        exec(&url, "DROP INDEX auditrecorddata_idx2").await;
        exec(
            &url,
            "INSERT INTO auditrecorddata SELECT 'dddddddddddddddddddddddddddddddd', nodeid, sequencenumber, \"timestamp\", eventtype, eventstatus, authtoken, service, module, customid, searchdetail1, searchdetail2, additionaldetails, rowversion, rowprotection FROM auditrecorddata WHERE sequencenumber = 3",
        )
        .await;
        let (code, report, text) = verifylog(dir.path(), &url);
        assert_eq!(code, 255, "{text}");
        assert_eq!(report["nodes"][0]["duplicates"], serde_json::json!([3]));
        assert!(
            text.contains("ERROR duplicate: node=node-a sequenceNumber=3"),
            "{text}"
        );
        // The copy has a new pk, so its protection fails too.
        assert_eq!(failed_seqs(&report).len(), 1);

        let url = log_with_rows(backend, dir.path(), 5).await;
        exec(
            &url,
            "UPDATE auditrecorddata SET rowprotection = NULL WHERE sequencenumber = 1",
        )
        .await;
        let (code, report, _) = verifylog(dir.path(), &url);
        assert_eq!(code, 255);
        assert_eq!(
            failed_seqs(&report),
            vec![(1, "rowProtection is null".to_string())]
        );

        let url = log_with_rows(backend, dir.path(), 5).await;
        exec(&url, "UPDATE auditrecorddata SET rowprotection = replace(rowprotection, '1:2:1:', '1:2:77:') WHERE sequencenumber = 0").await;
        let (code, report, _) = verifylog(dir.path(), &url);
        assert_eq!(code, 255);
        assert_eq!(
            failed_seqs(&report),
            vec![(0, "no key is configured for keyid 77".to_string())]
        );
    }
}

#[tokio::test]
async fn named_nodes_offsets_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let url = log_with_rows(Backend::Sqlite, dir.path(), 5).await;
    let d = dir.path().to_str().unwrap();
    // Rows below the offset were archived: deleting them is then no hole.
    exec(&url, "DELETE FROM auditrecorddata WHERE sequencenumber < 3").await;
    let (code, out, _) = cli(&[
        "verifylog",
        "--node",
        "node-a:3",
        "--data-dir",
        d,
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Last sequences: {node-a=4}"), "{out}");
    let (code, out, _) = cli(&[
        "verifylog",
        "-node",
        "node-a",
        "--data-dir",
        d,
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 255, "{out}");
    // A node with no rows is a warning only.
    let (code, out, _) = cli(&[
        "verifylog",
        "--node",
        "nobody",
        "--data-dir",
        d,
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 254, "{out}");
    // --all and --node are exclusive; bad offsets are clear errors.
    let (code, _, err) = cli(&["verifylog", "--all", "--node", "x", "--data-dir", d]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&["verifylog", "--node", "x:y", "--data-dir", d]);
    assert!(code == 2 && err.contains("offset"), "{err}");
}

#[tokio::test]
async fn findings_do_not_depend_on_chunk_boundaries() {
    use auditseal_core::verify::{VerifyOptions, verify_node};
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let url = log_with_rows(backend, dir.path(), 9).await;
        exec(&url, "DROP INDEX auditrecorddata_idx2").await;
        // Duplicates of 3 and 4 (each straddles a boundary for some chunk size), holes at 6 and 7.
        exec(
            &url,
            "INSERT INTO auditrecorddata SELECT pk || 'x', nodeid, sequencenumber, \"timestamp\", eventtype, eventstatus, authtoken, service, module, customid, searchdetail1, searchdetail2, additionaldetails, rowversion, rowprotection FROM auditrecorddata WHERE sequencenumber IN (3, 4)",
        )
        .await;
        exec(
            &url,
            "DELETE FROM auditrecorddata WHERE sequencenumber IN (6, 7)",
        )
        .await;
        let (keys, _) = load_keys(
            &ProtectionSection::default(),
            dir.path(),
            KeyMode::VerifyOnly,
        )
        .unwrap();
        let store = store::open(&url).await.unwrap();
        let ring = std::sync::Arc::new(keys.ring);
        let opts = |chunk| VerifyOptions {
            chunk,
            ..Default::default()
        };
        let reference = verify_node(&store, &ring, NODE, Some(0), &opts(5000))
            .await
            .unwrap();
        assert_eq!(reference.rows, 9);
        assert_eq!(reference.duplicates, vec![3, 4]);
        assert_eq!(reference.holes.len(), 1);
        assert_eq!(
            (
                reference.holes[0].this_sequence_number,
                reference.holes[0].missing
            ),
            (8, 2)
        );
        assert_eq!(reference.failed.len(), 2, "the copies carry another pk");
        for chunk in 1..=10 {
            let r = verify_node(&store, &ring, NODE, Some(0), &opts(chunk))
                .await
                .unwrap();
            assert_eq!(r, reference, "{backend:?} chunk {chunk}");
        }
        let from_4 = verify_node(&store, &ring, NODE, Some(4), &opts(2))
            .await
            .unwrap();
        assert_eq!(
            (from_4.first_sequence, from_4.rows),
            (Some(4), 4),
            "4, its copy, 5 and 8"
        );
    }
}
