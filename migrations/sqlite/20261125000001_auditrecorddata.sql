-- AuditRecordData exactly as CESeCore has it (docs/FORMAT.md, spec section 1).
-- IF NOT EXISTS: auditseal can adopt a database SignServer already writes to.
CREATE TABLE IF NOT EXISTS AuditRecordData (
    pk                TEXT    NOT NULL PRIMARY KEY,
    nodeId            TEXT    NOT NULL,
    sequenceNumber    INTEGER NOT NULL,
    timeStamp         INTEGER NOT NULL,
    eventType         TEXT    NOT NULL,
    eventStatus       TEXT    NOT NULL,
    authToken         TEXT    NOT NULL,
    service           TEXT    NOT NULL,
    module            TEXT    NOT NULL,
    customId          TEXT,
    searchDetail1     TEXT,
    searchDetail2     TEXT,
    additionalDetails TEXT,
    rowVersion        INTEGER NOT NULL DEFAULT 0,
    rowProtection     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS auditrecorddata_idx2 ON AuditRecordData (nodeId, sequenceNumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx3 ON AuditRecordData (timeStamp);
