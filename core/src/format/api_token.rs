//! A row of `AuditApiTokenData` and the roles it grants (docs/API.md "Authentication and
//! roles"; creating and checking tokens is `access`).

/// What an authenticated caller may do. `admin` may do everything the other two may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Adds events, nothing else (a signer).
    Ingest,
    /// Queries, verifies, exports and follows the log.
    Auditor,
    /// Everything, including key and token management.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn grants(self, needed: Role) -> bool {
        self == needed || self == Role::Admin
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: ingest, auditor or admin"))
    }
}

/// One stored token: its name, role, and hash; never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    pub name: String,
    pub role: String,
    #[sqlx(rename = "tokenhash")]
    pub token_hash: String,
    /// Epoch milliseconds.
    #[sqlx(rename = "createtime")]
    pub created: i64,
    /// Epoch milliseconds; None while the token is valid.
    #[sqlx(rename = "revoketime")]
    pub revoked: Option<i64>,
}

impl ApiToken {
    /// The stored role; a value no release writes reads as no role at all.
    pub fn role(&self) -> Option<Role> {
        self.role.parse().ok()
    }
}
