use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::crypto::keys::{KeyRing, VerifyKey};
use crate::crypto::token::{Algorithm, CryptoToken, HmacToken, SharedToken};
use crate::store::Chunk;
use crate::verify::{Selection, verify_log};
use test_event as event;

/// An event for the devices' unit tests (search_detail1 = n).
pub(crate) fn test_event(n: usize) -> NewEvent {
    NewEvent {
        event_type: "PROCESS".into(),
        event_status: "SUCCESS".into(),
        auth_token: "test".into(),
        service: "SIGNSERVER".into(),
        module: "WORKER".into(),
        custom_id: None,
        search_detail1: Some(n.to_string()),
        search_detail2: None,
        additional_details: None,
        pk: None,
        details_listing: Default::default(),
    }
}

/// An HMAC token that can be switched off, as an HSM that goes away.
struct Flaky {
    inner: HmacToken,
    down: AtomicBool,
}

impl CryptoToken for Flaky {
    fn keyid(&self) -> i32 {
        self.inner.keyid()
    }
    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TokenError::Unavailable(
                "token switched off by the test".into(),
            ));
        }
        self.inner.sign(data)
    }
    fn verify_key(&self) -> VerifyKey {
        self.inner.verify_key()
    }
    fn describe(&self) -> String {
        "flaky test token".into()
    }
}

#[tokio::test]
async fn signing_and_database_failures_give_the_number_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = crate::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let token = Arc::new(Flaky {
        inner: HmacToken::new(3, b"secret"),
        down: AtomicBool::new(false),
    });
    let device = SequentialDevice::start(store.clone(), "n1".into(), Some(token.clone()))
        .await
        .unwrap();
    assert_eq!(device.append(event(0)).await.unwrap().sequence_number, 0);

    token.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let e = device.append(event(99)).await.unwrap_err();
        assert!(
            matches!(e, DeviceError::Token(TokenError::Unavailable(_))),
            "{e}"
        );
    }
    token.down.store(false, Ordering::SeqCst);
    assert_eq!(device.append(event(1)).await.unwrap().sequence_number, 1);

    // A row the database refuses (a trigger stands in for a failing database).
    crate::store::SqliteStore::connect(&url)
        .await
        .unwrap()
        .pool()
        .execute_raw(
            "CREATE TRIGGER refuse BEFORE INSERT ON auditrecorddata \
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
        )
        .await;
    assert!(matches!(
        device.append(event(98)).await,
        Err(DeviceError::Store(_))
    ));
    crate::store::SqliteStore::connect(&url)
        .await
        .unwrap()
        .pool()
        .execute_raw("DROP TRIGGER refuse")
        .await;
    assert_eq!(device.append(event(2)).await.unwrap().sequence_number, 2);

    let mut ring = KeyRing::new();
    ring.insert(3, token.verify_key());
    let report = verify_log(
        &store,
        &std::sync::Arc::new(ring.clone()),
        &Selection::All,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!((report.rows, report.errors), (3, 0), "{report}");
}

/// A migrated SQLite store in `dir`, and its URL.
pub(crate) async fn sqlite_store(dir: &tempfile::TempDir) -> (String, crate::store::SharedStore) {
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = crate::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    (url, store)
}

