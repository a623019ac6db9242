use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use super::plan::valid_sd_id;
use super::*;
use crate::crypto::token::{HmacToken, SharedToken};
use crate::device::{LogDevice, NewEvent, SequentialDevice, sqlite_store, test_event};
use crate::format::details::Listing;

fn section(toml_text: &str) -> Result<Vec<Plan>, ForwardError> {
    let c: crate::config::FileConfig = toml::from_str(toml_text).expect("parses");
    plan(&c.forward, Path::new("/tmp"))
}

fn refused(toml_text: &str) -> String {
    match section(toml_text) {
        Ok(_) => panic!("accepted: {toml_text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn each_sink_is_checked_before_anything_starts() {
    let ok = section(
        "[[forward]]\nname = 'siem'\naddress = 'logs:514'\n\
         [[forward]]\nname = 'udp-1'\naddress = 'logs:514'\ntransport = 'udp'\n\
         [[forward]]\nname = 'file.a'\nfile = 'events.jsonl'\nformat = 'log4j'\nstart = 'beginning'\n",
    )
    .unwrap();
    let described: Vec<_> = ok.iter().map(|p| p.describe()).collect();
    assert_eq!(
        described,
        [
            "syslog tcp://logs:514",
            "syslog udp://logs:514",
            "file /tmp/events.jsonl"
        ]
    );
    for (conf, says) in [
        ("name = 'a'", "give either address"),
        ("name = 'a'\naddress = 'l:1'\nfile = 'f'", "not both"),
        ("name = 'a b'\nfile = 'f'", "name \"a b\""),
        ("name = ''\nfile = 'f'", "1 to 64"),
        (
            "name = 'a'\nfile = 'f'\ntransport = 'tcp'",
            "transport is a syslog setting",
        ),
        ("name = 'a'\naddress = 'logs'", "is not host:port"),
        (
            "name = 'a'\naddress = 'l:1'\ntransport = 'tls'",
            "needs ca_file",
        ),
        (
            "name = 'a'\naddress = 'l:1'\nca_file = 'ca.pem'",
            "need transport = \"tls\"",
        ),
        (
            "name = 'a'\naddress = 'l:1'\ntransport = 'udp'\nca_file = 'c'",
            "need transport",
        ),
        (
            "name = 'a'\naddress = 'l:1'\nsd_id = 'auditseal'",
            "sd_id \"auditseal\"",
        ),
        (
            "name = 'a'\naddress = 'l:1'\napp_name = 'a b'",
            "app_name \"a b\"",
        ),
    ] {
        let e = refused(&format!("[[forward]]\n{conf}\n"));
        assert!(e.contains(says), "{conf}: {e}");
        assert!(e.starts_with("forward[0]"), "{conf}: {e}");
    }
    let e = refused("[[forward]]\nname = 'a'\nfile = 'f'\n[[forward]]\nname = 'a'\nfile = 'g'\n");
    assert!(e.contains("forward[1]") && e.contains("taken"), "{e}");
    let e = toml::from_str::<crate::config::FileConfig>("[[forward]]\nname = 'a'\nadress = 'x'\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("adress"), "{e}");
    assert!(valid_sd_id("x@1.2.3") && !valid_sd_id("x@") && !valid_sd_id("@1"));
}

async fn store_and_device(dir: &tempfile::TempDir) -> (SharedStore, SequentialDevice) {
    let (_, store) = sqlite_store(dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let device = SequentialDevice::start(store.clone(), "n1".into(), Some(token))
        .await
        .unwrap();
    (store, device)
}

/// A batched device of node n1 (batches of up to 8 rows) on a new SQLite store in `dir`.
async fn store_and_batched_device(
    dir: &tempfile::TempDir,
) -> (SharedStore, crate::device::batched::BatchedDevice) {
    use crate::device::batched::{BatchedConfig, BatchedDevice};
    let (_, store) = sqlite_store(dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let cfg = BatchedConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(5),
        queue: 1000,
    };
    let device = BatchedDevice::start(store.clone(), "n1".into(), Some(token), cfg)
        .await
        .unwrap();
    (store, device)
}

fn file_plan(path: &Path, start: &str) -> Vec<Plan> {
    section(&format!(
        "[[forward]]\nname = 'f'\nfile = '{}'\nstart = '{start}'\n",
        path.display()
    ))
    .unwrap()
}

/// The sequence numbers in a JSON Lines sink file, in file order.
fn numbers_in(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<AuditRecord>(l)
                .unwrap()
                .sequence_number
        })
        .collect()
}

async fn until_forwarded(path: &Path, n: usize) -> Vec<i64> {
    for _ in 0..400 {
        let got = numbers_in(path);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("forwarded only {:?}", numbers_in(path));
}

#[tokio::test]
async fn every_row_goes_out_once_in_order_and_a_restart_goes_on_from_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let (store, device) = store_and_device(&dir).await;
    // Stored before the sink existed: `start = "now"` leaves them out.
    for i in 0..2 {
        device.append(test_event(i)).await.unwrap();
    }
    let f = Forwarding::start(file_plan(&out, "now"), "n1", store.clone())
        .await
        .unwrap();
    for i in 2..7 {
        device.append(test_event(i)).await.unwrap();
    }
    assert_eq!(until_forwarded(&out, 5).await, vec![2, 3, 4, 5, 6]);
    let stats = f.stats();
    f.close(Duration::from_secs(2)).await;
    assert_eq!(stats[0].1.forwarded.load(Ordering::Relaxed), 5);
    assert_eq!(store.forward_position("f", "n1").await.unwrap(), Some(6));

    // Stored while no sink ran: sent after the next start, `start` no longer matters.
    for i in 7..10 {
        device.append(test_event(i)).await.unwrap();
    }
    let f = Forwarding::start(file_plan(&out, "beginning"), "n1", store.clone())
        .await
        .unwrap();
    assert_eq!(until_forwarded(&out, 8).await, (2..10).collect::<Vec<_>>());
    f.close(Duration::from_secs(2)).await;
    // Each row exactly as stored.
    let first = std::fs::read_to_string(&out).unwrap();
    let row: AuditRecord = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(store.get(&row.pk).await.unwrap().unwrap(), row);
}

#[tokio::test]
async fn a_sink_that_cannot_deliver_keeps_its_rows_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("later");
    let out = missing.join("events.jsonl");
    let (store, device) = store_and_device(&dir).await;
    let f = Forwarding::start(file_plan(&out, "beginning"), "n1", store.clone())
        .await
        .unwrap();
    for i in 0..3 {
        device.append(test_event(i)).await.unwrap();
    }
    let stats = f.stats()[0].1.clone();
    for _ in 0..200 {
        if stats.failures.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stats.failures.load(Ordering::Relaxed) > 0);
    assert!(stats.lag_seconds(crate::format::time::now_millis() + 5000) >= 5.0);
    assert_eq!(store.forward_position("f", "n1").await.unwrap(), Some(-1));
    std::fs::create_dir(&missing).unwrap();
    // Ingestion never waited for the sink.
    device.append(test_event(3)).await.unwrap();
    assert_eq!(until_forwarded(&out, 4).await, vec![0, 1, 2, 3]);
    f.close(Duration::from_secs(2)).await;
    assert_eq!(stats.lag_seconds(crate::format::time::now_millis()), 0.0);
}

#[tokio::test]
async fn rows_missing_from_the_table_are_passed_after_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let (store, device) = store_and_device(&dir).await;
    for i in 0..4 {
        device.append(test_event(i)).await.unwrap();
    }
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM auditrecorddata WHERE sequencenumber = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    let f = Forwarding::start(file_plan(&out, "beginning"), "n1", store.clone())
        .await
        .unwrap();
    assert_eq!(until_forwarded(&out, 1).await, vec![0]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(numbers_in(&out), vec![0], "waits before passing a gap");
    let got = tokio::time::timeout(GAP_WAIT * 3, until_forwarded(&out, 3))
        .await
        .unwrap();
    assert_eq!(got, vec![0, 2, 3]);
    f.close(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn rows_handed_over_at_commit_go_out_as_stored_and_rows_before_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let (store, device) = store_and_batched_device(&dir).await;
    // Committed before the sink listens: only the database has them.
    device
        .append_all((0..5).map(test_event).collect())
        .await
        .unwrap();
    let f = Forwarding::start(file_plan(&out, "beginning"), "n1", store.clone())
        .await
        .unwrap();
    assert!(!device.wants_details_listings());
    device.listen_to_commits(f.commit_listener());
    // A JSON Lines sink makes nothing from the details maps: events are made without them.
    assert!(!device.wants_details_listings());
    for chunk in 0..6 {
        device
            .append_all((0..7).map(|i| test_event(5 + chunk * 7 + i)).collect())
            .await
            .unwrap();
    }
    assert_eq!(until_forwarded(&out, 47).await, (0..47).collect::<Vec<_>>());
    // The later rows were handed over, not read back.
    let handed: Vec<i64> = f
        .pages
        .committed
        .lock()
        .unwrap()
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| r.sequence_number))
        .collect();
    assert_eq!(handed, (5..47).collect::<Vec<_>>());
    f.close(Duration::from_secs(2)).await;
    // Every line is the row exactly as stored.
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let row: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(store.get(&row.pk).await.unwrap().unwrap(), row);
    }
}

