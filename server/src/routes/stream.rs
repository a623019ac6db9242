//! `GET /api/v1/events/stream`: live follow as Server-Sent Events. Every committed row that
//! matches the criteria is sent once, in sequence order per node; each event's id is the
//! follower's position in every node, so a reconnecting client that sends it back as
//! `Last-Event-ID` resumes exactly where it stopped (docs/API.md).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use auditseal_core::record::AuditRecord;
use auditseal_core::store::{Criterion, Field, Op};
use auditseal_core::verify::{Batches, verify_row};

use crate::error::ApiError;
use crate::routes::events::row_json;
use crate::state::AppState;

/// How often the database is asked for new rows.
const POLL: Duration = Duration::from_millis(200);
/// Rows read per node per round trip.
const PAGE: i64 = 500;
/// The stream is sent in chunks of at most this many bytes...
const CHUNK: usize = 64 << 10;
/// ...and at most this many chunks wait for the connection (4 MiB): a follower's memory stays
/// flat whatever its rows hold.
const BUFFERED_CHUNKS: usize = 64;
/// A comment is sent when nothing else was for this long.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The follower's position: per node, the last sequence number already sent.
type Positions = BTreeMap<String, i64>;

/// `node=seq` pairs, node ids percent-encoded, joined with `,`: the SSE event id.
fn encode_positions(p: &Positions) -> String {
    p.iter()
        .map(|(n, s)| {
            format!(
                "{}={s}",
                form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_positions(s: &str) -> Result<Positions, String> {
    let mut out = Positions::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (node, seq) = part
            .rsplit_once('=')
            .ok_or_else(|| format!("{part:?} is not node=sequence"))?;
        let node: String = form_urlencoded::parse(format!("n={node}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let seq = seq
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= -1)
            .ok_or_else(|| format!("{part:?}: the sequence number is not an integer >= -1"))?;
        if node.is_empty() {
            return Err(format!("{part:?}: empty node id"));
        }
        if node.contains('\0') {
            return Err(format!("{part:?}: the node id contains a NUL character"));
        }
        out.insert(node, seq);
    }
    Ok(out)
}

/// Only `criteria=` parameters (as for `GET /api/v1/events`).
fn parse_criteria(raw: Option<&str>) -> Result<Vec<Criterion>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "criteria" => out.push(
                v.parse::<Criterion>()
                    .map_err(|e| ApiError::bad_request(format!("criteria {v:?}: {e}")))?,
            ),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}; the stream takes only criteria"
                )));
            }
        }
    }
    Ok(out)
}

