//! Allpass-compatible sealing of webhook payloads: AES-256-CBC with PKCS#7 padding under the
//! application's 32-byte crypto key, written as `<32 hex chars of IV><hex ciphertext>`.

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

const IV_LEN: usize = 16;
const BLOCK_LEN: usize = 16;

/// Why a key could not be read or a sealed payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The crypto key is not 64 hex characters (32 bytes).
    #[error("crypto key must be 64 hex characters (32 bytes); got {got} characters: copy it again from the application")]
    InvalidKey { got: usize },
    /// The sealed data contains a character that is not lowercase or uppercase hex.
    #[error("sealed data is not hex: {0}")]
    NotHex(String),
    /// The sealed data is shorter than an IV plus one block, or not a whole number of blocks.
    #[error("sealed data has {hex_len} hex characters; expected 32 for the IV plus a non-empty multiple of 32 for the ciphertext")]
    BadLength { hex_len: usize },
    /// Decryption produced invalid padding: the key is not the one the payload was sealed with, or the data was altered.
    #[error("sealed data does not decrypt under this key (bad padding): check the application's crypto key")]
    WrongKeyOrCorrupt,
    /// The operating system could not supply a random IV.
    #[error("no randomness available for the IV: {0}")]
    Randomness(String),
}

/// Parses an application's crypto key from its 64 hex character form.
pub fn parse_key(hex_key: &str) -> Result<[u8; 32], SealError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key).map_err(|_| SealError::InvalidKey {
        got: hex_key.trim().len(),
    })?;
    Ok(key)
}

/// Seals `plaintext` under `key` with a fresh random IV: `<hex IV><hex ciphertext>`, lowercase.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Result<String, SealError> {
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut iv).map_err(|e| SealError::Randomness(e.to_string()))?;
    Ok(seal_with_iv(key, &iv, plaintext))
}

/// Seals with a caller-chosen IV. Only for known-answer tests: reusing an IV leaks plaintext equality.
pub fn seal_with_iv(key: &[u8; 32], iv: &[u8; IV_LEN], plaintext: &[u8]) -> String {
    let ciphertext = Encryptor::new(key.into(), iv.into()).encrypt_padded_vec::<Pkcs7>(plaintext);
    let mut out = String::with_capacity(2 * (IV_LEN + ciphertext.len()));
    out.push_str(&hex::encode(iv));
    out.push_str(&hex::encode(&ciphertext));
    out
}

/// Opens data produced by [`seal`] (what a receiver does with the `data` field).
pub fn open(key: &[u8; 32], data: &str) -> Result<Vec<u8>, SealError> {
    let hex_len = data.len();
    if hex_len < 2 * (IV_LEN + BLOCK_LEN) || hex_len % (2 * BLOCK_LEN) != 0 {
        return Err(SealError::BadLength { hex_len });
    }
    let bytes = hex::decode(data).map_err(|e| SealError::NotHex(e.to_string()))?;
    let (iv, ciphertext) = bytes.split_at(IV_LEN);
    let iv: [u8; IV_LEN] = iv
        .try_into()
        .map_err(|_| SealError::BadLength { hex_len })?;
    Decryptor::new(key.into(), (&iv).into())
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .map_err(|_| SealError::WrongKeyOrCorrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    #[test]
    fn a_sealed_payload_opens_to_the_same_bytes() {
        let sealed = seal(&KEY, br#"{"type":"applicantCreated"}"#).unwrap();
        assert_eq!(
            open(&KEY, &sealed).unwrap(),
            br#"{"type":"applicantCreated"}"#
        );
    }

    #[test]
    fn the_wire_form_is_a_32_char_lowercase_hex_iv_then_whole_blocks() {
        let sealed = seal(&KEY, b"0123456789abcdef").unwrap();
        // 16 bytes of plaintext pad to two blocks under PKCS#7.
        assert_eq!(sealed.len(), 32 + 64);
        assert!(sealed
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn every_seal_uses_a_fresh_iv() {
        let a = seal(&KEY, b"same").unwrap();
        let b = seal(&KEY, b"same").unwrap();
        assert_ne!(a[..32], b[..32]);
        assert_ne!(a, b);
    }

    #[test]
    fn known_answer_matches_the_aes_256_cbc_nist_vector() {
        // NIST SP 800-38A F.2.5 (CBC-AES256.Encrypt), first block; PKCS#7 then adds one padding block.
        let key =
            parse_key("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4").unwrap();
        let iv: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f")
            .unwrap()
            .try_into()
            .unwrap();
        let pt = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let sealed = seal_with_iv(&key, &iv, &pt);
        assert_eq!(&sealed[32..64], "f58c4c04d6e5f1ba779eabfb5f7bfbd6");
    }

    #[test]
    fn a_wrong_key_is_reported_not_garbage() {
        let sealed = seal(&KEY, b"{\"a\":1}").unwrap();
        let other = [8u8; 32];
        // Bad padding is detected with overwhelming probability; either way we never get the plaintext back.
        assert_ne!(
            open(&other, &sealed).ok().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
    }

    #[test]
    fn malformed_data_and_keys_are_refused() {
        assert!(matches!(
            open(&KEY, "abc"),
            Err(SealError::BadLength { .. })
        ));
        assert!(matches!(
            open(&KEY, &"z".repeat(64)),
            Err(SealError::NotHex(_))
        ));
        assert!(matches!(
            parse_key("00ff"),
            Err(SealError::InvalidKey { got: 4 })
        ));
    }
}
