//! Who may use the API: roles and API tokens (docs/API.md "Authentication and roles").
//!
//! A token is `ast_` followed by 43 base64url characters (32 random bytes). Only the lower-case
//! hex SHA-256 of the whole token string is stored (table `AuditApiTokenData`); tokens are random,
//! so a plain hash is enough: there is nothing to guess from it.

use base64::Engine;
use sha2::{Digest, Sha256};

pub use crate::format::api_token::{ApiToken, Role};

/// The prefix of every token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "ast_";

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "token name {0:?} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', starting \
         with a letter or digit"
    )]
    BadName(String),
    #[error("cannot get random bytes for a token: {0}")]
    Random(String),
}

/// Why `create_logged` made no token.
#[derive(Debug, thiserror::Error)]
pub enum CreateError<E: std::fmt::Display> {
    #[error("a token with this name exists already (revoked names stay taken)")]
    Conflict,
    #[error("cannot store the token: {0}")]
    Store(crate::store::StoreError),
    /// The token was stored, but its event could not be logged: it was revoked again (unless
    /// that failed too, which is logged as an error) and must not be shown.
    #[error("the TOKEN_CREATE event could not be logged, so the new token was revoked again: {0}")]
    NotLogged(E),
}

/// Stores `token` and then runs `log`, which logs its TOKEN_CREATE event; when that fails the
/// token is revoked again, so that no token is valid without its event.
pub async fn create_logged<E: std::fmt::Display>(
    store: &dyn crate::store::Store,
    token: &ApiToken,
    log: impl AsyncFnOnce() -> Result<(), E>,
) -> Result<(), CreateError<E>> {
    match store.insert_token(token).await {
        Ok(()) => {}
        Err(crate::store::StoreError::Conflict(_)) => return Err(CreateError::Conflict),
        Err(e) => return Err(CreateError::Store(e)),
    }
    if let Err(e) = log().await {
        if let Err(r) = store
            .revoke_token(&token.name, crate::format::time::now_millis())
            .await
        {
            tracing::error!(token = %token.name, error = %r,
                "the TOKEN_CREATE event could not be logged, nor the new token revoked: revoke it");
        }
        return Err(CreateError::NotLogged(e));
    }
    Ok(())
}

/// Names are shown in logs and recorded in events: keep them plain.
pub fn check_name(name: &str) -> Result<(), AccessError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::BadName(name.to_string()))
    }
}

/// A new token for `name` with `role`: the secret (shown once) and the record to store.
pub fn new_token(name: &str, role: Role, now_ms: i64) -> Result<(String, ApiToken), AccessError> {
    check_name(name)?;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|e| AccessError::Random(e.to_string()))?;
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let record = ApiToken {
        name: name.to_string(),
        role: role.as_str().to_string(),
        token_hash: token_hash(&secret),
        created: now_ms,
        revoked: None,
    };
    Ok((secret, record))
}

