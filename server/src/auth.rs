//! Authentication and roles (docs/API.md "Authentication and roles").

use std::net::SocketAddr;

/// What the accept loop knows of a connection, put into each of its requests' extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// The subject DN of the client certificate the TLS handshake verified, normalised by
    /// `auditseal_core::access::normalize_dn`; None over plain HTTP or without a certificate.
    pub client_subject: Option<String>,
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use auditseal_core::access::{Role, normalize_dn, token_hash};
use auditseal_core::store::{SharedStore, StoreError};

use crate::error::ApiError;
use crate::state::AppState;

/// Tokens are re-read from the database at least this often, so a token created or revoked
/// with `auditseal-db token` (or on another node) takes effect within it.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(2);

/// An unknown token re-reads the table at most this often (a new token works at once; a flood
/// of bad tokens costs one query per interval).
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

/// How requests are authenticated: API tokens (from the database, cached) and client
/// certificate subjects (from configuration).
pub struct Auth {
    store: SharedStore,
    certs: HashMap<String, Role>,
    cache: tokio::sync::RwLock<TokenCache>,
    reload: tokio::sync::Mutex<()>,
    failures: AtomicU64,
    forbidden: AtomicU64,
}

#[derive(Default)]
struct TokenCache {
    /// Valid tokens by hash: (name, role).
    by_hash: HashMap<String, (String, Role)>,
    loaded: Option<Instant>,
}

impl TokenCache {
    fn age(&self) -> Option<Duration> {
        self.loaded.map(|t| t.elapsed())
    }
}

impl Auth {
    /// `certs`: client certificate subject DNs (any spelling `normalize_dn` accepts) and roles.
    pub fn new(store: SharedStore, certs: impl IntoIterator<Item = (String, Role)>) -> Self {
        Auth {
            store,
            certs: certs
                .into_iter()
                .map(|(dn, r)| (normalize_dn(&dn), r))
                .collect(),
            cache: Default::default(),
            reload: Default::default(),
            failures: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
        }
    }

    /// Requests refused for lack of valid credentials (401) since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Requests refused because the caller's role does not allow them (403) since start.
    pub fn forbidden(&self) -> u64 {
        self.forbidden.load(Ordering::Relaxed)
    }

    /// The identity a bearer token stands for, or None when it is unknown or revoked.
    pub async fn token(&self, secret: &str) -> Result<Option<Identity>, StoreError> {
        let hash = token_hash(secret);
        let found = |c: &TokenCache| {
            c.by_hash.get(&hash).map(|(name, role)| Identity {
                name: format!("token:{name}"),
                role: *role,
            })
        };
        {
            let c = self.cache.read().await;
            match c.age() {
                Some(age) if age < TOKEN_REFRESH => {
                    if let Some(id) = found(&c) {
                        return Ok(Some(id));
                    }
                    if age < MISS_REFRESH {
                        return Ok(None);
                    }
                }
                _ => {}
            }
        }
        self.reload().await?;
        Ok(found(&*self.cache.read().await))
    }

    /// Re-reads the token table; one reader at a time, and not again if another just did.
    async fn reload(&self) -> Result<(), StoreError> {
        let _one = self.reload.lock().await;
        if self
            .cache
            .read()
            .await
            .age()
            .is_some_and(|a| a < MISS_REFRESH)
        {
            return Ok(());
        }
        let tokens = self.store.tokens().await?;
        let by_hash = tokens
            .into_iter()
            .filter(|t| t.revoked.is_none())
            .filter_map(|t| Some((t.token_hash.clone(), (t.name.clone(), t.role()?))))
            .collect();
        *self.cache.write().await = TokenCache {
            by_hash,
            loaded: Some(Instant::now()),
        };
        Ok(())
    }

    /// Whether `id` is still accepted, for requests that last (live follow): a token that has
    /// not been revoked since (the table is re-read at most every `TOKEN_REFRESH`); a
    /// certificate's role is fixed by configuration. A database error counts as still valid:
    /// the caller's own reads fail then anyway.
    pub async fn still_valid(&self, id: &Identity) -> bool {
        let Some(name) = id.name.strip_prefix("token:") else {
            return true;
        };
        let stale = self
            .cache
            .read()
            .await
            .age()
            .is_none_or(|a| a >= TOKEN_REFRESH);
        if stale && self.reload().await.is_err() {
            return true;
        }
        self.cache
            .read()
            .await
            .by_hash
            .values()
            .any(|(n, r)| n == name && *r == id.role)
    }

    /// Forgets the cached tokens, so the next request re-reads them (after a change made here).
    pub async fn invalidate(&self) {
        self.cache.write().await.loaded = None;
    }

    /// The role configured for a client certificate subject (already normalised).
    pub fn certificate(&self, subject: &str) -> Option<Identity> {
        self.certs.get(subject).map(|role| Identity {
            name: format!("cert:{subject}"),
            role: *role,
        })
    }
}

