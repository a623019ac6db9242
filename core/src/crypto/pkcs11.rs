//! PKCS#11 crypto tokens (HSMs, SoftHSM2) through `cryptoki`, behind the same `CryptoToken`
//! trait as the software key.
//!
//! One PKCS#11 context per module (library) per process; a pool of logged-in sessions per key;
//! every call blocks, so callers run them off the async workers. A lost session, a logged-out or
//! vanished token is handled by dropping the sessions, finding the slot again and logging in
//! again; while that fails, signing answers `TokenError::Unavailable`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256, Sha384};

use crate::crypto::keys::{MacOracle, VerifyKey};
use crate::crypto::token::{
    Algorithm, CallTally, CryptoToken, KeyKind, TokenCall, TokenError, digest_reader,
    for_each_chunk,
};
use crate::format::der;

/// How a token is found (SignServer's `slotLabelType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotSelector {
    /// SLOT_LABEL: the token label.
    Label(String),
    /// SLOT_NUMBER: the slot id.
    Number(u64),
    /// SLOT_INDEX: the position in the list of slots with a token.
    Index(usize),
}

impl std::fmt::Display for SlotSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotSelector::Label(l) => write!(f, "token label {l:?}"),
            SlotSelector::Number(n) => write!(f, "slot {n}"),
            SlotSelector::Index(i) => write!(f, "slot index {i}"),
        }
    }
}

/// Everything needed to use one key in a token.
#[derive(Clone)]
pub struct Pkcs11Config {
    pub keyid: i32,
    pub library: PathBuf,
    pub slot: SlotSelector,
    pub key_label: String,
    pub key_id: Option<Vec<u8>>,
    pub pin: String,
    /// None: from the key type.
    pub algorithm: Option<Algorithm>,
    /// Most sessions open at once for this key.
    pub sessions: usize,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PIN is never printed.
        f.debug_struct("Pkcs11Config")
            .field("keyid", &self.keyid)
            .field("library", &self.library)
            .field("slot", &self.slot)
            .field("key_label", &self.key_label)
            .field("algorithm", &self.algorithm)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// A loaded PKCS#11 module: the one context per library in this process (initialising a
/// module twice is an error in PKCS#11, and several contexts in one process confuse modules).
struct Module {
    ctx: Pkcs11,
    library: PathBuf,
    /// Every PKCS#11 call holds this shared; a rescan (C_Finalize + C_Initialize) holds it
    /// exclusively, since calls racing C_Finalize are undefined behaviour.
    calls: RwLock<()>,
    /// Bumped by each rescan: sessions and handles from an older generation are void (and must
    /// not even be closed: their numbers may now name someone else's session).
    generation: AtomicU64,
    last_rescan: Mutex<Option<Instant>>,
}

/// Least time between two rescans of a module.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

impl Module {
    fn get(library: &Path) -> Result<Arc<Module>, TokenError> {
        static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
        let mut map = lock(MODULES.get_or_init(Default::default));
        if let Some(m) = map.get(library) {
            return Ok(m.clone());
        }
        let ctx = Pkcs11::new(library).map_err(|e| {
            TokenError::InvalidKey(format!(
                "cannot load PKCS#11 module {}: {e}",
                library.display()
            ))
        })?;
        let module = Arc::new(Module {
            ctx,
            library: library.to_path_buf(),
            calls: RwLock::new(()),
            generation: AtomicU64::new(0),
            last_rescan: Mutex::new(None),
        });
        module.initialize()?;
        map.insert(library.to_path_buf(), module.clone());
        Ok(module)
    }

