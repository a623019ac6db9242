-- Indexes for the documented searches (docs/API.md "GET /api/v1/events": time range, event type,
-- status, node, who), measured in docs/PERFORMANCE.md "Searches on 10,000,000 rows". Each ends
-- with the order key (timestamp, nodeid, sequencenumber), so a search on its first column, with
-- or without a time range and a cursor, walks the index in the page's order and stops at the
-- limit, and a count of it reads the index only. idx4 replaces idx3 (timestamp alone): it serves
-- every search idx3 did, and also orders the rows that share a timestamp (a batch).
-- On a large table each CREATE INDEX blocks writes while it builds: docs/OPERATIONS.md
-- "Upgrading" says how to build them beforehand with CREATE INDEX CONCURRENTLY.
CREATE INDEX IF NOT EXISTS auditrecorddata_idx4 ON auditrecorddata ("timestamp", nodeid, sequencenumber);
DROP INDEX IF EXISTS auditrecorddata_idx3;
CREATE INDEX IF NOT EXISTS auditrecorddata_idx5 ON auditrecorddata (nodeid, "timestamp", sequencenumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx6 ON auditrecorddata (eventtype, "timestamp", nodeid, sequencenumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx7 ON auditrecorddata (eventstatus, "timestamp", nodeid, sequencenumber);
CREATE INDEX IF NOT EXISTS auditrecorddata_idx8 ON auditrecorddata (authtoken, "timestamp", nodeid, sequencenumber);
