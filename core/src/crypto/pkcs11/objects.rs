//! Finding the token, the key and its public key.

use std::time::Duration;

use cryptoki::error::Error as CkError;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::{Inner, SlotSelector};
use crate::crypto::token::{KeyKind, TokenError};
use crate::format::der;

/// The key's handle in the token, valid until the next reconnect.
pub(super) type Found = ObjectHandle;

impl Inner {
    /// Callers hold `module.shared()`.
    pub(super) fn find_slot(&self) -> Result<Slot, TokenError> {
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

    /// The key's label, and its CKA_ID when one is configured: what names the key's objects.
    fn naming(&self) -> Vec<Attribute> {
        let mut template = vec![Attribute::Label(self.cfg.key_label.as_bytes().to_vec())];
        if let Some(id) = &self.cfg.key_id {
            template.push(Attribute::Id(id.clone()));
        }
        template
    }

    /// Callers hold `module.shared()`.
    pub(super) fn find_key(&self, session: &Session) -> Result<Found, TokenError> {
        let template = self.naming();
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

    pub(super) fn key_kind(&self, session: &Session, key: Found) -> Result<KeyKind, TokenError> {
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
    pub(super) fn public_key(&self, session: &Session, key: Found) -> Result<Vec<u8>, TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        template.extend(self.naming());
        let public = session
            .find_objects(&template)
            .map_err(|e| self.unavailable("finding the public key", &e))?
            .first()
            .copied();
        let bad = |why: &str| TokenError::InvalidKey(format!("{}: {why}", self.describe()));
        match self.algorithm.key_kind() {
            KeyKind::Rsa => {
                let [n, e] = self.byte_attributes(
                    session,
                    public.unwrap_or(key),
                    [AttributeType::Modulus, AttributeType::PublicExponent],
                    "reading the RSA public key",
                )?;
                match (n, e) {
                    (Some(n), Some(e)) => Ok(der::rsa_spki(&n, &e)),
                    _ => Err(bad("the RSA public key cannot be read")),
                }
            }
            KeyKind::Ec => {
                let obj = public.ok_or_else(|| bad("no EC public key object with that label"))?;
                let [params, point] = self.byte_attributes(
                    session,
                    obj,
                    [AttributeType::EcParams, AttributeType::EcPoint],
                    "reading the EC public key",
                )?;
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
    /// Byte-string attributes of an object, in the order asked; None where the token returned
    /// none.
    fn byte_attributes<const N: usize>(
        &self,
        session: &Session,
        object: ObjectHandle,
        types: [AttributeType; N],
        what: &str,
    ) -> Result<[Option<Vec<u8>>; N], TokenError> {
        let attrs = session
            .get_attributes(object, &types)
            .map_err(|e| self.unavailable(what, &e))?;
        let mut values = std::array::from_fn(|_| None);
        for a in attrs {
            let at = types.iter().position(|t| *t == a.attribute_type());
            let bytes = match a {
                Attribute::Modulus(v)
                | Attribute::PublicExponent(v)
                | Attribute::EcParams(v)
                | Attribute::EcPoint(v) => v,
                _ => continue,
            };
            if let Some(i) = at {
                values[i] = Some(bytes);
            }
        }
        Ok(values)
    }
}
