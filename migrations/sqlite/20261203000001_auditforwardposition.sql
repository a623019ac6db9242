-- Event forwarding (docs/FORMAT.md section 12): where each sink stands on each node, the
-- sequence number of the last row it delivered. The server updates it after each delivery.
CREATE TABLE IF NOT EXISTS auditforwardposition (
    sinkname        TEXT NOT NULL,
    nodeid          TEXT NOT NULL,
    sequencenumber  INTEGER NOT NULL,
    updatetime      INTEGER NOT NULL,
    PRIMARY KEY (sinkname, nodeid)
);
