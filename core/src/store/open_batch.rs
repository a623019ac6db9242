//! A batch written and not yet committed (`Store::begin_batch`).

use super::StoreError;

/// A batch inserted in a transaction that is still open (`Store::begin_batch`). Dropped without
/// `commit`, it is rolled back: its connection is closed, never returned to the pool.
#[async_trait::async_trait]
pub trait OpenBatch: Send {
    /// Commits the transaction. An error leaves its outcome unknown (the commit may have
    /// landed): the caller reads the head again.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
