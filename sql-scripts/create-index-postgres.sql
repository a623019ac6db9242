-- Indexes for auditrecorddata. idx2 is SignServer's and EJBCA's; idx4 to idx8 serve the
-- documented searches (docs/API.md "GET /api/v1/events", measured in docs/PERFORMANCE.md
-- "Searches on 10,000,000 rows") and replace SignServer's idx3 ("timestamp" alone), whose work
-- idx4 does. On a table that already holds rows, CREATE INDEX CONCURRENTLY builds each without
-- blocking writes (docs/OPERATIONS.md "Upgrading").
CREATE UNIQUE INDEX auditrecorddata_idx2 ON auditrecorddata (nodeid, sequencenumber);
CREATE INDEX auditrecorddata_idx4 ON auditrecorddata ("timestamp", nodeid, sequencenumber);
CREATE INDEX auditrecorddata_idx5 ON auditrecorddata (nodeid, "timestamp", sequencenumber);
CREATE INDEX auditrecorddata_idx6 ON auditrecorddata (eventtype, "timestamp", nodeid, sequencenumber);
CREATE INDEX auditrecorddata_idx7 ON auditrecorddata (eventstatus, "timestamp", nodeid, sequencenumber);
CREATE INDEX auditrecorddata_idx8 ON auditrecorddata (authtoken, "timestamp", nodeid, sequencenumber);
