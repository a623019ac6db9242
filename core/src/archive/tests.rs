//! Segments of either head-hash fold.

use std::sync::Arc;

use super::*;
use crate::crypto::keys::KeyRing;
use crate::crypto::protector;
use crate::crypto::token::{CryptoToken, HmacToken, SharedToken};
use crate::device::{LogDevice, SequentialDevice, test_event};
use crate::format::checkpoint::{Checkpoint, Head, KIND_ARCHIVE};
use crate::format::protection::Layout;

/// Rewrites a segment as an older release wrote it: each node's endHead and marker in
/// fold 1, the file signed again.
fn as_fold_1(dir: &Path, token: &dyn CryptoToken) {
    let path = dir.join(SEGMENT_FILE);
    let mut out = String::new();
    let mut head = Head::default();
    for text in std::fs::read_to_string(&path).unwrap().lines() {
        let mut line: Line = serde_json::from_str(text).unwrap();
        match &mut line {
            Line::Start {
                first_sequence,
                start_head,
                ..
            } => {
                head = Head {
                    sequence_number: *first_sequence - 1,
                    hash: hex::decode(start_head).unwrap().try_into().unwrap(),
                    fold: Layout::Text,
                }
            }
            Line::Row(r) => head.push(r),
            Line::Node(s) => {
                s.end_head = hex::encode(head.hash);
                let m = &s.marker;
                s.marker =
                    Checkpoint::sign(token, &m.node_id, &head, m.time_stamp, KIND_ARCHIVE).unwrap();
            }
            _ => {}
        }
        out.push_str(&serde_json::to_string(&line).unwrap());
        out.push('\n');
    }
    std::fs::write(&path, &out).unwrap();
    let sig = protector::protect_bytes(token, out.as_bytes()).unwrap();
    std::fs::write(dir.join(SIGNATURE_FILE), format!("{sig}\n")).unwrap();
}

/// Segments are written in fold 2; an older release's segment (fold 1) still verifies, and
/// each is checked in the fold its markers name.
#[tokio::test]
async fn segments_of_either_fold_verify_in_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = crate::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
    let mut keys = KeyRing::new();
    keys.insert(3, token.verify_key());
    let device = SequentialDevice::start(store.clone(), "n".into(), Some(token.clone()))
        .await
        .unwrap();
    for i in 0..4 {
        device.append(test_event(i)).await.unwrap();
    }
    let seg = dir.path().join("seg");
    let w = write_segment(store.as_ref(), &keys, token.as_ref(), i64::MAX, &seg)
        .await
        .unwrap();
    assert_eq!(w.nodes[0].marker.layout(), Layout::Canonical);
    let rep = verify_segment(&seg, &keys).unwrap();
    assert_eq!((rep.rows, rep.errors.len()), (4, 0), "{:?}", rep.errors);

    as_fold_1(&seg, token.as_ref());
    let rep = verify_segment(&seg, &keys).unwrap();
    assert_eq!(rep.nodes[0].marker.layout(), Layout::Text);
    assert_eq!((rep.rows, rep.errors.len()), (4, 0), "{:?}", rep.errors);
}
