//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed by the
//! base64-decoded `whsec_` secret. During a secret rotation every active secret signs, newest first,
//! and the header carries the signatures space-separated.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// Why a secret or a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The secret is not `whsec_` followed by base64.
    #[error("signing secret must be \"whsec_\" followed by base64: {0}")]
    InvalidSecret(String),
    /// No signature in the header was made with this secret over this message.
    #[error("no v1 signature in the header matches this secret: the body, id or timestamp changed, or the secret is not the current one")]
    NoMatch,
}

/// An application's webhook signing secret (`whsec_<base64>`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    // Secrets must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(whsec_…)")
    }
}

impl SigningSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| SignatureError::InvalidSecret("missing the whsec_ prefix".into()))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| SignatureError::InvalidSecret(e.to_string()))?;
        if key.is_empty() {
            return Err(SignatureError::InvalidSecret("the key is empty".into()));
        }
        Ok(SigningSecret {
            text: text.to_owned(),
            key,
        })
    }

    /// A new random secret of 24 bytes (what svix issues).
    pub fn generate() -> Result<Self, SignatureError> {
        let mut key = [0u8; 24];
        getrandom::fill(&mut key)
            .map_err(|e| SignatureError::InvalidSecret(format!("no randomness: {e}")))?;
        Ok(SigningSecret {
            text: format!("{PREFIX}{}", STANDARD.encode(key)),
            key: key.to_vec(),
        })
    }

    /// The `whsec_…` text form (to show the client once, or store).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `v1,<base64 signature>` of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length (long ones are hashed), so this is an invariant, not input.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Whether any `v1,` signature in a space-separated `header` was made with this secret
    /// (constant-time comparison).
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        header: &str,
    ) -> Result<(), SignatureError> {
        for candidate in header.split(' ') {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                continue;
            };
            let Ok(sig) = STANDARD.decode(encoded) else {
                continue;
            };
            if self.mac(id, timestamp, body).verify_slice(&sig).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::NoMatch)
    }
}

/// The `webhook-signature` header value: one `v1,` signature per active secret, newest first.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a SigningSecret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn the_standard_webhooks_reference_vector_passes() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(
            secret.sign(ID, TS, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(secret
            .verify(
                ID,
                TS,
                BODY,
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            )
            .is_ok());
    }

    #[test]
    fn a_changed_body_or_timestamp_fails_verification() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let header = secret.sign(ID, TS, BODY);
        assert_eq!(
            secret.verify(ID, TS, br#"{"test": 1}"#, &header),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            secret.verify(ID, TS + 1, BODY, &header),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn during_rotation_both_secrets_sign_newest_first_and_either_verifies() {
        let old = SigningSecret::parse(SECRET).unwrap();
        let new = SigningSecret::generate().unwrap();
        let header = signature_header([&new, &old], ID, TS, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, vec![new.sign(ID, TS, BODY), old.sign(ID, TS, BODY)]);
        assert!(old.verify(ID, TS, BODY, &header).is_ok());
        assert!(new.verify(ID, TS, BODY, &header).is_ok());
    }

    #[test]
    fn secrets_without_the_prefix_or_with_bad_base64_are_refused() {
        assert!(matches!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SignatureError::InvalidSecret(_))
        ));
        assert!(matches!(
            SigningSecret::parse("whsec_***"),
            Err(SignatureError::InvalidSecret(_))
        ));
        assert!(!format!("{:?}", SigningSecret::parse(SECRET).unwrap()).contains("MfKQ"));
    }
}
