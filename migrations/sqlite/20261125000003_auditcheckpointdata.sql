-- Signed checkpoints of each node's head hash, and archive markers (docs/FORMAT.md section 7).
CREATE TABLE IF NOT EXISTS auditcheckpointdata (
    nodeid               TEXT NOT NULL,
    sequencenumber       INTEGER NOT NULL,
    "timestamp"          INTEGER NOT NULL,
    headhash             TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    keyid                INTEGER NOT NULL,
    statementprotection  TEXT NOT NULL,
    PRIMARY KEY (nodeid, sequencenumber, kind)
);
