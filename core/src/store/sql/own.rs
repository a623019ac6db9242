//! A pool connection taken for one write.

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use crate::store::StoreError;

/// A connection of its own for one write, closed instead of returned to the pool unless the
/// write succeeded ([`Own::keep`]): after SQLITE_FULL or an I/O error inside a transaction,
/// SQLite may have rolled the transaction back by itself or kept it open, and the driver's idea
/// of it can be wrong; a later statement on that connection could then run inside a transaction
/// nobody commits (answered, never stored), or hold the database locked for every other
/// connection. A new connection replaces it.
pub(crate) struct Own<DB: Database> {
    conn: Option<PoolConnection<DB>>,
    kept: bool,
}

impl<DB: Database> Own<DB> {
    pub(crate) async fn acquire(pool: &Pool<DB>) -> Result<Self, StoreError> {
        Ok(Own {
            conn: Some(pool.acquire().await?),
            kept: false,
        })
    }

    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        self.conn.as_mut().expect("present until dropped")
    }

    /// The write succeeded: the connection goes back to the pool.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl<DB: Database> Drop for Own<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.kept
        {
            drop(conn.detach());
        }
    }
}
