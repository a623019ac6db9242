-- AuditRecordData exactly as CESeCore has it (docs/FORMAT.md, spec section 1). Identifiers are
-- unquoted (so lower-case) as in SignServer's PostgreSQL script; "timestamp" is quoted as there.
-- IF NOT EXISTS: auditseal can adopt a database SignServer already writes to.
CREATE TABLE IF NOT EXISTS auditrecorddata (
    pk                TEXT NOT NULL,
    nodeid            TEXT NOT NULL,
    sequencenumber    INT8 NOT NULL,
    "timestamp"       INT8 NOT NULL,
    eventtype         TEXT NOT NULL,
    eventstatus       TEXT NOT NULL,
    authtoken         TEXT NOT NULL,
    service           TEXT NOT NULL,
    module            TEXT NOT NULL,
    customid          TEXT,
    searchdetail1     TEXT,
    searchdetail2     TEXT,
    additionaldetails TEXT,
    rowversion        INT4 NOT NULL DEFAULT 0,
    rowprotection     TEXT,
    PRIMARY KEY (pk)
);
CREATE UNIQUE INDEX IF NOT EXISTS auditrecorddata_idx2 ON auditrecorddata (nodeid, sequencenumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx3 ON auditrecorddata ("timestamp");