/// Middleware on every route but `/healthz`: finds the caller's identity (a bearer token
/// first, else a client certificate) and puts it into the request, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnectionInfo>().cloned();
    let bearer = req.headers().get(header::AUTHORIZATION).map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
    });
    let outcome: Result<Identity, &'static str> = match bearer {
        Some(Some(token)) => match state.auth.token(&token).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err("unknown or revoked token"),
            Err(e) => return ApiError::from(e).into_response(),
        },
        Some(None) => Err("Authorization header is not \"Bearer <token>\""),
        None => match conn.as_ref().and_then(|c| c.client_subject.as_deref()) {
            Some(subject) => state
                .auth
                .certificate(subject)
                .ok_or("client certificate subject is not mapped to a role"),
            None => Err("no credentials"),
        },
    };
    match outcome {
        Ok(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        Err(reason) => {
            let total = state.auth.failures.fetch_add(1, Ordering::Relaxed) + 1;
            // Never the token itself: the reason, the peer, and the certificate subject if any.
            tracing::warn!(
                peer = ?conn.as_ref().map(|c| c.peer),
                subject = conn.as_ref().and_then(|c| c.client_subject.as_deref()),
                method = %req.method(),
                path = req.uri().path(),
                reason,
                failed_authentications = total,
                "authentication failed"
            );
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "{reason}: send \"Authorization: Bearer <token>\" (auditseal-db token \
                     create) or a client certificate mapped in [[auth.clients]]"
                ),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// The role a handler needs, checked by its extractor (`Ingester`, `Auditor`, `Admin`,
/// `Caller`): 403 when the caller's role does not grant it.
fn require(parts: &Parts, state: &AppState, needed: Option<Role>) -> Result<Identity, ApiError> {
    let id = parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
        // Only if a route were mounted outside `authenticate`: refuse rather than serve.
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no credentials: send \"Authorization: Bearer <token>\"",
        )
    })?;
    match needed {
        Some(role) if !id.role.grants(role) => {
            let total = state.auth.forbidden.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                identity = %id.name,
                role = %id.role,
                needed = %role,
                method = %parts.method,
                path = parts.uri.path(),
                forbidden_requests = total,
                "request refused: role does not allow it"
            );
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this request needs the {role} role (or admin); {} has the {} role",
                    id.name, id.role
                ),
            ))
        }
        _ => Ok(id),
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $needed:expr) => {
        $(#[$doc])*
        pub struct $name(pub Identity);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                require(parts, state, $needed).map($name)
            }
        }
    };
}

role_extractor!(
    /// A caller that may add events: `ingest` or `admin`.
    Ingester,
    Some(Role::Ingest)
);
role_extractor!(
    /// A caller that may read the log: `auditor` or `admin`.
    Auditor,
    Some(Role::Auditor)
);
role_extractor!(
    /// A caller that may manage tokens: `admin`.
    Admin,
    Some(Role::Admin)
);
role_extractor!(
    /// Any authenticated caller.
    Caller,
    None
);

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
}

/// The file the first admin token is written to.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// When no valid API token exists and no client certificate is mapped to a role, creates an
/// admin token and writes it, alone on one line, to `<data_dir>/admin.token` (mode 0600), so
/// the server is never open and the quick start still needs no set-up. Returns the token's
/// name and the file when it made one.
pub async fn bootstrap_admin_token(
    store: &SharedStore,
    data_dir: &std::path::Path,
    certificates_configured: bool,
) -> Result<Option<(String, std::path::PathBuf)>, BootstrapError> {
    if certificates_configured {
        return Ok(None);
    }
    let tokens = store.tokens().await?;
    if tokens.iter().any(|t| t.revoked.is_none()) {
        return Ok(None);
    }
    // Names stay taken when revoked: admin, then admin-2, admin-3, ...
    let name = (1..)
        .map(|i| {
            if i == 1 {
                "admin".to_string()
            } else {
                format!("admin-{i}")
            }
        })
        .find(|n| !tokens.iter().any(|t| &t.name == n))
        .unwrap_or_else(|| "admin".into());
    let (secret, record) =
        auditseal_core::access::new_token(&name, Role::Admin, auditseal_core::time::now_millis())?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&path, format!("{secret}\n").as_bytes()).map_err(|source| {
        BootstrapError::File {
            path: path.clone(),
            source,
        }
    })?;
    match store.insert_token(&record).await {
        Ok(()) => Ok(Some((name, path))),
        // Another node of the cluster made its own first token at the same moment.
        Err(StoreError::Conflict(_)) => {
            let _ = std::fs::remove_file(&path);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e.into())
        }
    }
}

/// Writes a file only its owner can read (0600 from the start: never briefly readable), by
/// way of a temporary file renamed over the old one.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
