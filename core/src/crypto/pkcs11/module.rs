//! The loaded PKCS#11 modules (one context per library in this process) and the names of
//! their return values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::crypto::token::TokenError;

/// A loaded PKCS#11 module: the one context per library in this process (initialising a
/// module twice is an error in PKCS#11, and several contexts in one process confuse modules).
pub(super) struct Module {
    pub(super) ctx: Pkcs11,
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
    pub(super) fn get(library: &Path) -> Result<Arc<Module>, TokenError> {
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

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(super) fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.calls.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Many modules list slots only when initialised: a token that went away and came back is
    /// seen again only after C_Finalize + C_Initialize. Rate-limited; waits for calls in flight.
    pub(super) fn rescan(&self) {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
/// A return value's name as PKCS#11 spells it: `PinIncorrect` is `CKR_PIN_INCORRECT`.
pub(super) fn return_value_name(rv: RvError) -> String {
    let mut name = String::from("CKR_");
    for (i, c) in format!("{rv:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Errors after which the session, the login or the slot must be set up again.
pub(super) fn needs_reconnect(e: &CkError) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_are_named_as_pkcs11_spells_them() {
        let names = [
            (RvError::PinIncorrect, "CKR_PIN_INCORRECT"),
            (RvError::DeviceRemoved, "CKR_DEVICE_REMOVED"),
            (RvError::GeneralError, "CKR_GENERAL_ERROR"),
            (RvError::SessionHandleInvalid, "CKR_SESSION_HANDLE_INVALID"),
        ];
        for (rv, name) in names {
            assert_eq!(return_value_name(rv), name);
        }
    }
}
