//! Authentication and roles (docs/API.md "Authentication and roles"): the credentials the
//! server knows (API tokens, client certificates) and the first admin token. The checks on each
//! request are in `guard`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auditseal_core::access::{Role, token_hash};
use auditseal_core::store::{SharedStore, StoreError};

/// What the accept loop knows of a connection, put into each of its requests' extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// The subject DN of the client certificate the TLS handshake verified, normalised by
    /// `auditseal_core::access::normalize_dn`; None over plain HTTP or without a certificate.
    pub client_subject: Option<String>,
}

/// Tokens are re-read from the database this often, so a token revoked with
/// `auditseal-db token` (or on another node) is refused within it.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(2);

/// An unknown token makes the table be re-read, at most this often (a new token works at once,
/// after at most this wait; a flood of bad tokens costs one query per interval).
const MISS_REFRESH: Duration = Duration::from_millis(250);

/// The additionalDetails key, reserved to the server, that records who submitted an event.
pub const SUBMITTER_KEY: &str = "auditseal.submitter";

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `token:<name>` or `cert:<subject DN>`: recorded in events, shown in logs.
    pub name: String,
    pub role: Role,
}

/// How requests are authenticated: API tokens (from the database, held in memory and re-read
/// in the background) and client certificate subjects (from configuration).
pub struct Auth {
    store: SharedStore,
    /// Replaced whole by a reload (SIGHUP).
    certs: std::sync::RwLock<HashMap<String, Role>>,
    /// Valid tokens by hash: (name, role). Requests only read it.
    tokens: std::sync::RwLock<HashMap<String, (String, Role)>>,
    /// Held while the table is read: when the last read began, and whether it succeeded.
    reload: tokio::sync::Mutex<Option<(Instant, bool)>>,
    failures: AtomicU64,
    /// `failures` by reason, in the order of `FAILURE_REASONS`.
    failures_by: [AtomicU64; FAILURE_REASONS.len()],
    forbidden: AtomicU64,
}

/// Why a request had no valid credentials (401), as the metrics label them.
pub const FAILURE_REASONS: [&str; 4] = [
    "no_credentials",
    "bad_authorization_header",
    "unknown_token",
    "unmapped_certificate",
];

impl Auth {
    /// Reads the tokens once (an unreachable database stops the start-up here) and re-reads
    /// them every `TOKEN_REFRESH` from then on, for as long as the returned `Auth` lives.
    /// `certs`: client certificate subject DNs, normalised (`access::certificate_roles`), and
    /// their roles.
    pub async fn start(
        store: SharedStore,
        certs: HashMap<String, Role>,
    ) -> Result<std::sync::Arc<Self>, StoreError> {
        let auth = std::sync::Arc::new(Auth {
            store,
            certs: std::sync::RwLock::new(certs),
            tokens: Default::default(),
            reload: Default::default(),
            failures: AtomicU64::new(0),
            failures_by: Default::default(),
            forbidden: AtomicU64::new(0),
        });
        auth.reload(None, Duration::ZERO).await?;
        let weak = std::sync::Arc::downgrade(&auth);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_REFRESH).await;
                let Some(auth) = weak.upgrade() else { break };
                match auth.reload(None, Duration::ZERO).await {
                    // Also how the end of an outage is noticed when no request comes.
                    Ok(()) => crate::outage::DATABASE.answered(),
                    // The tokens read last stay in force; requests that need the database fail.
                    // Logged as part of the outage, not every TOKEN_REFRESH.
                    Err(e) => crate::outage::DATABASE.failed(&e),
                }
            }
        });
        Ok(auth)
    }

    /// Replaces the client certificate subjects and their roles (a reload).
    pub fn set_certificate_roles(&self, certs: HashMap<String, Role>) {
        *self.certs.write().unwrap_or_else(|e| e.into_inner()) = certs;
    }

    /// Reads the API tokens again now (a reload).
    pub async fn reload_tokens(&self) -> Result<(), StoreError> {
        self.reload(None, Duration::ZERO).await
    }

    /// Requests refused for lack of valid credentials (401) since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Requests refused for lack of valid credentials (401) since start, by reason (each of
    /// `FAILURE_REASONS`).
    pub fn failures_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURE_REASONS
            .iter()
            .zip(&self.failures_by)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }

    /// Requests refused because the caller's role does not allow them (403) since start.
    pub fn forbidden(&self) -> u64 {
        self.forbidden.load(Ordering::Relaxed)
    }

    /// Counts a request refused for lack of valid credentials, for the reason at `which` in
    /// `FAILURE_REASONS`; the total so far.
    pub(crate) fn count_failure(&self, which: usize) -> u64 {
        self.failures_by[which].fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a request refused for its role; the total so far.
    pub(crate) fn count_forbidden(&self) -> u64 {
        self.forbidden.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn cached(&self, hash: &str) -> Option<Identity> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.get(hash).map(|(name, role)| Identity {
            name: format!("token:{name}"),
            role: *role,
        })
    }

    /// The identity a bearer token stands for, or None when it is unknown or revoked. A token
    /// not in memory makes the table be read again, by a read that starts after this call (at
    /// most one every `MISS_REFRESH`), so a token just made on another node works at once.
    pub async fn token(&self, secret: &str) -> Result<Option<Identity>, StoreError> {
        let hash = token_hash(secret);
        if let Some(id) = self.cached(&hash) {
            return Ok(Some(id));
        }
        self.reload(Some(Instant::now()), MISS_REFRESH).await?;
        Ok(self.cached(&hash))
    }

    /// Re-reads the token table, one reader at a time and at most one read per `min_gap`
    /// (waiting for the gap to pass). With `since`, a read that began at or after it (by another
    /// caller) is taken as this one's.
    async fn reload(&self, since: Option<Instant>, min_gap: Duration) -> Result<(), StoreError> {
        let mut last = self.reload.lock().await;
        if let (Some(since), Some((began, ok))) = (since, *last)
            && began >= since
        {
            return if ok {
                Ok(())
            } else {
                Err(StoreError::Unavailable(
                    "the API token table could not be read".into(),
                ))
            };
        }
        if let Some((began, _)) = *last {
            let gap = began.elapsed();
            if gap < min_gap {
                tokio::time::sleep(min_gap - gap).await;
            }
        }
        let began = Instant::now();
        let read = self.store.tokens().await;
        *last = Some((began, read.is_ok()));
        let by_hash = read?
            .into_iter()
            .filter(|t| t.revoked.is_none())
            .filter_map(|t| Some((t.token_hash.clone(), (t.name.clone(), t.role()?))))
            .collect();
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = by_hash;
        Ok(())
    }

    /// Whether `id` is still accepted, for requests that last (live follow): a token not
    /// revoked since (as of the last re-read, at most `TOKEN_REFRESH` ago); a certificate's role
    /// is fixed by configuration.
    pub fn still_valid(&self, id: &Identity) -> bool {
        let Some(name) = id.name.strip_prefix("token:") else {
            return true;
        };
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|(n, r)| n == name && *r == id.role)
    }

    /// Re-reads the tokens now, after a change made through this server, so that it takes
    /// effect here at once. The change is already committed: a failed re-read only delays it
    /// to the next background one (at most `TOKEN_REFRESH`), so it is a warning, not an error.
    pub async fn refresh(&self) {
        if let Err(e) = self.reload(Some(Instant::now()), Duration::ZERO).await {
            tracing::warn!(error = %e, "cannot re-read the API tokens now; the change takes \
                effect at the next re-read");
        }
    }

    /// The role configured for a client certificate subject (already normalised).
    pub fn certificate(&self, subject: &str) -> Option<Identity> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        certs.get(subject).map(|role| Identity {
            name: format!("cert:{subject}"),
            role: *role,
        })
    }
}

