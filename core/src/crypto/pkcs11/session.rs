//! The pool of logged-in sessions of one key, and running an operation on one of them: a lost
//! session, a logged-out or vanished token is handled by finding everything again.

use std::io::Read;
use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::Inner;
use super::module::{lock, needs_reconnect, return_value_name};
use super::objects::Found;
use crate::crypto::token::{TokenError, for_each_chunk};

/// A logged-in session with the module generation it was opened in.
pub(super) struct Held {
    pub(super) session: Session,
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

pub(super) struct Pool {
    pub(super) found: Option<Found>,
    pub(super) idle: Vec<Held>,
    /// Sessions open now (idle and lent out).
    pub(super) open: usize,
    /// Bumped at each reconnect; sessions of an older generation are closed when returned.
    pub(super) generation: u64,
}

impl Inner {
    /// A new session on the token, logged in. Callers hold `module.shared()`.
    pub(super) fn open_session(&self) -> Result<Held, TokenError> {
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

    pub(super) fn raw_sign(
        &self,
        mechanism: &Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
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
    pub(super) fn raw_sign_stream(
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
}
