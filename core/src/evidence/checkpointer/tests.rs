//! The checkpointer against a SQLite log: folds, archives and rows deleted underneath it.

use std::sync::Arc;

use super::*;
use crate::crypto::token::HmacToken;
use crate::device::{LogDevice, SequentialDevice, sqlite_store, test_event};
use crate::format::checkpoint::KIND_ARCHIVE;

/// A SQLite log in a temporary directory, whose node "n" has rows 0..=4 from a sequential
/// device keyed by an HMAC key of keyid 3.
struct Node {
    _dir: tempfile::TempDir,
    url: String,
    store: SharedStore,
    token: SharedToken,
    device: SequentialDevice,
}

async fn node_of_5_rows() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = sqlite_store(&dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let device = SequentialDevice::start(store.clone(), "n".into(), Some(token.clone()))
        .await
        .unwrap();
    for i in 0..5 {
        device.append(test_event(i)).await.unwrap();
    }
    Node {
        _dir: dir,
        url,
        store,
        token,
        device,
    }
}

async fn checkpointer(store: &SharedStore, token: &SharedToken) -> Checkpointer {
    Checkpointer::start(store.clone(), token.clone(), "n".into(), Sinks::default())
        .await
        .unwrap()
}

/// verifylog over the whole store with key 3 finds `rows` rows, no error and `checkpoints`
/// checkpoints of node "n".
async fn assert_verifies(store: &SharedStore, token: &SharedToken, rows: u64, checkpoints: u64) {
    let mut ring = crate::crypto::keys::KeyRing::new();
    ring.insert(3, token.verify_key());
    let rep = crate::verify::verify_log(
        store,
        &Arc::new(ring),
        &crate::verify::Selection::All,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (rep.rows, rep.errors, rep.nodes[0].checkpoints),
        (rows, 0, checkpoints),
        "{rep}"
    );
}

/// Node "n"'s rows from sequence number `from` (up to 100).
async fn rows_from(store: &SharedStore, from: i64) -> Vec<crate::format::record::AuditRecord> {
    store
        .read_node(Chunk::new("n", from, None, 100))
        .await
        .unwrap()
}

/// Issue 12.7: a row deleted below the newest checkpoint was never seen again (only the
/// rows after that checkpoint are read), and the next checkpoint vouched for the log.
#[tokio::test]
async fn no_checkpoint_after_a_row_below_the_newest_one_was_deleted() {
    let Node {
        _dir,
        url,
        store,
        token,
        device,
    } = node_of_5_rows().await;
    let mut cp = checkpointer(&store, &token).await;
    assert_eq!(cp.run_once().await.unwrap().unwrap().sequence_number, 4);
    let side = crate::store::SqliteStore::connect(&url).await.unwrap();
    sqlx::raw_sql("DELETE FROM auditrecorddata WHERE sequencenumber = 2")
        .execute(side.pool())
        .await
        .unwrap();
    for i in 5..8 {
        device.append(test_event(i)).await.unwrap();
    }
    assert_eq!(cp.run_once().await.unwrap(), None);
    assert_eq!(
        store
            .last_checkpoint("n")
            .await
            .unwrap()
            .unwrap()
            .sequence_number,
        4
    );
}

/// Issue 12.3: a node whose newest checkpoint is of fold 1 (an older release's) gets
/// checkpoints of fold 2 from then on, folded again from the node's start; old and new
/// verify.
#[tokio::test]
async fn after_a_fold_1_checkpoint_the_next_is_of_fold_2_and_both_verify() {
    let Node {
        _dir,
        store,
        token,
        device,
        ..
    } = node_of_5_rows().await;
    // What an older release wrote: fold 1, `1:` first.
    let rows = rows_from(&store, 0).await;
    let mut old = Head::default().in_fold(Layout::Text);
    rows.iter().for_each(|r| old.push(r));
    let c1 = Checkpoint::sign(token.as_ref(), "n", &old, 1, KIND_CHECKPOINT).unwrap();
    assert!(c1.statement_protection.starts_with("1:1:3:"), "{c1:?}");
    store.insert_checkpoint(&c1).await.unwrap();
    for i in 5..8 {
        device.append(test_event(i)).await.unwrap();
    }
    let mut cp = checkpointer(&store, &token).await;
    let c2 = cp.run_once().await.unwrap().unwrap();
    assert_eq!(c2.sequence_number, 7);
    assert_eq!(c2.layout(), Layout::Canonical);
    assert!(c2.statement_protection.starts_with("2:1:3:"), "{c2:?}");
    assert_verifies(&store, &token, 8, 2).await;
}

