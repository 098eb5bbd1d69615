//! Where and how an application receives webhooks: URL, custom headers, crypto key and signing
//! secrets. The server owns the application registry and implements [`EndpointDirectory`] over it;
//! [`MemoryEndpoints`] is a ready in-memory directory (tests, single-node servers).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::seal::{parse_key, SealError};
use crate::signature::{SignatureError, SigningSecret};

/// Headers Vetted sets itself; an application's custom headers may not replace them.
pub const RESERVED_HEADERS: [&str; 4] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
];

/// Why an endpoint configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The webhook URL does not parse or is not http(s).
    #[error("webhook URL {url:?} is not a valid http(s) URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A custom header name or value is not valid HTTP, or would replace a header Vetted signs.
    #[error("custom header {name:?} is refused: {reason}")]
    InvalidHeader { name: String, reason: String },
    /// The crypto key is not 64 hex characters.
    #[error(transparent)]
    CryptoKey(#[from] SealError),
    /// The signing secret is not `whsec_<base64>`.
    #[error(transparent)]
    Secret(#[from] SignatureError),
    /// The application has no endpoint to update.
    #[error("application {0} has no webhook endpoint; create one with a URL first")]
    UnknownApplication(String),
}

/// One application's webhook endpoint. Its `Debug` shows no secret: the key, the secrets,
/// custom header values and the URL's credentials and query are left out.
#[derive(Clone)]
pub struct Endpoint {
    /// Where webhooks are POSTed.
    pub url: reqwest::Url,
    /// Sent with every webhook, before Vetted's own headers.
    pub headers: BTreeMap<String, String>,
    /// AES-256 key that seals every payload.
    pub crypto_key: [u8; 32],
    /// The current signing secret.
    pub secret: SigningSecret,
    /// The secret being rotated out and until when it still signs (both signatures are sent).
    pub previous_secret: Option<(SigningSecret, DateTime<Utc>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redacted_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("crypto_key", &"…")
            .field("secret", &self.secret)
            .field(
                "previous_secret_until",
                &self.previous_secret.as_ref().map(|(_, until)| until),
            )
            .finish()
    }
}

/// A URL as it may be logged: scheme, host, port and path; no credentials, query or fragment.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// Checks a webhook URL: http(s), with a host.
pub fn check_url(url: &str) -> Result<reqwest::Url, EndpointError> {
    let invalid = |reason: String| EndpointError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(parsed),
        "http" | "https" => Err(invalid("it has no host".into())),
        other => Err(invalid(format!("scheme {other:?} is not http or https"))),
    }
}

/// Checks custom webhook headers: valid names and values, none of the names Vetted sets itself.
pub fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), EndpointError> {
    for (name, value) in headers {
        let refuse = |reason: &str| EndpointError::InvalidHeader {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        if RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(refuse("Vetted sets this header itself"));
        }
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| refuse("not a valid header name"))?;
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| refuse("value is not valid header text"))?;
    }
    Ok(())
}

impl Endpoint {
    /// Validates and builds an endpoint from the application's stored fields.
    pub fn new(
        url: &str,
        headers: BTreeMap<String, String>,
        crypto_key_hex: &str,
        signing_secret: &str,
    ) -> Result<Self, EndpointError> {
        check_headers(&headers)?;
        Ok(Endpoint {
            url: check_url(url)?,
            headers,
            crypto_key: parse_key(crypto_key_hex)?,
            secret: SigningSecret::parse(signing_secret)?,
            previous_secret: None,
        })
    }

    /// The endpoint of a stored application; `Ok(None)` when it has no webhook URL.
    pub fn from_application(
        app: &vetted_domain::Application,
    ) -> Result<Option<Self>, EndpointError> {
        app.webhook_url
            .as_deref()
            .map(|url| {
                Endpoint::new(
                    url,
                    app.webhook_headers.clone(),
                    &app.crypto_key,
                    &app.signing_secret,
                )
            })
            .transpose()
    }