/// Issue 11.1: once an archive removed every row of a node, its numbering goes on after the
/// archive marker (it restarted at 0, reusing numbers the next archive deleted unread).
#[tokio::test]
async fn a_head_never_goes_back_after_an_archive_removed_every_row() {
    use crate::format::checkpoint::{Checkpoint, Head, KIND_ARCHIVE};
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = sqlite_store(&dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let device = SequentialDevice::start(store.clone(), "idle".into(), Some(token.clone()))
        .await
        .unwrap();
    for i in 0..5 {
        device.append(event(i)).await.unwrap();
    }
    drop(device);
    let rows = store
        .read_node(Chunk::new("idle", 0, None, 100))
        .await
        .unwrap();
    let mut head = Head::default();
    rows.iter().for_each(|r| head.push(r));
    let marker = Checkpoint::sign(token.as_ref(), "idle", &head, 1, KIND_ARCHIVE).unwrap();

    // A count that is not the rows' changes nothing.
    let e = store.archive_node(&marker, 0, 4).await.unwrap_err();
    assert!(
        matches!(e, crate::store::StoreError::Inconsistent(_)),
        "{e}"
    );
    assert_eq!(row_count(&store, "idle").await, 5);
    assert!(store.archive_base("idle").await.unwrap().is_none());

    assert_eq!(store.archive_node(&marker, 0, 5).await.unwrap(), 5);
    assert!(
        store
            .read_node(Chunk::new("idle", 0, None, 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.head("idle").await.unwrap().next_sequence, 5);
    let device = SequentialDevice::start(store.clone(), "idle".into(), Some(token))
        .await
        .unwrap();
    assert_eq!(device.append(event(5)).await.unwrap().sequence_number, 5);
}

/// Issue 11.3: a writer whose lock was taken over commits nothing, even before it notices.
#[tokio::test]
async fn a_writer_whose_lease_was_taken_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = sqlite_store(&dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let device = SequentialDevice::start(store.clone(), "n".into(), Some(token))
        .await
        .unwrap();
    device.append(event(0)).await.unwrap();
    // What another process does when it takes the node over.
    crate::store::SqliteStore::connect(&url)
        .await
        .unwrap()
        .pool()
        .execute_raw("UPDATE auditnodelease SET epoch = epoch + 1 WHERE nodeid = 'n'")
        .await;
    for events in [vec![event(1)], vec![event(2), event(3)]] {
        let e = device.append_all(events).await.unwrap_err();
        assert!(matches!(e, DeviceError::LockLost(_)), "{e}");
    }
    assert_eq!(row_count(&store, "n").await, 1);
}

/// A client pk that another node stores between this device's look-up and its insert (two
/// retries of one event reaching two nodes at once) is not the node's log gone wrong: the
/// retry gets the stored row. Numbers someone else took are: the node refuses events.
#[tokio::test]
async fn a_pk_race_is_pending_and_taken_numbers_are_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = sqlite_store(&dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let device = SequentialDevice::start(store.clone(), "n".into(), Some(token))
        .await
        .unwrap();
    device.append(event(0)).await.unwrap();
    let pk = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string();
    let other = NewEvent {
        pk: Some(pk.clone()),
        ..event(1)
    }
    .into_record("other", 0, 0);
    store
        .insert_batch(
            &[other],
            None,
            &store.lock_node("other").await.unwrap().fence(),
        )
        .await
        .unwrap();
    let flag = std::sync::OnceLock::new();
    let e = refused(
        store.as_ref(),
        "n",
        std::slice::from_ref(&pk),
        "x".into(),
        &flag,
    )
    .await;
    assert!(matches!(&e, DeviceError::PkPending(p) if *p == pk), "{e}");
    assert!(flag.get().is_none());
    let e = refused(store.as_ref(), "n", &[], "x".into(), &flag).await;
    assert!(matches!(&e, DeviceError::Inconsistent(_)), "{e}");
    assert!(flag.get().is_some());

    // Through the device: someone writes row 1 of this node behind its back.
    crate::store::SqliteStore::connect(&url)
        .await
        .unwrap()
        .pool()
        .execute_raw(
            "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", \
             eventtype, eventstatus, authtoken, service, module, rowversion) \
             VALUES ('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'n', 1, 0, 'FORGED', 'SUCCESS', \
             'x', 'x', 'x', 0)",
        )
        .await;
    for n in 2..4 {
        let e = device.append(event(n)).await.unwrap_err();
        assert!(matches!(e, DeviceError::Inconsistent(_)), "{e}");
    }
    assert!(device.inconsistent().is_some());
    assert_eq!(row_count(&store, "n").await, 2);
}

/// Test-only shorthand for running DDL on a pool.
trait ExecRaw {
    async fn execute_raw(&self, sql: &'static str);
}

impl ExecRaw for sqlx::SqlitePool {
    async fn execute_raw(&self, sql: &'static str) {
        sqlx::raw_sql(sql).execute(self).await.unwrap();
    }
}

/// How many rows `node` has (up to 100).
async fn row_count(store: &crate::store::SharedStore, node: &str) -> usize {
    store
        .read_node(Chunk::new(node, 0, None, 100))
        .await
        .unwrap()
        .len()
}