struct Follow {
    /// Who follows: the stream ends when this identity is no longer accepted.
    who: crate::auth::Identity,
    state: AppState,
    criteria: Vec<Criterion>,
    positions: Positions,
    /// Per node, the last sequence number already read (matched or skipped by the criteria).
    scanned: Positions,
    /// Rows read but not sent yet, oldest first.
    pending: VecDeque<(AuditRecord, Value)>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Follow {
    /// Reads the rows after the position of every node (new nodes from their first row).
    async fn poll(&mut self) {
        let nodes = match self.state.reader.nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "live follow: cannot read the nodes; retrying");
                return;
            }
        };
        for node in nodes {
            // Rows up to the node's head as read now: every one of them is either matched (and
            // queued) or skipped by this read, so the next poll starts after the head even when
            // nothing matched (a rare filter does not rescan the same rows five times a second).
            let head = match self.state.reader.head(&node).await {
                Ok(h) => h.next_sequence - 1,
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "live follow: read failed; retrying");
                    continue;
                }
            };
            let sent = *self.positions.entry(node.clone()).or_insert(-1);
            let after = sent.max(self.scanned.get(&node).copied().unwrap_or(-1));
            if head <= after {
                continue;
            }
            let mut criteria = self.criteria.clone();
            let (Ok(n), Ok(gt), Ok(le)) = (
                Criterion::new(Field::NodeId, Op::Eq, Some(&node)),
                Criterion::new(Field::SequenceNumber, Op::Gt, Some(&after.to_string())),
                Criterion::new(Field::SequenceNumber, Op::Le, Some(&head.to_string())),
            ) else {
                continue;
            };
            criteria.extend([n, gt, le]);
            let (rows, cut) = match self.state.reader.export_page(&criteria, None, PAGE).await {
                Ok(p) => (p.rows, p.cut),
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "live follow: read failed; retrying");
                    continue;
                }
            };
            // A short page read everything up to the head; a full one, or one the read budget
            // cut, goes on after its last row.
            let upto = if (rows.len() as i64) < PAGE && !cut {
                head
            } else {
                rows.last().map_or(after, |r| r.sequence_number)
            };
            self.scanned.insert(node, upto);
            let checks = self.verification(&rows).await;
            self.pending.extend(rows.into_iter().zip(checks));
        }
    }

    /// Each row's verification result (flagged, never failing the stream).
    async fn verification(&self, rows: &[AuditRecord]) -> Vec<Value> {
        if !self.state.policy.enable_verify {
            return vec![Value::Null; rows.len()];
        }
        let mut batches = Batches::default();
        if let Err(e) = batches
            .load_for(self.state.reader.as_ref(), &self.state.keys, rows)
            .await
        {
            tracing::warn!(error = %e, "live follow: cannot load batch statements");
        }
        rows.iter()
            .map(|r| match verify_row(&self.state.keys, &batches, r) {
                Ok(()) => json!({ "valid": true }),
                Err(reason) => json!({ "valid": false, "reason": reason.to_string() }),
            })
            .collect()
    }

    fn closing(&self) -> bool {
        self.state.closing.load(Ordering::SeqCst)
    }
}

pub async fn stream(
    crate::guard::Auditor(who): crate::guard::Auditor,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let criteria = parse_criteria(raw.as_deref())?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))
                .and_then(|s| {
                    decode_positions(s)
                        .map_err(|e| ApiError::bad_request(format!("Last-Event-ID: {e}")))
                })?,
        ),
    };
    let permit = state.followers.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_followers",
            format!(
                "{} followers are connected, the most this server allows \
                 (server.max_followers); try again later",
                state.max_followers
            ),
        )
    })?;
    // Without Last-Event-ID: from now on. With it: exactly after it; nodes it does not name
    // appeared after it was issued, so all their rows are new.
    let positions = match resume {
        Some(p) => p,
        None => {
            let mut p = Positions::new();
            for node in state.reader.nodes().await? {
                let head = state.reader.head(&node).await?;
                p.insert(node, head.next_sequence - 1);
            }
            p
        }
    };
    let follow = Follow {
        who,
        state,
        criteria,
        positions,
        scanned: Positions::new(),
        pending: VecDeque::new(),
        _permit: permit,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_CHUNKS);
    tokio::spawn(follow.run(tx));
    let mut rx = rx;
    let body =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok::<_, Infallible>)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The connection's end of the channel closed, or the client took nothing for `send_timeout`.
#[derive(Debug)]
enum Gone {
    Closed,
    Stalled,
}

/// Writes one event's bytes into the channel in chunks of at most `CHUNK` bytes, as they are
/// produced, so that a row is never held whole as text: the follower's memory is the row it
/// read plus what the channel holds. Runs on a blocking thread (serde writes synchronously);
/// each chunk waits at most `limit` for room.
struct Chunks {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    limit: Duration,
    handle: tokio::runtime::Handle,
    gone: Option<Gone>,
}

impl Chunks {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let sent = self
            .handle
            .block_on(tokio::time::timeout(self.limit, self.tx.send(chunk)));
        let gone = match sent {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => Gone::Closed,
            Err(_) => Gone::Stalled,
        };
        self.gone = Some(gone);
        Err(std::io::Error::other("the follower's connection is gone"))
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_chunk()
    }
}

