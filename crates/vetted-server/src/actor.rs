//! Who is calling and from where: the actor and environment stamped on every event, which the
//! timeline shows to auditors.
use std::net::SocketAddr;

use axum::http::HeaderMap;
use vetted_store::{Actor, ActorKind};

/// Builds the actor of a request.
///
/// The client backend calls with its private key (`api`, id = app key). It may say on whose behalf
/// with `X-Vetted-Actor: applicant` or `X-Vetted-Actor: reviewer:<id>`, and pass the end user's
/// environment with `X-Forwarded-For` / `X-Vetted-Client-Ip` and `X-Vetted-User-Agent`; otherwise
/// the peer address and the request's `User-Agent` are recorded.
pub fn from_request(
    kind_default: ActorKind,
    id_default: Option<String>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Actor {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (kind, id) = match header("x-vetted-actor") {
        Some("applicant") => (ActorKind::Applicant, id_default.clone()),
        Some(v) if v.starts_with("reviewer:") && v.len() > "reviewer:".len() => (
            ActorKind::Reviewer,
            Some(v["reviewer:".len()..].chars().take(128).collect()),
        ),
        _ => (kind_default, id_default),
    };
    let ip = header("x-vetted-client-ip")
        .map(str::to_string)
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
        })
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .map(|ip| ip.chars().take(64).collect::<String>());
    let user_agent = header("x-vetted-user-agent")
        .or_else(|| header("user-agent"))
        .map(|ua| ua.chars().take(512).collect::<String>());
    let (os, browser) = match user_agent.as_deref() {
        Some(ua) => (detect_os(ua), detect_browser(ua)),
        None => (None, None),
    };
    Actor {
        kind,
        id,
        ip,
        user_agent,
        os,
        browser,
    }
}

/// The operating system named by a user agent, when it names a common one.
pub fn detect_os(ua: &str) -> Option<String> {
    const OSES: &[(&str, &str)] = &[
        ("Windows NT", "Windows"),
        ("iPhone", "iOS"),
        ("iPad", "iOS"),
        ("Android", "Android"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ];
    OSES.iter()
        .find(|(needle, _)| ua.contains(needle))
        .map(|(_, name)| name.to_string())
}

/// The browser (or HTTP client) named by a user agent, when it names a common one.
pub fn detect_browser(ua: &str) -> Option<String> {
    // Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari".
    const BROWSERS: &[(&str, &str)] = &[
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ];
    BROWSERS
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map(|(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chrome_on_windows_user_agent_is_recognised() {
        let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(detect_os(ua).as_deref(), Some("Windows"));
        assert_eq!(detect_browser(ua).as_deref(), Some("Chrome"));
    }

    #[test]
    fn the_end_users_environment_is_taken_from_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        h.insert(
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1"
                .parse()
                .unwrap(),
        );
        h.insert("x-vetted-actor", "reviewer:rev-1".parse().unwrap());
        let actor = from_request(
            ActorKind::Api,
            Some("app".into()),
            &h,
            Some("127.0.0.1:5000".parse().unwrap()),
        );
        assert_eq!(actor.kind, ActorKind::Reviewer);
        assert_eq!(actor.id.as_deref(), Some("rev-1"));
        assert_eq!(actor.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(actor.os.as_deref(), Some("iOS"));
        assert_eq!(actor.browser.as_deref(), Some("Safari"));
    }

    #[test]
    fn without_headers_the_peer_address_is_recorded() {
        let actor = from_request(
            ActorKind::Api,
            Some("app".into()),
            &HeaderMap::new(),
            Some("127.0.0.1:5000".parse().unwrap()),
        );
        assert_eq!(actor.kind, ActorKind::Api);
        assert_eq!(actor.ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(actor.user_agent, None);
    }
}
