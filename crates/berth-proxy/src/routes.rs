//! The route table the proxy serves — which backends answer for an HTTP host
//! or a TCP port, and how one of them is chosen — with the pure checks and
//! host matching the proxy runs on it. Plain data: no I/O, no clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::error::ProxyError;

/// The longest host name matched, in bytes (DNS allows 253; a little slack
/// for a trailing dot). Longer `Host` headers get 400 without a lookup.
pub const MAX_HOST_BYTES: usize = 255;

/// One task able to serve a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The task id the backend belongs to; with `addr` it names the backend
    /// across route swaps, so a new task on a reused address gets fresh
    /// connections rather than the old task's pooled ones.
    pub id: String,
    pub addr: SocketAddr,
}

/// How a route spreads requests (HTTP) or connections (TCP) over its backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Each backend in turn, one counter per route.
    #[default]
    RoundRobin,
    /// The backend with the fewest requests or connections in flight through
    /// this proxy; ties go round-robin.
    LeastConnections,
}

/// The backends behind one host or port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub backends: Vec<Backend>,
    pub balance: Balance,
}

/// Everything the proxy serves. `http` keys are host names (`web.test`) or
/// wildcards (`*.example.test`, matching any name below `example.test` but
/// not `example.test` itself); an exact name beats a wildcard, and a longer
/// wildcard beats a shorter one. `tcp` keys are the ports to listen on, on
/// the proxy's TCP address; `tcp_at` keys are whole addresses, such as a
/// service's virtual IP and port, which need not be local yet when the
/// table is set (the listener takes connections once the address is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub http: BTreeMap<String, Route>,
    pub tcp: BTreeMap<u16, Route>,
    pub tcp_at: BTreeMap<SocketAddr, Route>,
}

/// A route host from the table, checked and in the form requests are matched in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// A full name, lower case, no trailing dot.
    Exact(String),
    /// The suffix a wildcard matches, with its leading dot: `*.Example.test`
    /// becomes `.example.test`.
    Wildcard(String),
}

/// Checks a host key of the route table and turns it into the form requests
/// are matched in.
pub(crate) fn parse_route_host(host: &str) -> Result<HostPattern, ProxyError> {
    let invalid = |reason: &'static str| ProxyError::InvalidHost { host: host.to_owned(), reason };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(invalid("it is empty; give a name such as web.example.test or *.example.test"));
    }
    if name.len() > MAX_HOST_BYTES {
        return Err(invalid("it is longer than 255 bytes"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'))) {
        return Err(if bad == ':' {
            invalid("it has a port; routes match a host on any port, so give the name alone")
        } else {
            invalid("only letters, digits, '-', '_', '.' and a leading '*.' are accepted")
        });
    }
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if rest.contains('*') {
        return Err(invalid("'*' is accepted only as a whole first label, as in *.example.test"));
    }
    if rest.is_empty() || rest.starts_with('.') || rest.ends_with('.') || rest.contains("..") {
        return Err(invalid("it has an empty label"));
    }
    let lower = rest.to_ascii_lowercase();
    Ok(if wildcard { HostPattern::Wildcard(format!(".{lower}")) } else { HostPattern::Exact(lower) })
}

/// Why a request's host cannot be looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadHost {
    Empty,
    TooLong,
}

/// The host part of a `Host` header or URI authority: the port and a
/// trailing dot removed, lower-cased into `buf` only when it has upper-case
/// letters (so the common request allocates nothing and copies nothing).
pub(crate) fn request_host<'a>(raw: &'a str, buf: &'a mut [u8; MAX_HOST_BYTES]) -> Result<&'a str, BadHost> {
    let host = strip_port(raw);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(BadHost::Empty);
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(BadHost::TooLong);
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Ok(host);
    }
    let out = &mut buf[..host.len()];
    for (dst, src) in out.iter_mut().zip(host.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    // Lower-casing ASCII letters keeps valid UTF-8 valid.
    std::str::from_utf8(out).map_err(|_| BadHost::Empty)
}

/// `web.test:8080` → `web.test`, `[::1]:80` → `[::1]`; anything else as is.
fn strip_port(raw: &str) -> &str {
    if raw.starts_with('[') {
        return match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        };
    }
    match raw.rfind(':') {
        Some(colon) if raw[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &raw[..colon],
        _ => raw,
    }
}

/// The wildcard suffixes a host could match, longest first: for
/// `a.b.example.test`, `.b.example.test`, then `.example.test`, then `.test`.
pub(crate) fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.match_indices('.').filter(|(at, _)| *at > 0).map(move |(at, _)| &host[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> Result<String, BadHost> {
        let mut buf = [0; MAX_HOST_BYTES];
        request_host(raw, &mut buf).map(str::to_owned)
    }

    #[test]
    fn request_hosts_lose_port_case_and_trailing_dot() {
        for (raw, want) in [
            ("web.test", "web.test"),
            ("web.test:8080", "web.test"),
            ("WEB.Test:80", "web.test"),
            ("web.test.", "web.test"),
            ("Web.Test.:443", "web.test"),
            ("web.test:", "web.test"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("127.0.0.1:9000", "127.0.0.1"),
            ("a:b", "a:b"),
        ] {
            assert_eq!(host(raw), Ok(want.to_owned()), "{raw}");
        }
    }

    #[test]
    fn empty_and_oversized_request_hosts_are_refused() {
        assert_eq!(host(""), Err(BadHost::Empty));
        assert_eq!(host(":80"), Err(BadHost::Empty));
        assert_eq!(host("."), Err(BadHost::Empty));
        assert_eq!(host(&"a".repeat(MAX_HOST_BYTES + 1)), Err(BadHost::TooLong));
        assert_eq!(host(&"A".repeat(MAX_HOST_BYTES)), Ok("a".repeat(MAX_HOST_BYTES)));
    }

    #[test]
    fn route_hosts_are_checked_and_normalised() {
        assert_eq!(parse_route_host("Web.Test").ok(), Some(HostPattern::Exact("web.test".into())));
        assert_eq!(parse_route_host("web.test.").ok(), Some(HostPattern::Exact("web.test".into())));
        assert_eq!(parse_route_host("*.Example.test").ok(), Some(HostPattern::Wildcard(".example.test".into())));
        assert_eq!(parse_route_host("localhost").ok(), Some(HostPattern::Exact("localhost".into())));
        for bad in ["", ".", "web.test:80", "*", "*.", "a.*.test", "*example.test", "we b", "a..b", ".a", "é.test"] {
            let err = parse_route_host(bad).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains(&format!("{bad:?}"))), "{bad:?} -> {err:?}");
        }
    }

    #[test]
    fn wildcard_suffixes_run_longest_first_and_never_match_the_whole_name() {
        let all: Vec<&str> = wildcard_suffixes("a.b.example.test").collect();
        assert_eq!(all, [".b.example.test", ".example.test", ".test"]);
        assert_eq!(wildcard_suffixes("localhost").count(), 0);
    }
}
