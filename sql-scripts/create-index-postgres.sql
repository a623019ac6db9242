-- Indexes for auditrecorddata (identical to SignServer's and EJBCA's recommendation).
CREATE UNIQUE INDEX auditrecorddata_idx2 ON auditrecorddata (nodeid, sequencenumber);
CREATE INDEX auditrecorddata_idx3 ON auditrecorddata ("timestamp");
