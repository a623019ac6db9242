-- Indexes for AuditRecordData on MariaDB / MySQL. idx2 is SignServer's and EJBCA's; idx4 to idx8
-- serve the documented searches (docs/API.md "GET /api/v1/events") and replace SignServer's
-- idx3 (timeStamp alone), whose work idx4 does.
CREATE UNIQUE INDEX auditrecorddata_idx2 ON AuditRecordData (nodeId, sequenceNumber);
CREATE INDEX auditrecorddata_idx4 ON AuditRecordData (timeStamp, nodeId, sequenceNumber);
CREATE INDEX auditrecorddata_idx5 ON AuditRecordData (nodeId, timeStamp, sequenceNumber);
CREATE INDEX auditrecorddata_idx6 ON AuditRecordData (eventType, timeStamp, nodeId, sequenceNumber);
CREATE INDEX auditrecorddata_idx7 ON AuditRecordData (eventStatus, timeStamp, nodeId, sequenceNumber);
CREATE INDEX auditrecorddata_idx8 ON AuditRecordData (authToken, timeStamp, nodeId, sequenceNumber);