/// What is stored for a token: lower-case hex SHA-256 of its UTF-8 bytes.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A distinguished name in one canonical text, so configuration and certificates compare
/// equal however they were spaced: RDNs in the order given, `TYPE=value` with the type in upper
/// case (and `SERIALNUMBER` as `SN`, `EMAILADDRESS` / `EMAIL` as `E`, as EJBCA writes them),
/// joined by `,` with no spaces around separators. `"cn=Auditor One, O=Example"` becomes
/// `"CN=Auditor One,O=Example"`. Escaped characters (`\,`, `\ `) stay part of their value.
pub fn normalize_dn(dn: &str) -> String {
    split_unescaped(dn, ',')
        .into_iter()
        .map(trim_unescaped)
        .filter(|rdn| !rdn.is_empty())
        .map(|rdn| {
            split_unescaped(rdn, '+')
                .into_iter()
                .map(normalize_attribute)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One `TYPE=value` of a DN, in `normalize_dn`'s form.
fn normalize_attribute(ava: &str) -> String {
    let ava = trim_unescaped(ava);
    match ava.split_once('=') {
        Some((t, v)) => {
            let t = t.trim().to_ascii_uppercase();
            let t = match t.as_str() {
                "SERIALNUMBER" => "SN",
                "EMAILADDRESS" | "EMAIL" => "E",
                other => other,
            };
            format!("{t}={}", trim_unescaped(v))
        }
        None => ava.to_string(),
    }
}

/// `s` split at every `sep` that no backslash escapes.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Client certificate subjects and their roles (`[[auth.clients]]`), by normalised subject. An
/// empty subject, or one subject given twice however spelled, is an error that names it: a
/// silent last-one-wins could hand a certificate a role nobody meant it to have.
pub fn certificate_roles(
    clients: impl IntoIterator<Item = (String, Role)>,
) -> Result<std::collections::HashMap<String, Role>, String> {
    let mut roles = std::collections::HashMap::new();
    for (subject, role) in clients {
        let dn = normalize_dn(&subject);
        if dn.is_empty() {
            return Err(format!("[[auth.clients]] subject {subject:?} is empty"));
        }
        if let Some(before) = roles.insert(dn.clone(), role) {
            return Err(format!(
                "[[auth.clients]] names the subject {dn:?} twice (roles {before} and {role}); \
                 keep one entry"
            ));
        }
    }
    Ok(roles)
}

/// `s` without leading whitespace and without trailing whitespace that is not escaped (`\ `).
fn trim_unescaped(s: &str) -> &str {
    let s = s.trim_start();
    let mut end = s.len();
    while let Some(c) = s[..end].chars().next_back() {
        if !c.is_whitespace() {
            break;
        }
        let before = &s[..end - c.len_utf8()];
        let backslashes = before.chars().rev().take_while(|b| *b == '\\').count();
        if backslashes % 2 == 1 {
            break;
        }
        end -= c.len_utf8();
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_grant() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert!(Role::Admin.grants(r));
            assert!(r.grants(r));
        }
        assert!(!Role::Ingest.grants(Role::Auditor));
        assert!(!Role::Auditor.grants(Role::Ingest));
        assert!(!Role::Auditor.grants(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, ra) = new_token("signer-1", Role::Ingest, 5).unwrap();
        let (b, rb) = new_token("signer-1", Role::Ingest, 5).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(ra.token_hash, token_hash(&a));
        assert_ne!(ra.token_hash, rb.token_hash);
        assert!(!ra.token_hash.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(ra.role(), Some(Role::Ingest));
        // sha256("abc")
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn no_token_stays_valid_without_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let (_, a) = new_token("a", Role::Auditor, 1).unwrap();
        let e = create_logged(store.as_ref(), &a, async || Err("device down"))
            .await
            .unwrap_err();
        assert!(matches!(e, CreateError::NotLogged("device down")), "{e}");
        let stored = store.tokens().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(
            stored[0].revoked.is_some(),
            "the unlogged token must be revoked"
        );

        let (_, b) = new_token("b", Role::Ingest, 2).unwrap();
        let mut logged = false;
        create_logged(store.as_ref(), &b, async || {
            logged = true;
            Ok::<(), String>(())
        })
        .await
        .unwrap();
        assert!(logged);
        let e = create_logged(store.as_ref(), &b, async || Ok::<(), String>(()))
            .await
            .unwrap_err();
        assert!(matches!(e, CreateError::Conflict), "{e}");
        let stored = store.tokens().await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|t| (t.name.as_str(), t.revoked.is_some()))
                .collect::<Vec<_>>(),
            [("a", true), ("b", false)]
        );
    }

    #[test]
    fn names_are_checked() {
        for ok in ["a", "signer-1", "siem.prod_2", &"x".repeat(64)] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-a", "a b", "a/b", "ä", &"x".repeat(65), "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn distinguished_names_normalise() {
        assert_eq!(
            normalize_dn(" cn=Auditor One , o=Example,C=SE"),
            "CN=Auditor One,O=Example,C=SE"
        );
        assert_eq!(normalize_dn("CN=a\\,b,O=x"), "CN=a\\,b,O=x");
        // An escaped trailing space is part of the value, not a separator's padding.
        assert_eq!(normalize_dn("CN=a\\ , O=x"), "CN=a\\ ,O=x");
        assert_eq!(normalize_dn("CN=a\\\\ , O=x"), "CN=a\\\\,O=x");
        assert_eq!(
            normalize_dn("serialNumber=5,emailAddress=a@b,email=c@d"),
            "SN=5,E=a@b,E=c@d"
        );
        assert_ne!(normalize_dn("CN=a,O=x"), normalize_dn("O=x,CN=a"));
        // Multi-valued RDNs: each attribute normalised; an escaped + stays in its value.
        assert_eq!(normalize_dn("ou=Ops + uid=u42 ,o=x"), "OU=Ops+UID=u42,O=x");
        assert_eq!(normalize_dn("CN=a\\+b,O=x"), "CN=a\\+b,O=x");
    }

    #[test]
    fn certificate_subjects_are_unique_and_not_empty() {
        let roles = certificate_roles([
            ("CN=A, O=x".to_string(), Role::Auditor),
            ("CN=B,O=x".to_string(), Role::Ingest),
        ])
        .unwrap();
        assert_eq!(roles["CN=A,O=x"], Role::Auditor);
        let e = certificate_roles([
            ("CN=A,O=x".to_string(), Role::Auditor),
            ("cn=A , o=x".to_string(), Role::Admin),
        ])
        .unwrap_err();
        assert!(e.contains("CN=A,O=x") && e.contains("twice"), "{e}");
        assert!(certificate_roles([(" , ".to_string(), Role::Admin)]).is_err());
    }
}
