//! Minimal PEM armour (RFC 7468): enough for PKCS#8 private keys and SPKI public keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Wraps DER bytes in `-----BEGIN <label>-----` lines of 64 base64 characters.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Returns the DER bytes of the first block with the given label.
pub fn decode(label: &str, text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = super::encode("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert_eq!(super::decode("PUBLIC KEY", &pem), Some(der));
        assert_eq!(super::decode("PRIVATE KEY", &pem), None);
    }
}