#[tokio::test]
async fn rows_handed_over_with_their_details_listing_show_what_decoding_shows() {
    use crate::format::details::{self, DetailValue as V};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.log");
    let (store, device) = store_and_batched_device(&dir).await;
    let plans = section(&format!(
        "[[forward]]\nname = 'f'\nfile = '{}'\nformat = 'log4j'\n",
        out.display()
    ))
    .unwrap();
    let f = Forwarding::start(plans, "n1", store.clone()).await.unwrap();
    device.listen_to_commits(f.commit_listener());
    assert!(device.wants_details_listings());
    // Strings the Base64PutHashMap rule stores as `B64:` (and one that only looks encoded),
    // a repeated key, numbers, a nested map and list.
    let event = |n: usize| {
        let d: details::Details = vec![
            ("FILE".into(), V::String(format!("grüße-{n}.pdf"))),
            ("b64".into(), V::String("b64:aGVs\nbG8=".into())),
            ("n".into(), V::Long(n as i64 * 1_000_000_007)),
            ("x".into(), V::Double(0.1)),
            ("FILE".into(), V::String(format!("last-{n}"))),
            (
                "m".into(),
                V::Map(vec![("l".into(), V::List(vec![V::Null, V::Bool(true)]))]),
            ),
        ];
        let (xml, details_listing) = details::encode_listed(
            &d,
            details::MapClass::Base64PutHashMap,
            details::JAVA_VERSION,
        );
        NewEvent {
            additional_details: Some(xml),
            details_listing,
            ..test_event(n)
        }
    };
    for chunk in 0..3 {
        device
            .append_all((0..5).map(|i| event(chunk * 5 + i)).collect())
            .await
            .unwrap();
    }
    for _ in 0..400 {
        if std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            >= 15
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Handed over with their listings, so their lines were made from them.
    let kept: Vec<bool> = f
        .pages
        .committed
        .lock()
        .unwrap()
        .iter()
        .flat_map(|p| p.details_listings.iter().map(Listing::is_some))
        .collect();
    assert_eq!(kept, vec![true; 15]);
    f.close(Duration::from_secs(2)).await;
    let lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 15);
    // Each is the line decoding the stored row gives.
    let rows = store
        .read_node(crate::store::Chunk::new("n1", 0, None, 100))
        .await
        .unwrap();
    assert_eq!(rows.len(), 15);
    for (row, line) in rows.iter().zip(&lines) {
        assert_eq!(
            *line,
            message::log4j(row, &crate::format::details::Listing::default())
        );
    }
    assert!(lines[3].contains("FILE: last-3; b64: b64:aGVs bG8=; n: 3000000021; x: 0.1; "));
}

#[test]
fn a_sink_waits_for_more_rows_only_at_the_head() {
    let (page, now) = (super::pages::PAGE as usize, 1_700_000_000_000);
    // A full page of fresh rows: more are waiting, read on at once.
    assert!(!super::at_head(page, now - 10, now));
    // A short read of fresh rows: at the head, let more come.
    assert!(super::at_head(page - 1, now - 10, now));
    assert!(super::at_head(1, now - 999, now));
    // A short read of old rows: the node is quiet, nothing to gather.
    assert!(!super::at_head(1, now - 1000, now));
}
