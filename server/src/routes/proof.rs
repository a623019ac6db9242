//! `GET /api/v1/events/{pk}/proof`: what a row's protection rests on. For a batched row
//! (protection version 3 or 4) its batch statement and its inclusion proof, followed to the root
//! the verifier compares with the statement's (docs/API.md; docs/FORMAT.md section 6).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use auditseal_core::protection::RowProtection;
use auditseal_core::verify::{Batches, inclusion, verify_row};

use crate::error::ApiError;
use crate::guard::Auditor;
use crate::state::AppState;

/// `{"valid": true}` or `{"valid": false, "reason": ...}`, as rows' `verification` reads.
fn verdict<E: std::fmt::Display>(r: Result<(), E>) -> Value {
    match r {
        Ok(()) => json!({ "valid": true }),
        Err(reason) => json!({ "valid": false, "reason": reason.to_string() }),
    }
}

pub async fn proof(
    _: Auditor,
    State(state): State<AppState>,
    Path(pk): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = super::events::stored_row(&state, &pk).await?;
    let mut batches = Batches::default();
    batches
        .load_for(
            state.reader.as_ref(),
            &state.keys,
            std::slice::from_ref(&row),
        )
        .await?;
    let verify = state.policy.enable_verify;
    let mut out = json!({
        "pk": row.pk,
        "nodeId": row.node_id,
        "sequenceNumber": row.sequence_number,
        "protectionVersion": null,
        "keyid": null,
        "batched": false,
        "inclusion": null,
        "statement": null,
        "verification": if verify { verdict(verify_row(&state.keys, &batches, &row)) } else { Value::Null },
    });
    let parsed = row.row_protection.as_deref().map(RowProtection::parse);
    let Some(Ok(p)) = parsed else {
        // No protection, or one that does not parse: `verification` says which.
        return Ok(Json(out));
    };
    out["protectionVersion"] = json!(p.version.number());
    out["keyid"] = json!(p.keyid);
    if !p.version.is_batch() {
        return Ok(Json(out));
    }
    out["batched"] = json!(true);
    match inclusion(&row, &p) {
        Ok(inc) => {
            let (root, root_error) = match &inc.root {
                Ok(h) => (json!(hex::encode(h)), Value::Null),
                Err(e) => (Value::Null, json!(e)),
            };
            out["inclusion"] = json!({
                "firstSequenceNumber": inc.first_sequence_number,
                "treeSize": inc.tree_size,
                "leafIndex": inc.index,
                "leafHash": hex::encode(inc.leaf),
                "path": inc.proof.iter().map(hex::encode).collect::<Vec<_>>(),
                "root": root,
                "rootError": root_error,
            });
            if let Some((b, checked)) = batches.checked(&row.node_id, inc.first_sequence_number) {
                out["statement"] = json!({
                    "nodeId": b.node_id,
                    "firstSequenceNumber": b.first_sequence_number,
                    "lastSequenceNumber": b.last_sequence_number,
                    "timeStamp": b.time_stamp,
                    "merkleRoot": b.merkle_root,
                    "previousHash": b.previous_hash,
                    "keyId": b.key_id,
                    "statementProtection": b.statement_protection,
                    "layout": b.layout().number(),
                    "statementHash": b.statement_hash(),
                    "verification": if verify { verdict(checked) } else { Value::Null },
                });
            }
        }
        Err(e) => out["inclusionError"] = json!(e.to_string()),
    }
    Ok(Json(out))
}
