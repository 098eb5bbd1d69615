//! Secrets of an application: generated from the OS random source, only hashes stored for the
//! private key.
use sha2::{Digest, Sha256};

/// Fresh secrets for a new application.
pub struct ApplicationSecrets {
    /// Bearer token, shown once, never stored (only its hash).
    pub private_key: String,
    /// 32-byte AES-256 key as 64 lowercase hex characters.
    pub crypto_key: String,
    /// Standard Webhooks secret, `whsec_` + base64 of 24 random bytes.
    pub signing_secret: String,
}

/// Generates secrets for a new application.
pub fn generate() -> Result<ApplicationSecrets, getrandom::Error> {
    let mut private = [0u8; 32];
    let mut crypto = [0u8; 32];
    let mut signing = [0u8; 24];
    getrandom::fill(&mut private)?;
    getrandom::fill(&mut crypto)?;
    getrandom::fill(&mut signing)?;
    Ok(ApplicationSecrets {
        private_key: format!("prv_{}", hex::encode(private)),
        crypto_key: hex::encode(crypto),
        signing_secret: format!("whsec_{}", base64_standard(&signing)),
    })
}

/// A fresh signing secret (for rotation).
pub fn generate_signing_secret() -> Result<String, getrandom::Error> {
    let mut signing = [0u8; 24];
    getrandom::fill(&mut signing)?;
    Ok(format!("whsec_{}", base64_standard(&signing)))
}

/// The stored form of a private key: SHA-256, lowercase hex.
pub fn hash_private_key(private_key: &str) -> String {
    hex::encode(Sha256::digest(private_key.as_bytes()))
}

/// Compares two secrets in constant time (length leaks, content does not).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_their_documented_shapes() {
        let s = generate().unwrap();
        assert!(s.private_key.starts_with("prv_") && s.private_key.len() == 68);
        assert_eq!(s.crypto_key.len(), 64);
        assert!(s
            .crypto_key
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(s.signing_secret.starts_with("whsec_"));
        assert_eq!(s.signing_secret.len(), 6 + 32);
        assert_ne!(generate().unwrap().private_key, s.private_key);
    }

    #[test]
    fn only_the_same_key_matches_its_hash() {
        let h = hash_private_key("prv_abc");
        assert!(constant_time_eq(
            h.as_bytes(),
            hash_private_key("prv_abc").as_bytes()
        ));
        assert!(!constant_time_eq(
            h.as_bytes(),
            hash_private_key("prv_abd").as_bytes()
        ));
    }
}
