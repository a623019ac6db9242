-- Indexes for AuditRecordData on MariaDB / MySQL (identical to SignServer's and EJBCA's).
CREATE UNIQUE INDEX auditrecorddata_idx2 ON AuditRecordData (nodeId, sequenceNumber);
CREATE INDEX auditrecorddata_idx3 ON AuditRecordData (timeStamp);