    /// The secrets that sign at `now`: the current one, then the previous one while its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&SigningSecret> {
        let mut out = vec![&self.secret];
        if let Some((old, until)) = &self.previous_secret {
            if now < *until {
                out.push(old);
            }
        }
        out
    }

    /// Applies an update; a new signing secret starts a rotation in which the old one keeps
    /// signing until `now + update.rotation_overlap`.
    pub fn apply(
        &mut self,
        update: EndpointUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), EndpointError> {
        // Validate everything before changing anything, so a refused update changes nothing.
        let url = update.url.as_deref().map(check_url).transpose()?;
        if let Some(headers) = &update.headers {
            check_headers(headers)?;
        }
        let key = update.crypto_key.as_deref().map(parse_key).transpose()?;
        let secret = update
            .signing_secret
            .as_deref()
            .map(SigningSecret::parse)
            .transpose()?;
        if let Some(url) = url {
            self.url = url;
        }
        if let Some(headers) = update.headers {
            self.headers = headers;
        }
        if let Some(key) = key {
            self.crypto_key = key;
        }
        if let Some(secret) = secret {
            if secret != self.secret {
                let old = std::mem::replace(&mut self.secret, secret);
                // An absurd overlap keeps the old secret for good rather than overflowing.
                let until = now
                    .checked_add_signed(update.rotation_overlap)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                self.previous_secret = Some((old, until));
            }
        }
        Ok(())
    }
}

/// A change to an endpoint; `None` fields stay as they are. Its `Debug` says which fields
/// change, never their secret values.
#[derive(Clone)]
pub struct EndpointUpdate {
    /// New webhook URL.
    pub url: Option<String>,
    /// New custom headers (replace the old set).
    pub headers: Option<BTreeMap<String, String>>,
    /// New crypto key (64 hex). Takes effect for the next attempt, retries included.
    pub crypto_key: Option<String>,
    /// New signing secret (`whsec_…`).
    pub signing_secret: Option<String>,
    /// How long the previous secret keeps signing beside the new one.
    pub rotation_overlap: chrono::Duration,
}

impl std::fmt::Debug for EndpointUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |present: bool| if present { "set" } else { "unchanged" };
        f.debug_struct("EndpointUpdate")
            .field("url", &set(self.url.is_some()))
            .field(
                "headers",
                &self.headers.as_ref().map(|h| h.keys().collect::<Vec<_>>()),
            )
            .field("crypto_key", &set(self.crypto_key.is_some()))
            .field("signing_secret", &set(self.signing_secret.is_some()))
            .field("rotation_overlap", &self.rotation_overlap)
            .finish()
    }
}

impl Default for EndpointUpdate {
    fn default() -> Self {
        EndpointUpdate {
            url: None,
            headers: None,
            crypto_key: None,
            signing_secret: None,
            rotation_overlap: chrono::Duration::hours(24),
        }
    }
}

/// Looks up an application's endpoint; the server implements it over its application registry.
pub trait EndpointDirectory: Send + Sync + 'static {
    /// The endpoint of `app_key`, or `None` when the application has no webhook URL.
    fn endpoint(&self, app_key: &str) -> Option<Arc<Endpoint>>;
}

/// An in-memory [`EndpointDirectory`].
#[derive(Debug, Default)]
pub struct MemoryEndpoints {
    endpoints: RwLock<HashMap<String, Arc<Endpoint>>>,
}

impl MemoryEndpoints {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the endpoint of `app_key`.
    pub fn insert(&self, app_key: &str, endpoint: Endpoint) {
        let mut map = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        map.insert(app_key.to_owned(), Arc::new(endpoint));
    }

    /// Removes the endpoint of `app_key` (webhooks for it then wait and retry).
    pub fn remove(&self, app_key: &str) {
        self.endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app_key);
    }

    /// Updates the endpoint of `app_key` (see [`Endpoint::apply`]) and returns the new one.
    pub fn update(
        &self,
        app_key: &str,
        update: EndpointUpdate,
    ) -> Result<Arc<Endpoint>, EndpointError> {
        let mut map = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        let current = map
            .get(app_key)
            .ok_or_else(|| EndpointError::UnknownApplication(app_key.to_owned()))?;
        let mut next = Endpoint::clone(current);
        next.apply(update, Utc::now())?;
        let next = Arc::new(next);
        map.insert(app_key.to_owned(), next.clone());
        Ok(next)
    }
}

