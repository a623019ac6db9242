//! The rows the sinks deliver: handed over by the batched device at each commit, or read back
//! from the database, and shared between sinks with each row's text made once per format.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::ForwardFormat;
use crate::format::details::Listing;
use crate::format::record::AuditRecord;
use crate::store::Chunk;
use crate::store::{SharedStore, StoreError};

use super::message;

/// Most rows read and handed to a sink at once.
pub(super) const PAGE: i64 = 1000;

/// How long a page read for one sink is handed to the others that ask for the same rows.
const PAGE_REUSE: Duration = Duration::from_millis(500);

/// A page of rows as read for the sinks, with each row's text in the formats sinks asked for,
/// made once for all of them.
pub(super) struct Page {
    /// The bytes its rows take as stored, and their details listings, for the pages' memory
    /// bound.
    bytes: usize,
    /// When it was read.
    at: tokio::time::Instant,
    pub(super) rows: Vec<AuditRecord>,
    /// The rows' details listings made at ingestion (`NewEvent::details_listing`), in row
    /// order, when the device handed them over with the rows (`CommitListener`); empty for
    /// rows read from the database.
    pub(super) details_listings: Vec<Listing>,
    json: OnceLock<Vec<String>>,
    log4j: OnceLock<Vec<String>>,
}

impl Page {
    /// A page of `rows`, with their details listings (in row order) or none.
    fn new(rows: Vec<AuditRecord>, details_listings: Vec<Listing>) -> Page {
        // A list that does not match the rows one to one is not used (the lines decode).
        debug_assert!(details_listings.is_empty() || details_listings.len() == rows.len());
        let details_listings = if details_listings.len() == rows.len() {
            details_listings
        } else {
            Vec::new()
        };
        Page {
            bytes: rows.iter().map(AuditRecord::stored_bytes).sum::<usize>()
                + details_listings.iter().map(Listing::bytes).sum::<usize>(),
            at: tokio::time::Instant::now(),
            rows,
            details_listings,
            json: OnceLock::new(),
            log4j: OnceLock::new(),
        }
    }

    /// Where the row numbered `n` is (rows are in (sequenceNumber, pk) order).
    fn find(&self, n: i64) -> Option<usize> {
        let i = self.rows.partition_point(|r| r.sequence_number < n);
        self.rows
            .get(i)
            .is_some_and(|r| r.sequence_number == n)
            .then_some(i)
    }

    /// Each row's text in `format` (`message::text`, with the row's details listing when
    /// there is one); made at the first call, on a forwarding worker.
    pub(super) fn texts(&self, format: ForwardFormat) -> &[String] {
        let cell = match format {
            ForwardFormat::Json => &self.json,
            ForwardFormat::Log4j => &self.log4j,
        };
        cell.get_or_init(|| {
            let none = Listing::default();
            self.rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let listing = self.details_listings.get(i).unwrap_or(&none);
                    message::text(format, r, listing)
                })
                .collect()
        })
    }
}

/// Most bytes of rows the recent pages keep (each page is within `READ_BUDGET_BYTES` already):
/// huge rows must not make the cache hold many pages of them.
const PAGES_MAX_BYTES: usize = 2 * crate::store::READ_BUDGET_BYTES as usize;

/// Most bytes of rows the pages handed over at commit keep: about a second of the batched
/// device's fastest ingestion; a sink further behind reads from the database.
const COMMITTED_MAX_BYTES: usize = 4 * crate::store::READ_BUDGET_BYTES as usize;

/// Consecutive rows for a sink: parts of pages, in sequence order.
pub(super) type Rows = Vec<(Arc<Page>, Range<usize>)>;

/// The node's rows as the sinks read them, shared. The batched device hands each commit's rows
/// over once they are committed (`CommitListener`); rows that are not among those (the
/// sequential device's, rows of another process, a sink behind by more than
/// `COMMITTED_MAX_BYTES`) are read back from the database, and sinks at the same position get
/// one read between them. Either way a sink sees only committed rows.
pub(super) struct Pages {
    store: SharedStore,
    node: String,
    /// Pages read from the database recently, for reuse.
    recent: tokio::sync::Mutex<VecDeque<Arc<Page>>>,
    /// Pages handed over at commit, oldest first.
    pub(super) committed: std::sync::Mutex<VecDeque<Arc<Page>>>,
    /// Whether a sink writes the Log4j line, the only text made with the details listings.
    log4j: bool,
}

impl crate::device::CommitListener for Pages {
    fn wants_details_listings(&self) -> bool {
        self.log4j
    }

    fn committed(&self, rows: Vec<AuditRecord>, details_listings: Vec<Listing>) {
        if rows.first().is_none_or(|r| r.node_id != self.node) {
            return;
        }
        let page = Arc::new(Page::new(rows, details_listings));
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        committed.push_back(page);
        let mut bytes: usize = committed.iter().map(|p| p.bytes).sum();
        while committed.len() > 1 && bytes > COMMITTED_MAX_BYTES {
            bytes -= committed.pop_front().map_or(0, |p| p.bytes);
        }
    }
}

impl Pages {
    /// `log4j`: a sink writes the Log4j line (`CommitListener::wants_details_listings`).
    pub(super) fn new(store: SharedStore, node: &str, log4j: bool) -> Pages {
        Pages {
            store,
            node: node.to_string(),
            recent: Default::default(),
            committed: Default::default(),
            log4j,
        }
    }

    /// Up to `PAGE` rows from `from` on (see `Store::read_node`): from the pages handed over at
    /// commit when they hold `from` (with the consecutive pages after it), else from a page
    /// read for another sink in the last `PAGE_REUSE` that holds `from`, else from the
    /// database.
    pub(super) async fn read(&self, from: i64) -> Result<Rows, StoreError> {
        if let Some(rows) = self.handed_over(from) {
            return Ok(rows);
        }
        // Held across the read: a sink asking for the same rows waits for them instead of
        // reading them again.
        let mut recent = self.recent.lock().await;
        recent.retain(|p| p.at.elapsed() < PAGE_REUSE);
        for page in recent.iter().rev() {
            if let Some(i) = page.find(from) {
                return Ok(vec![(page.clone(), i..page.rows.len())]);
            }
        }
        let page = Arc::new(Page::new(
            self.store
                .read_node(Chunk::new(&self.node, from, None, PAGE))
                .await?,
            Vec::new(),
        ));
        // An empty page is not kept: the rows may be there at the next look.
        if !page.rows.is_empty() {
            recent.push_back(page.clone());
            while recent.len() > 1
                && recent.iter().map(|p| p.bytes).sum::<usize>() > PAGES_MAX_BYTES
            {
                recent.pop_front();
            }
        }
        let all = 0..page.rows.len();
        Ok(vec![(page, all)])
    }

    /// The handed-over rows from `from` on, up to `PAGE` of them, if a page holds `from`.
    fn handed_over(&self, from: i64) -> Option<Rows> {
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let at = committed.iter().position(|p| p.find(from).is_some())?;
        let mut rows: Rows = Vec::new();
        let (mut next, mut count) = (from, 0);
        for page in committed.iter().skip(at) {
            let Some(i) = page.find(next) else { break };
            let end = page.rows.len().min(i + (PAGE as usize - count));
            rows.push((page.clone(), i..end));
            count += end - i;
            next = page.rows[end - 1].sequence_number + 1;
            if count >= PAGE as usize {
                break;
            }
        }
        Some(rows)
    }
}
