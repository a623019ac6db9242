-- Batch statements of the batched log device (docs/FORMAT.md, "Version 3").
CREATE TABLE IF NOT EXISTS auditbatchdata (
    nodeid               TEXT NOT NULL,
    firstsequencenumber  INT8 NOT NULL,
    lastsequencenumber   INT8 NOT NULL,
    "timestamp"          INT8 NOT NULL,
    merkleroot           TEXT NOT NULL,
    previoushash         TEXT NOT NULL,
    keyid                INT4 NOT NULL,
    statementprotection  TEXT NOT NULL,
    PRIMARY KEY (nodeid, firstsequencenumber)
);