impl EndpointDirectory for MemoryEndpoints {
    fn endpoint(&self, app_key: &str) -> Option<Arc<Endpoint>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app_key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn debug_output_shows_no_secret() {
        let headers = BTreeMap::from([("X-Receiver-Token".to_string(), "tok-123".to_string())]);
        let mut endpoint = Endpoint::new(
            "https://user:pa55@hooks.example.com:8443/in?token=q-456",
            headers.clone(),
            KEY,
            SECRET,
        )
        .unwrap();
        let new_secret = SigningSecret::generate().unwrap();
        let update = EndpointUpdate {
            url: Some("https://user:pa55@elsewhere.example.com/".into()),
            headers: Some(headers),
            crypto_key: Some(KEY.into()),
            signing_secret: Some(new_secret.as_str().into()),
            rotation_overlap: chrono::Duration::MAX,
        };
        let new_body = &new_secret.as_str()["whsec_".len()..];
        let shown = format!("{update:?}");
        for secret in ["pa55", "tok-123", KEY, new_body, "elsewhere"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("X-Receiver-Token"), "{shown}");
        // An overlap too long to add keeps the old secret signing instead of panicking.
        endpoint.apply(update, Utc::now()).unwrap();
        assert_eq!(
            endpoint.previous_secret.as_ref().map(|(_, until)| *until),
            Some(DateTime::<Utc>::MAX_UTC)
        );
        let shown = format!("{endpoint:?}");
        for secret in ["pa55", "tok-123", "q-456", "MfKQ9r8", new_body, "1a1b1c"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://elsewhere.example.com/"), "{shown}");
        let crypto_bytes = format!("{:?}", endpoint.crypto_key);
        assert!(!shown.contains(&crypto_bytes), "{shown}");
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends() {
        let mut endpoint =
            Endpoint::new("http://127.0.0.1:9/hook", BTreeMap::new(), KEY, SECRET).unwrap();
        let new = SigningSecret::generate().unwrap();
        let now = Utc::now();
        let update = EndpointUpdate {
            signing_secret: Some(new.as_str().into()),
            ..Default::default()
        };
        endpoint.apply(update, now).unwrap();
        let during: Vec<&str> = endpoint
            .signing_secrets(now)
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(during, vec![new.as_str(), SECRET]);
        let after = endpoint.signing_secrets(now + chrono::Duration::hours(25));
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn custom_headers_cannot_replace_the_signature_headers() {
        let headers = BTreeMap::from([("Webhook-Signature".to_owned(), "v1,forged".to_owned())]);
        let err = Endpoint::new("http://127.0.0.1:9/hook", headers, KEY, SECRET).unwrap_err();
        assert!(matches!(err, EndpointError::InvalidHeader { .. }));
    }

    #[test]
    fn a_refused_update_changes_nothing() {
        let directory = MemoryEndpoints::new();
        directory.insert(
            "app",
            Endpoint::new("http://127.0.0.1:9/hook", BTreeMap::new(), KEY, SECRET).unwrap(),
        );
        let bad = EndpointUpdate {
            url: Some("http://127.0.0.1:9/new".into()),
            crypto_key: Some("00".into()),
            ..Default::default()
        };
        assert!(matches!(
            directory.update("app", bad),
            Err(EndpointError::CryptoKey(_))
        ));
        assert_eq!(
            directory.endpoint("app").unwrap().url.as_str(),
            "http://127.0.0.1:9/hook"
        );
        assert!(matches!(
            Endpoint::new("ftp://x/", BTreeMap::new(), KEY, SECRET),
            Err(EndpointError::InvalidUrl { .. })
        ));
    }
}
