-- API tokens (docs/API.md "Authentication and roles"): only the SHA-256 of each token is kept.
CREATE TABLE IF NOT EXISTS auditapitokendata (
    name        TEXT NOT NULL PRIMARY KEY,
    role        TEXT NOT NULL,
    tokenhash   TEXT NOT NULL UNIQUE,
    createtime  INT8 NOT NULL,
    revoketime  INT8
);
