-- auditseal / CESeCore audit table for MariaDB / MySQL, for DBAs who create schemas by hand.
-- Column types as in SignServer's MySQL script. auditseal itself talks to PostgreSQL and SQLite;
-- this script is for sites whose SignServer writes to MariaDB and whose logs are later copied.
CREATE TABLE AuditRecordData (
    pk                VARCHAR(250) BINARY NOT NULL,
    additionalDetails LONGTEXT,
    authToken         VARCHAR(250) BINARY NOT NULL,
    customId          VARCHAR(250) BINARY,
    eventStatus       VARCHAR(250) BINARY NOT NULL,
    eventType         VARCHAR(250) BINARY NOT NULL,
    module            VARCHAR(250) BINARY NOT NULL,
    nodeId            VARCHAR(250) BINARY NOT NULL,
    rowProtection     LONGTEXT,
    rowVersion        INT(11) NOT NULL,
    searchDetail1     VARCHAR(250) BINARY,
    searchDetail2     VARCHAR(250) BINARY,
    sequenceNumber    BIGINT(20) NOT NULL,
    service           VARCHAR(250) BINARY NOT NULL,
    timeStamp         BIGINT(20) NOT NULL,
    PRIMARY KEY (pk)
);

-- Batch statements of auditseal's batched log device (protection version 3, docs/FORMAT.md).
CREATE TABLE AuditBatchData (
    nodeId               VARCHAR(250) BINARY NOT NULL,
    firstSequenceNumber  BIGINT(20) NOT NULL,
    lastSequenceNumber   BIGINT(20) NOT NULL,
    timeStamp            BIGINT(20) NOT NULL,
    merkleRoot           VARCHAR(64) NOT NULL,
    previousHash         VARCHAR(64) NOT NULL,
    keyId                INT(11) NOT NULL,
    statementProtection  LONGTEXT NOT NULL,
    PRIMARY KEY (nodeId, firstSequenceNumber)
);

-- Signed checkpoints and archive markers (docs/FORMAT.md section 7).
CREATE TABLE AuditCheckpointData (
    nodeId               VARCHAR(250) BINARY NOT NULL,
    sequenceNumber       BIGINT(20) NOT NULL,
    timeStamp            BIGINT(20) NOT NULL,
    headHash             VARCHAR(64) NOT NULL,
    kind                 VARCHAR(16) NOT NULL,
    keyId                INT(11) NOT NULL,
    statementProtection  LONGTEXT NOT NULL,
    PRIMARY KEY (nodeId, sequenceNumber, kind)
);

-- API tokens (docs/FORMAT.md section 10): only the lower-case hex SHA-256 of each token is kept.
-- Whoever can write this table can use the API: grant write access as for the audit tables.
CREATE TABLE AuditApiTokenData (
    name                 VARCHAR(64) BINARY NOT NULL,
    role                 VARCHAR(16) NOT NULL,
    tokenHash            VARCHAR(64) NOT NULL,
    createTime           BIGINT(20) NOT NULL,
    revokeTime           BIGINT(20),
    PRIMARY KEY (name),
    UNIQUE KEY auditapitokendata_tokenhash (tokenHash)
);

-- Each node's lease epoch (docs/FORMAT.md "Node leases"): incremented by whoever takes the
-- node's writer lock; every write transaction checks it, so a writer that lost its lock commits
-- nothing.
CREATE TABLE AuditNodeLease (
    nodeId               VARCHAR(250) BINARY NOT NULL,
    epoch                BIGINT(20) NOT NULL,
    PRIMARY KEY (nodeId)
);

-- Event forwarding (docs/FORMAT.md section 12): where each sink stands on each node, the
-- sequence number of the last row it delivered. The server updates it after each delivery.
CREATE TABLE AuditForwardPosition (
    sinkName             VARCHAR(64) BINARY NOT NULL,
    nodeId               VARCHAR(250) BINARY NOT NULL,
    sequenceNumber       BIGINT(20) NOT NULL,
    updateTime           BIGINT(20) NOT NULL,
    PRIMARY KEY (sinkName, nodeId)
);
