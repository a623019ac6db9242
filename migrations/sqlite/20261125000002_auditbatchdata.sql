-- Batch statements of the batched log device (docs/FORMAT.md, "Version 3").
CREATE TABLE IF NOT EXISTS AuditBatchData (
    nodeId               TEXT    NOT NULL,
    firstSequenceNumber  INTEGER NOT NULL,
    lastSequenceNumber   INTEGER NOT NULL,
    timeStamp            INTEGER NOT NULL,
    merkleRoot           TEXT    NOT NULL,
    previousHash         TEXT    NOT NULL,
    keyId                INTEGER NOT NULL,
    statementProtection  TEXT    NOT NULL,
    PRIMARY KEY (nodeId, firstSequenceNumber)
);
