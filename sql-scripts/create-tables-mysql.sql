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