/// One SSE event, `event: audit`, its `id` and the row as JSON on one `data:` line (compact JSON
/// has no line break: a line break inside a value is written `\n`).
fn write_event(w: &mut Chunks, id: &str, row: &Value) -> Result<(), Gone> {
    use std::io::Write;
    let gone = |w: &mut Chunks| w.gone.take().unwrap_or(Gone::Closed);
    let written = write!(w, "event: audit\nid: {id}\ndata: ")
        .map_err(serde_json::Error::io)
        .and_then(|()| serde_json::to_writer(&mut *w, row))
        .and_then(|()| w.write_all(b"\n\n").map_err(serde_json::Error::io))
        .and_then(|()| w.flush().map_err(serde_json::Error::io));
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.is_io() => Err(gone(w)),
        Err(e) => {
            tracing::error!(error = %e, "live follow: a row could not be written as JSON; ended");
            Err(Gone::Closed)
        }
    }
}

impl Follow {
    /// Sends every matching row, in order, until the client goes (its end of the channel
    /// dropped), the server stops, the follower's token is revoked (checked before every
    /// event), or the client takes nothing for `send_timeout`. Then the task ends, and with it
    /// the follower's place and the stream. It runs on its own, not inside the response body,
    /// because a connection whose client stopped reading (an HTTP/2 stream without flow-control
    /// window) never polls its body again: only this task can notice and give the place back.
    async fn run(mut self, tx: mpsc::Sender<Bytes>) {
        let limit = self.state.send_timeout;
        let mut chunks = Some(Chunks {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            limit,
            handle: tokio::runtime::Handle::current(),
            gone: None,
        });
        let mut last_sent = Instant::now();
        loop {
            if self.closing() || !self.state.auth.still_valid(&self.who) {
                return;
            }
            if let Some((r, verification)) = self.pending.pop_front() {
                self.positions.insert(r.node_id.clone(), r.sequence_number);
                let id = encode_positions(&self.positions);
                let Some(mut w) = chunks.take() else { return };
                // The row becomes JSON on a blocking thread, written out as it is produced.
                let done = tokio::task::spawn_blocking(move || {
                    let sent = write_event(&mut w, &id, &row_json(r, verification));
                    (w, sent)
                })
                .await;
                match done {
                    Ok((w, Ok(()))) => {
                        chunks = Some(w);
                        last_sent = Instant::now();
                        continue;
                    }
                    Ok((_, Err(Gone::Stalled))) => {
                        tracing::warn!(identity = %self.who.name, seconds = limit.as_secs(),
                            "live follower took nothing of its stream; ended (server.send_timeout_secs)");
                        return;
                    }
                    Ok((_, Err(Gone::Closed))) | Err(_) => return,
                }
            }
            if last_sent.elapsed() >= KEEP_ALIVE {
                // A comment keeps proxies from closing an idle connection; a full channel
                // already has something for the client to read.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send(Bytes::from_static(b": keep-alive\n\n"))
                {
                    return;
                }
                last_sent = Instant::now();
            }
            // A client that goes ends the task at once, so its place is free for its reconnect.
            tokio::select! {
                _ = tx.closed() => return,
                _ = async {
                    self.poll().await;
                    if self.pending.is_empty() {
                        tokio::time::sleep(POLL).await;
                    }
                } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_any_node_id() {
        let mut p = Positions::new();
        p.insert("node-a".into(), 17);
        p.insert("odd,=%id ü".into(), -1);
        let s = encode_positions(&p);
        assert!(!s.contains('\n'));
        assert_eq!(decode_positions(&s).unwrap(), p);
        assert!(decode_positions("a=x").is_err());
        assert!(decode_positions("a").is_err());
        assert!(decode_positions("a%00=1").is_err());
        assert!(decode_positions("=5").is_err());
        assert_eq!(decode_positions("").unwrap(), Positions::new());
    }
}