/// An older release's archive marker (fold 1): the rows after it chain onto its head hash
/// in fold 2, and the marker and the new checkpoint both verify.
#[tokio::test]
async fn after_a_fold_1_archive_marker_fold_2_goes_on_from_its_head_hash() {
    let Node {
        _dir,
        store,
        token,
        device,
        ..
    } = node_of_5_rows().await;
    let rows = rows_from(&store, 0).await;
    let mut old = Head::default().in_fold(Layout::Text);
    rows.iter().for_each(|r| old.push(r));
    let marker = Checkpoint::sign(token.as_ref(), "n", &old, 1, KIND_ARCHIVE).unwrap();
    assert!(marker.statement_protection.starts_with("1:1:3:"));
    assert_eq!(store.archive_node(&marker, 0, 5).await.unwrap(), 5);
    for i in 5..8 {
        device.append(test_event(i)).await.unwrap();
    }
    let mut cp = checkpointer(&store, &token).await;
    let c = cp.run_once().await.unwrap().unwrap();
    assert_eq!((c.sequence_number, c.layout()), (7, Layout::Canonical));
    let mut want = old.in_fold(Layout::Canonical);
    rows_from(&store, 5).await.iter().for_each(|r| want.push(r));
    assert_eq!(c.head_hash, hex::encode(want.hash));
    assert_verifies(&store, &token, 3, 1).await;
}

#[tokio::test]
async fn goes_on_after_an_archive_deleted_rows_it_had_not_folded_in() {
    let Node {
        _dir,
        store,
        token,
        device,
        ..
    } = node_of_5_rows().await;
    let mut cp = checkpointer(&store, &token).await;
    assert_eq!(cp.run_once().await.unwrap().unwrap().sequence_number, 4);
    for i in 5..10 {
        device.append(test_event(i)).await.unwrap();
    }
    // Rows 0..=7 archived (as `auditseal-db archive` does: marker, then deletion).
    let rows = rows_from(&store, 0).await;
    let mut head = Head::default();
    rows[..8].iter().for_each(|r| head.push(r));
    let marker = Checkpoint::sign(token.as_ref(), "n", &head, 1, KIND_ARCHIVE).unwrap();
    store.archive_node(&marker, 0, 8).await.unwrap();

    let c = cp
        .run_once()
        .await
        .unwrap()
        .expect("a checkpoint after the archive");
    let mut all = Head::default();
    rows.iter().for_each(|r| all.push(r));
    assert_eq!(c.sequence_number, 9);
    assert_eq!(c.head_hash, hex::encode(all.hash));
}

/// The batched device hands each commit's leaves to the writer: its checkpoint covers every
/// row without reading one back, and is the one a fold of the stored rows gives.
#[tokio::test]
async fn a_batched_devices_commits_are_folded_from_their_leaves_without_reading_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = sqlite_store(&dir).await;
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let cfg = crate::device::batched::BatchedConfig {
        max_batch: 16,
        max_wait: Duration::from_millis(5),
        queue: 1000,
    };
    let device = Arc::new(
        crate::device::batched::BatchedDevice::start(
            store.clone(),
            "n".into(),
            Some(token.clone()),
            cfg,
        )
        .await
        .unwrap(),
    );
    let mut cp = checkpointer(&store, &token).await;
    device.hand_leaves_to(cp.leaf_listener());
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let d = device.clone();
            tokio::spawn(async move { d.append(test_event(i)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    device
        .append_all((0..40).map(test_event).collect())
        .await
        .unwrap();
    let c = cp.run_once().await.unwrap().unwrap();
    assert_eq!(c.sequence_number, 99);
    assert_eq!(
        cp.folded_rows,
        FoldedRows {
            read_back: 0,
            handed: 100
        }
    );
    let mut want = Head::default();
    rows_from(&store, 0).await.iter().for_each(|r| want.push(r));
    assert_eq!(want.sequence_number, 99);
    assert_eq!(c.head_hash, hex::encode(want.hash));
    assert_verifies(&store, &token, 100, 1).await;
}
