-- Signed checkpoints of each node's head hash, and archive markers (docs/FORMAT.md section 7).
CREATE TABLE IF NOT EXISTS auditcheckpointdata (
    nodeid               TEXT NOT NULL,
    sequencenumber       INT8 NOT NULL,
    "timestamp"          INT8 NOT NULL,
    headhash             TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    keyid                INT4 NOT NULL,
    statementprotection  TEXT NOT NULL,
    PRIMARY KEY (nodeid, sequencenumber, kind)
);