/// Why the first admin token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot read or store API tokens: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create a token: {0}")]
    Token(#[from] auditseal_core::access::AccessError),
    #[error("cannot write {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotLogged(String),
}

/// The file the first admin token is written to.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// When no valid API token exists and no client certificate is mapped to a role, creates an
/// admin token, logs its TOKEN_CREATE event on `device` (authToken `auditseal-server`) and
/// writes it, alone on one line, to `<data_dir>/admin.token` (mode 0600), so the server is
/// never open and the quick start still needs no set-up. Returns the token's name and the file
/// when it made one; if the event cannot be logged, no token stays valid and no file is left.
pub async fn bootstrap_admin_token(
    store: &SharedStore,
    device: &dyn auditseal_core::device::LogDevice,
    data_dir: &std::path::Path,
    certificates_configured: bool,
) -> Result<Option<(String, std::path::PathBuf)>, BootstrapError> {
    use auditseal_core::access::{CreateError, create_logged, new_token};
    if certificates_configured {
        return Ok(None);
    }
    let tokens = store.tokens().await?;
    if tokens
        .iter()
        .any(|t| t.revoked.is_none() && t.role().is_some())
    {
        return Ok(None);
    }
    // Names stay taken when revoked: admin, then admin-2, admin-3, ...
    let mut name = "admin".to_string();
    for i in 2.. {
        if !tokens.iter().any(|t| t.name == name) {
            break;
        }
        name = format!("admin-{i}");
    }
    let (secret, record) = new_token(&name, Role::Admin, auditseal_core::time::now_millis())?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    // The file first: a token nobody can read would lock everyone out.
    auditseal_core::files::write_private(&path, format!("{secret}\n").as_bytes()).map_err(
        |source| BootstrapError::File {
            path: path.clone(),
            source,
        },
    )?;
    let mut details = serde_json::Map::new();
    details.insert("name".into(), name.clone().into());
    details.insert("role".into(), Role::Admin.as_str().into());
    details.insert("file".into(), path.display().to_string().into());
    let logged = create_logged(store.as_ref(), &record, async || {
        let event = auditseal_core::device::NewEvent::system(
            "TOKEN_CREATE",
            true,
            "auditseal-server",
            &details,
        )
        .map_err(|e| e.to_string())?;
        device
            .append(event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    match logged {
        Ok(()) => Ok(Some((name, path))),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            match e {
                // Another node of the cluster made its own first token at the same moment.
                CreateError::Conflict => Ok(None),
                CreateError::Store(e) => Err(e.into()),
                e @ CreateError::NotLogged(_) => Err(BootstrapError::NotLogged(e.to_string())),
            }
        }
    }
}