    fn initialize(&self) -> Result<(), TokenError> {
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
            Err(e) => Err(TokenError::Unavailable(format!(
                "cannot initialise PKCS#11 module {}: {e}",
                self.library.display()
            ))),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.calls.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Many modules list slots only when initialised: a token that went away and came back is
    /// seen again only after C_Finalize + C_Initialize. Rate-limited; waits for calls in flight.
    fn rescan(&self) {
        {
            let mut last = lock(&self.last_rescan);
            if last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let _exclusive = self.calls.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::warn!(module = %self.library.display(), error = %e, "C_Finalize failed");
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        match self.initialize() {
            Ok(()) => tracing::info!(
                module = %self.library.display(),
                "re-initialised the PKCS#11 module to look for tokens again"
            ),
            Err(e) => tracing::warn!(error = %e, "re-initialising the PKCS#11 module failed"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Errors after which the session, the login or the slot must be set up again.
/// A return value's name as PKCS#11 spells it: `PinIncorrect` is `CKR_PIN_INCORRECT`.
fn return_value_name(rv: RvError) -> String {
    let mut name = String::from("CKR_");
    for (i, c) in format!("{rv:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn needs_reconnect(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// The key's handle in the token, valid until the next reconnect.
type Found = ObjectHandle;

/// A logged-in session with the module generation it was opened in.
struct Held {
    session: Session,
    module_generation: u64,
}

/// How an operation in `with_session` failed.
enum Failed {
    /// Nothing was consumed: it may run again on another session.
    Retry(CkError),
    /// The token failed after input was consumed: it cannot run again.
    Final(CkError),
    /// The input could not be read: the token is fine.
    Input(TokenError),
}

/// A session lent out for one operation.
struct Lent {
    held: Held,
    key: Found,
    /// The pool generation it was lent in (see `Pool::generation`).
    generation: u64,
}

struct Pool {
    found: Option<Found>,
    idle: Vec<Held>,
    /// Sessions open now (idle and lent out).
    open: usize,
    /// Bumped at each reconnect; sessions of an older generation are closed when returned.
    generation: u64,
}

struct Inner {
    cfg: Pkcs11Config,
    module: Arc<Module>,
    algorithm: Algorithm,
    pool: Mutex<Pool>,
    returned: Condvar,
    /// The return value with which the token refused the PIN, once it has: the PIN is not
    /// tried again in this process (each try may count towards locking the token).
    pin_refused: Mutex<Option<String>>,
    /// Calls to the module by function and result: every error that reaches `unavailable` or
    /// the login, and the successful logins and signatures.
    calls: CallTally,
}

/// A key in a PKCS#11 token.
pub struct Pkcs11Token {
    inner: Arc<Inner>,
    verify: VerifyKey,
}

impl Pkcs11Token {
    /// Loads the module, finds the token and the key, logs in and reads the public key. A wrong
    /// PIN is `InvalidKey` (retrying with the same PIN would only lock the token).
    pub fn open(cfg: Pkcs11Config) -> Result<Self, TokenError> {
        let module = Module::get(&cfg.library)?;
        let mut inner = Inner {
            algorithm: cfg.algorithm.unwrap_or(Algorithm::Sha256WithRsa),
            cfg,
            module,
            pool: Mutex::new(Pool {
                found: None,
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            returned: Condvar::new(),
            pin_refused: Mutex::new(None),
            calls: CallTally::default(),
        };
        let (held, found, own, spki) = {
            let _calls = inner.module.shared();
            let held = inner.open_session()?;
            let found = inner.find_key(&held.session)?;
            let kind = inner.key_kind(&held.session, found)?;
            // The configured algorithm, of the key's kind; or the SHA-256 one of its kind.
            let own = match inner.cfg.algorithm {
                Some(configured) if configured.key_kind() != kind => {
                    return Err(TokenError::InvalidKey(format!(
                        "{}: it is {} key but {configured} is configured",
                        inner.describe(),
                        match kind {
                            KeyKind::Rsa => "an RSA",
                            KeyKind::Ec => "an EC",
                            KeyKind::Secret => "a secret (HMAC)",
                        }
                    )));
                }
                Some(configured) => configured,
                None => match kind {
                    KeyKind::Rsa => Algorithm::Sha256WithRsa,
                    KeyKind::Ec => Algorithm::Sha256WithEcdsa,
                    KeyKind::Secret => Algorithm::HmacSha256,
                },
            };
            inner.algorithm = own;
            let spki = match kind {
                KeyKind::Secret => None,
                _ => Some(inner.public_key(&held.session, found)?),
            };
            (held, found, own, spki)
        };
        {
            let mut pool = lock(&inner.pool);
            pool.found = Some(found);
            pool.open = 1;
            pool.idle.push(held);
        }
        let inner = Arc::new(inner);
        let verify = match spki {
            Some(spki) => VerifyKey::from_spki(own, &spki)
                .map_err(|e| TokenError::InvalidKey(format!("{}: {e}", inner.describe())))?,
            // An HMAC secret never leaves the token: verifying means MACing again there.
            None => VerifyKey::TokenHmac(inner.clone()),
        };
        Ok(Pkcs11Token { inner, verify })
    }
}

impl Inner {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 key {:?} in {} of {}",
            self.cfg.key_label,
            self.cfg.slot,
            self.cfg.library.display()
        )
    }

    fn unavailable(&self, what: &str, e: &CkError) -> TokenError {
        self.count(e);
        TokenError::Unavailable(format!("{}: {what}: {e}", self.describe()))
    }

    /// Counts a PKCS#11 error under its function and return value.
    fn count(&self, e: &CkError) {
        if let CkError::Pkcs11(rv, function) = e {
            self.calls
                .record(&format!("C_{function:?}"), &return_value_name(*rv));
        }
    }

    /// Callers hold `module.shared()`.
    fn find_slot(&self) -> Result<Slot, TokenError> {
        let ctx = &self.module.ctx;
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| self.unavailable("listing slots", &e))?;
        let mut unreadable = None;
        let found = match &self.cfg.slot {
            SlotSelector::Number(n) => slots.into_iter().find(|s| s.id() == *n),
            SlotSelector::Index(i) => slots.into_iter().nth(*i),
            SlotSelector::Label(label) => slots.into_iter().find(|s| match self.token_info(*s) {
                Ok(t) => t.label().trim_end() == label,
                Err(e) => {
                    unreadable = Some((s.id(), e));
                    false
                }
            }),
        };
        found.ok_or_else(|| {
            let why = unreadable.map_or_else(String::new, |(id, e)| {
                format!(" (slot {id} could not be read: {e})")
            });
            TokenError::Unavailable(format!("{}: no such token present{why}", self.describe()))
        })
    }

    /// C_GetTokenInfo, tried 3 times: SoftHSM answers CKR_GENERAL_ERROR now and then while
    /// another thread runs a multi-part operation, and that must not read as "no such token".
    fn token_info(&self, slot: Slot) -> Result<cryptoki::slot::TokenInfo, CkError> {
        let mut tries = 0;
        loop {
            match self.module.ctx.get_token_info(slot) {
                Err(_) if tries < 2 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    /// A new session on the token, logged in. Callers hold `module.shared()`.
    fn open_session(&self) -> Result<Held, TokenError> {
        if let Some(rv) = lock(&self.pin_refused).as_ref() {
            return Err(TokenError::InvalidKey(format!(
                "{}: the token refused the PIN ({rv}); it is not tried again, so as not to lock \
                 the token: set the right PIN and restart the server",
                self.describe()
            )));
        }
        let module_generation = self.module.generation();
        let slot = self.find_slot()?;
        let session = self
            .module
            .ctx
            .open_ro_session(slot)
            .map_err(|e| self.unavailable("opening a session", &e))?;
        let pin = AuthPin::new(self.cfg.pin.clone().into());
        let login = session.login(UserType::User, Some(&pin));
        match &login {
            Ok(()) => self.calls.record("C_Login", "CKR_OK"),
            Err(e) => self.count(e),
        }
        match login {
            // Login state is per token and application: another session may have logged in.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(Held {
                session,
                module_generation,
            }),
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired),
                _,
            )) => {
                let rv = return_value_name(rv);
                tracing::error!(
                    key = %self.describe(),
                    "ALERT: the token refused the PIN ({rv}); it is not tried again until the \
                     server restarts, so as not to lock the token"
                );
                let e = TokenError::InvalidKey(format!(
                    "{}: the token refused the PIN ({rv})",
                    self.describe()
                ));
                *lock(&self.pin_refused) = Some(rv);
                Err(e)
            }
            Err(e) => Err(TokenError::Unavailable(format!(
                "{}: logging in: {e}",
                self.describe()
            ))),
        }
    }

    /// Callers hold `module.shared()`.
    fn find_key(&self, session: &Session) -> Result<Found, TokenError> {
        let mut template = vec![Attribute::Label(self.cfg.key_label.as_bytes().to_vec())];
        if let Some(id) = &self.cfg.key_id {
            template.push(Attribute::Id(id.clone()));
        }
        let mut handles = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
            let mut t = template.clone();
            t.push(Attribute::Class(class));
            handles.extend(
                session
                    .find_objects(&t)
                    .map_err(|e| self.unavailable("finding the key", &e))?,
            );
        }
        match handles.as_slice() {
            [key] => Ok(*key),
            [] => Err(TokenError::InvalidKey(format!(
                "{}: no private or secret key with that label{}",
                self.describe(),
                if self.cfg.key_id.is_some() {
                    " and CKA_ID"
                } else {
                    ""
                }
            ))),
            more => Err(TokenError::InvalidKey(format!(
                "{}: {} keys have that label; set key_id (CKA_ID) to choose one",
                self.describe(),
                more.len()
            ))),
        }
    }

    fn key_kind(&self, session: &Session, key: Found) -> Result<KeyKind, TokenError> {
        let key_type = session
            .get_attributes(key, &[AttributeType::KeyType])
            .map_err(|e| self.unavailable("reading the key type", &e))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::KeyType(t) => Some(t),
                _ => None,
            });
        match key_type {
            Some(t) if t == KeyType::RSA => Ok(KeyKind::Rsa),
            Some(t) if t == KeyType::EC => Ok(KeyKind::Ec),
            Some(t) if t == KeyType::GENERIC_SECRET => Ok(KeyKind::Secret),
            other => Err(TokenError::InvalidKey(format!(
                "{}: unsupported key type {other:?} (RSA, EC P-256 or P-384, or a generic secret)",
                self.describe()
            ))),
        }
    }

    /// The public key as a SubjectPublicKeyInfo: from the public key object with the same
    /// label (and id), or for RSA from the private key's own modulus and exponent.
    fn public_key(&self, session: &Session, key: Found) -> Result<Vec<u8>, TokenError> {
        let mut template = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(self.cfg.key_label.as_bytes().to_vec()),
        ];
        if let Some(id) = &self.cfg.key_id {
            template.push(Attribute::Id(id.clone()));
        }
        let public = session
            .find_objects(&template)
            .map_err(|e| self.unavailable("finding the public key", &e))?
            .first()
            .copied();
        let bad = |why: &str| TokenError::InvalidKey(format!("{}: {why}", self.describe()));
        match self.algorithm.key_kind() {
            KeyKind::Rsa => {
                let attrs = session
                    .get_attributes(
                        public.unwrap_or(key),
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(|e| self.unavailable("reading the RSA public key", &e))?;
                let (mut n, mut e) = (None, None);
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        _ => {}
                    }
                }
                match (n, e) {
                    (Some(n), Some(e)) => Ok(der::rsa_spki(&n, &e)),
                    _ => Err(bad("the RSA public key cannot be read")),
                }
            }
            KeyKind::Ec => {
                let obj = public.ok_or_else(|| bad("no EC public key object with that label"))?;
                let attrs = session
                    .get_attributes(obj, &[AttributeType::EcParams, AttributeType::EcPoint])
                    .map_err(|e| self.unavailable("reading the EC public key", &e))?;
                let (mut params, mut point) = (None, None);
                for a in attrs {
                    match a {
                        Attribute::EcParams(v) => params = Some(v),
                        Attribute::EcPoint(v) => point = Some(v),
                        _ => {}
                    }
                }
                let Some(curve) = params.as_deref().and_then(der::KeyType::from_ec_params) else {
                    return Err(bad(
                        "only EC keys on P-256 (prime256v1) or P-384 (secp384r1) are supported",
                    ));
                };
                point
                    .and_then(|p| der::ec_spki(curve, &p))
                    .ok_or_else(|| bad("the EC public point cannot be read"))
            }
            KeyKind::Secret => Err(bad("a secret key has no public key")),
        }
    }

