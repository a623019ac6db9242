-- Each node's lease epoch (docs/FORMAT.md "Node leases"): incremented by whoever takes the
-- node's writer lock; every write transaction checks it, so a writer that lost its lock
-- commits nothing.
CREATE TABLE IF NOT EXISTS auditnodelease (
    nodeid  TEXT NOT NULL PRIMARY KEY,
    epoch   INTEGER NOT NULL
);
