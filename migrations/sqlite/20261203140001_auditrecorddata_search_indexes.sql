-- Indexes for the documented searches (docs/API.md "GET /api/v1/events": time range, event type,
-- status, node, who), measured in docs/PERFORMANCE.md "Searches on 10,000,000 rows". Each ends
-- with the order key (timeStamp, nodeId, sequenceNumber), so a search on its first column, with
-- or without a time range and a cursor, walks the index in the page's order and stops at the
-- limit, and a count of it reads the index only. idx4 replaces idx3 (timeStamp alone).
CREATE INDEX IF NOT EXISTS auditrecorddata_idx4 ON AuditRecordData (timeStamp, nodeId, sequenceNumber);
DROP INDEX IF EXISTS auditrecorddata_idx3;
CREATE INDEX IF NOT EXISTS auditrecorddata_idx5 ON AuditRecordData (nodeId, timeStamp, sequenceNumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx6 ON AuditRecordData (eventType, timeStamp, nodeId, sequenceNumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx7 ON AuditRecordData (eventStatus, timeStamp, nodeId, sequenceNumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx8 ON AuditRecordData (authToken, timeStamp, nodeId, sequenceNumber);