    /// Lends a logged-in session and the key, opening one (or finding everything again after a
    /// reconnect) as needed. Callers hold `module.shared()`.
    fn checkout(&self) -> Result<Lent, TokenError> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(key) = pool.found
                && let Some(held) = pool.idle.pop()
            {
                return Ok(Lent {
                    held,
                    key,
                    generation: pool.generation,
                });
            }
            if pool.open < self.cfg.sessions.max(1) {
                pool.open += 1;
                let generation = pool.generation;
                let known = pool.found;
                drop(pool);
                // Open outside the pool lock: a login can take a while on a real HSM.
                let opened = self.open_session().and_then(|held| {
                    let key = match known {
                        Some(k) => k,
                        None => self.find_key(&held.session)?,
                    };
                    Ok((held, key))
                });
                let mut pool = lock(&self.pool);
                return match opened {
                    Ok((held, key)) => {
                        if generation == pool.generation {
                            pool.found = Some(key);
                        }
                        Ok(Lent {
                            held,
                            key,
                            generation,
                        })
                    }
                    Err(e) => {
                        pool.open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let (p, waited) = self
                .returned
                .wait_timeout(pool, Duration::from_secs(30))
                .unwrap_or_else(|p| p.into_inner());
            pool = p;
            if waited.timed_out() {
                return Err(TokenError::Unavailable(format!(
                    "{}: all {} sessions busy for 30 s",
                    self.describe(),
                    self.cfg.sessions
                )));
            }
        }
    }

    /// Closes a session, unless the module was re-initialised since it was opened: then its
    /// handle is void and may name another session now, so it is only forgotten.
    fn discard(&self, held: Held) {
        if held.module_generation == self.module.generation() {
            drop(held.session);
        } else {
            std::mem::forget(held.session);
        }
    }

    fn checkin(&self, lent: Lent) {
        let mut pool = lock(&self.pool);
        if lent.generation == pool.generation {
            pool.idle.push(lent.held);
        } else {
            pool.open -= 1;
            self.discard(lent.held);
        }
        self.returned.notify_one();
    }

    /// Closes a session that failed part way through a multi-part operation (a module may
    /// leave such an operation active, and then every C_SignInit on it would fail); the pool
    /// opens another when it needs one.
    fn retire(&self, broken: Lent) {
        let mut pool = lock(&self.pool);
        pool.open -= 1;
        self.discard(broken.held);
        self.returned.notify_one();
    }

    /// Forgets every session and the key handle: the next checkout finds everything again.
    fn reconnect(&self, broken: Lent) {
        let mut pool = lock(&self.pool);
        pool.open -= 1;
        self.discard(broken.held);
        if broken.generation == pool.generation {
            pool.generation += 1;
            pool.found = None;
            for held in std::mem::take(&mut pool.idle) {
                pool.open -= 1;
                self.discard(held);
            }
        }
        self.returned.notify_all();
    }

    fn raw_sign(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        let sig = self.with_session("signing", |session, key| {
            session.sign(mechanism, key, data).map_err(Failed::Retry)
        })?;
        self.calls.record("C_Sign", "CKR_OK");
        Ok(sig)
    }

    /// C_SignInit, one C_SignUpdate per chunk of `data`, C_SignFinal: a MAC or signature over
    /// a stream, in one session. Only a failure before the first chunk is read is retried on
    /// another session: after it, the data read is gone. The session (and the module's shared
    /// lock) is held while `data` is read: streams are exports and archive segments, read from
    /// a local file.
    fn raw_sign_stream(
        &self,
        mechanism: &Mechanism,
        data: &mut dyn Read,
        mut seen: impl FnMut(&[u8]),
    ) -> Result<Vec<u8>, TokenError> {
        self.with_session("signing", |session, key| {
            session.sign_init(mechanism, key).map_err(Failed::Retry)?;
            let mut token_failed = None;
            let read = for_each_chunk(data, |chunk| {
                seen(chunk);
                session.sign_update(chunk).map_err(|e| {
                    // Reported (and counted) once, from `token_failed`, below.
                    token_failed = Some(e);
                    TokenError::Unavailable(String::new())
                })
            });
            match (read, token_failed) {
                (Ok(()), _) => {
                    let mac = session.sign_final().map_err(Failed::Final)?;
                    self.calls.record("C_SignFinal", "CKR_OK");
                    Ok(mac)
                }
                (Err(_), Some(e)) => Err(Failed::Final(e)),
                // The input failed: end the operation (cryptoki's sign_final asks for the
                // length, then signs, which ends it) and report the input's error. The session
                // is retired anyway, in case the module left the operation active.
                (Err(e), None) => {
                    let _ = session.sign_final();
                    Err(Failed::Input(e))
                }
            }
        })
    }

    /// Runs `op` with a logged-in session and the key: once with what the pool has, once more
    /// after reconnecting, once more after the module looked for the token again. A session
    /// that reports itself lost is replaced, whatever `op` says about retrying.
    fn with_session<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&Session, ObjectHandle) -> Result<T, Failed>,
    ) -> Result<T, TokenError> {
        let mut last = None;
        for attempt in 0..3 {
            let result = {
                let _calls = self.module.shared();
                match self.checkout() {
                    Ok(lent) if lent.held.module_generation != self.module.generation() => {
                        // Opened before a rescan: its handles are void.
                        Err((lent, None))
                    }
                    Ok(lent) => match op(&lent.held.session, lent.key) {
                        Ok(v) => Ok((lent, v)),
                        Err(Failed::Retry(e)) if needs_reconnect(&e) => Err((lent, Some(e))),
                        Err(Failed::Retry(e)) => {
                            self.checkin(lent);
                            return Err(self.unavailable(what, &e));
                        }
                        Err(Failed::Final(e)) => {
                            let err = self.unavailable(what, &e);
                            if needs_reconnect(&e) {
                                tracing::warn!(key = %self.describe(), error = %e, "PKCS#11 session lost; reconnecting");
                                self.reconnect(lent);
                            } else {
                                self.retire(lent);
                            }
                            return Err(err);
                        }
                        Err(Failed::Input(e)) => {
                            self.retire(lent);
                            return Err(e);
                        }
                    },
                    Err(e @ TokenError::Unavailable(_)) => {
                        last = Some(e);
                        drop(_calls);
                        // The token is not where it was: have the module look again.
                        if attempt < 2 {
                            self.module.rescan();
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            match result {
                Ok((lent, v)) => {
                    self.checkin(lent);
                    return Ok(v);
                }
                Err((lent, e)) => {
                    if let Some(e) = &e {
                        tracing::warn!(key = %self.describe(), error = %e, "PKCS#11 session lost; reconnecting");
                        last = Some(self.unavailable(what, e));
                    }
                    self.reconnect(lent);
                }
            }
        }
        Err(last.unwrap_or_else(|| TokenError::Unavailable(self.describe())))
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        match self.algorithm {
            Algorithm::HmacSha256 => self.raw_sign(&Mechanism::Sha256Hmac, data),
            Algorithm::Sha256WithRsa => self.raw_sign(&Mechanism::Sha256RsaPkcs, data),
            Algorithm::Sha384WithRsa => self.raw_sign(&Mechanism::Sha384RsaPkcs, data),
            Algorithm::Sha512WithRsa => self.raw_sign(&Mechanism::Sha512RsaPkcs, data),
            Algorithm::Sha256WithEcdsa => self.sign_ec_digest(&Sha256::digest(data)),
            Algorithm::Sha384WithEcdsa => self.sign_ec_digest(&Sha384::digest(data)),
        }
    }

    /// `sign` over a stream: the MAC or signature, and for signatures the digest of the data
    /// (to check the signature with).
    fn sign_reader(
        &self,
        data: &mut dyn Read,
    ) -> Result<(Vec<u8>, Option<aws_lc_rs::digest::Digest>), TokenError> {
        use aws_lc_rs::digest;
        let rsa = match self.algorithm {
            Algorithm::HmacSha256 => {
                let mac = self.raw_sign_stream(&Mechanism::Sha256Hmac, data, |_| {})?;
                return Ok((mac, None));
            }
            Algorithm::Sha256WithEcdsa | Algorithm::Sha384WithEcdsa => {
                let d = digest_reader(self.algorithm.digest(), data)?;
                return Ok((self.sign_ec_digest(d.as_ref())?, Some(d)));
            }
            Algorithm::Sha256WithRsa => Mechanism::Sha256RsaPkcs,
            Algorithm::Sha384WithRsa => Mechanism::Sha384RsaPkcs,
            Algorithm::Sha512WithRsa => Mechanism::Sha512RsaPkcs,
        };
        let mut h = digest::Context::new(self.algorithm.digest());
        let sig = self.raw_sign_stream(&rsa, data, |c| h.update(c))?;
        Ok((sig, Some(h.finish())))
    }

    /// CKM_ECDSA signs a digest and returns r || s; Java (and CESeCore) store DER.
    fn sign_ec_digest(&self, digest: &[u8]) -> Result<Vec<u8>, TokenError> {
        let raw = self.raw_sign(&Mechanism::Ecdsa, digest)?;
        der::ecdsa_raw_to_der(&raw).ok_or_else(|| {
            TokenError::Unavailable(format!("{}: malformed ECDSA signature", self.describe()))
        })
    }
}

impl MacOracle for Inner {
    fn mac(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.sign(data)
    }
    fn mac_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        Ok(self.sign_reader(data)?.0)
    }
}

impl Pkcs11Token {
    fn checked(
        &self,
        verified: Result<(), crate::crypto::keys::VerifyError>,
    ) -> Result<(), TokenError> {
        verified.map_err(|_| {
            TokenError::Unavailable(format!(
                "{}: the token returned a signature that does not verify",
                self.inner.describe()
            ))
        })
    }
}

impl CryptoToken for Pkcs11Token {
    fn keyid(&self) -> i32 {
        self.inner.cfg.keyid
    }

    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Signs in the token, then checks the signature with the public key before it is used:
    /// a wrong signature (a confused module, a handle gone stale) never reaches a row.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        let sig = self.inner.sign(data)?;
        if self.inner.algorithm != Algorithm::HmacSha256 {
            self.checked(self.verify.verify(data, &sig))?;
        }
        Ok(sig)
    }

    /// Checked as `sign` is, against the digest of what was read.
    fn sign_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        let (sig, digest) = self.inner.sign_reader(data)?;
        if let Some(d) = digest {
            self.checked(self.verify.verify_digest(&d, &sig))?;
        }
        Ok(sig)
    }

    fn verify_key(&self) -> VerifyKey {
        self.verify.clone()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn calls(&self) -> Vec<TokenCall> {
        self.inner.calls.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_are_named_as_pkcs11_spells_them() {
        assert_eq!(
            return_value_name(RvError::PinIncorrect),
            "CKR_PIN_INCORRECT"
        );
        assert_eq!(
            return_value_name(RvError::DeviceRemoved),
            "CKR_DEVICE_REMOVED"
        );
        assert_eq!(
            return_value_name(RvError::GeneralError),
            "CKR_GENERAL_ERROR"
        );
        assert_eq!(
            return_value_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}
