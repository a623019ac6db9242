-- auditseal / CESeCore audit table for PostgreSQL, for DBAs who create schemas by hand.
-- Same as migrations/postgres; the server also creates it on start (IF NOT EXISTS).
-- Identifiers are unquoted (lower-case), as in SignServer's own script.
CREATE TABLE auditrecorddata (
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

-- Batch statements of auditseal's batched log device (protection version 3, docs/FORMAT.md).
CREATE TABLE auditbatchdata (
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

-- Signed checkpoints and archive markers (docs/FORMAT.md section 7).
CREATE TABLE auditcheckpointdata (
    nodeid               TEXT NOT NULL,
    sequencenumber       INT8 NOT NULL,
    "timestamp"          INT8 NOT NULL,
    headhash             TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    keyid                INT4 NOT NULL,
    statementprotection  TEXT NOT NULL,
    PRIMARY KEY (nodeid, sequencenumber, kind)
);

-- API tokens (docs/FORMAT.md section 10): only the lower-case hex SHA-256 of each token is kept.
-- Whoever can write this table can use the API: grant write access as for the audit tables.
CREATE TABLE auditapitokendata (
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    tokenhash   TEXT NOT NULL,
    createtime  INT8 NOT NULL,
    revoketime  INT8,
    PRIMARY KEY (name),
    UNIQUE (tokenhash)
);

-- Each node's lease epoch (docs/FORMAT.md "Node leases"): incremented by whoever takes the
-- node's writer lock; every write transaction checks it, so a writer that lost its lock commits
-- nothing. The server needs it even when it may not create tables.
CREATE TABLE auditnodelease (
    nodeid  TEXT NOT NULL,
    epoch   INT8 NOT NULL,
    PRIMARY KEY (nodeid)
);

-- Event forwarding (docs/FORMAT.md section 12): where each sink stands on each node, the
-- sequence number of the last row it delivered. The server updates it after each delivery.
CREATE TABLE auditforwardposition (
    sinkname        TEXT NOT NULL,
    nodeid          TEXT NOT NULL,
    sequencenumber  INT8 NOT NULL,
    updatetime      INT8 NOT NULL,
    PRIMARY KEY (sinkname, nodeid)
);
