//! Parsers for flag values that are more than a number or a word: durations,
//! memory sizes, `NAME=REPLICAS`, keyword enums. Each error says what would
//! have been accepted, because clap prints it as the whole explanation.

use std::str::FromStr;

use berth_core::Protocol;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// A clap parser for one of berth-core's keyword enums. Listing the
/// spellings (rather than only calling `FromStr`) lets clap show them in
/// `--help` and suggest the nearest one on a typo.
pub fn keyword<T>(all: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(all.iter().copied()).try_map(|s| s.parse::<T>())
}

/// `NAME[:FILE]`: a secret and the file name it is mounted as.
pub fn secret_ref(text: &str) -> Result<berth_core::SecretRef, String> {
    let (name, target) = text.split_once(':').unwrap_or((text, ""));
    if name.is_empty() {
        return Err(format!("'{text}' is not NAME[:FILE]"));
    }
    Ok(berth_core::SecretRef { name: name.to_string(), target: target.to_string() })
}

/// Where a load balancer listens, or `None` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyListen(pub Option<std::net::SocketAddr>);

/// `HOST:PORT`, or `off`.
pub fn proxy_listen(text: &str) -> Result<ProxyListen, String> {
    if text == "off" {
        return Ok(ProxyListen(None));
    }
    text.parse()
        .map(|a| ProxyListen(Some(a)))
        .map_err(|_| format!("'{text}' is not an address such as 0.0.0.0:80, or off"))
}

/// Parses a human duration (`10s`, `500ms`, `1m30s`) into milliseconds, the
/// unit every duration has on the wire.
pub fn duration_ms(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration such as 10s, 500ms or 1m ({e})"))?;
    i64::try_from(duration.as_millis()).map_err(|_| format!("'{text}' is too long"))
}

/// Parses a memory size: plain bytes, or a number with a binary suffix
/// `k`, `m`, `g` (optionally followed by `b` or `ib`, any case), so
/// `512m`, `512MiB` and `536870912` are the same.
pub fn memory_bytes(text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}' is not a size such as 536870912, 512m or 1g");
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad());
    }
    let shift = match suffix {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    let number: i64 = digits.parse().map_err(|_| bad())?;
    number.checked_mul(1_i64 << shift).ok_or_else(|| format!("'{text}' is too large"))
}

/// One `NAME=REPLICAS` argument of `service scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTarget {
    pub name: String,
    /// Signed, so a negative count reaches the manager and is refused there.
    pub replicas: i64,
}

pub fn scale_target(text: &str) -> Result<ScaleTarget, String> {
    let bad = || format!("'{text}' is not NAME=REPLICAS, e.g. web=3");
    let (name, count) = text.rsplit_once('=').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    let replicas = count.trim().parse().map_err(|_| bad())?;
    Ok(ScaleTarget { name: name.to_string(), replicas })
}

/// A `--label KEY=VALUE` argument. The value may be empty or hold '='.
pub fn label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE, e.g. team=web")),
    }
}

/// A `--publish-rm` argument: a host port, on one protocol or on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPort {
    pub host_port: u16,
    pub protocol: Option<Protocol>,
}

pub fn published_port(text: &str) -> Result<PublishedPort, String> {
    let bad = || format!("'{text}' is not HOST_PORT[/tcp|udp], e.g. 8080 or 53/udp");
    let (port, protocol) = match text.split_once('/') {
        Some((port, protocol)) => (port, Some(protocol.parse().map_err(|_| bad())?)),
        None => (text, None),
    };
    let host_port = port.parse().map_err(|_| bad())?;
    Ok(PublishedPort { host_port, protocol })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_milliseconds() {
        assert_eq!(duration_ms("10s"), Ok(10_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("1m"), Ok(60_000));
        assert_eq!(duration_ms("1m 30s"), Ok(90_000));
        assert_eq!(duration_ms("0s"), Ok(0));
    }

    #[test]
    fn a_duration_without_unit_is_refused_with_examples() {
        let err = duration_ms("10").expect_err("no unit");
        assert!(err.contains("10s, 500ms or 1m"), "{err}");
        assert!(duration_ms("-5s").is_err());
    }

    #[test]
    fn memory_accepts_bytes_and_binary_suffixes() {
        assert_eq!(memory_bytes("536870912"), Ok(536_870_912));
        assert_eq!(memory_bytes("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(memory_bytes("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(memory_bytes("64k"), Ok(64 * 1024));
        assert_eq!(memory_bytes("2G"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(memory_bytes("100b"), Ok(100));
    }

    #[test]
    fn memory_refuses_what_it_cannot_read() {
        for text in ["", "m", "-1", "1.5g", "12x", "1t", "99999999999999999999"] {
            assert!(memory_bytes(text).is_err(), "{text:?} should be refused");
        }
        let err = memory_bytes("9000000000000g").expect_err("overflow");
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn scale_targets_keep_negative_counts_for_the_server() {
        assert_eq!(scale_target("web=3"), Ok(ScaleTarget { name: "web".into(), replicas: 3 }));
        assert_eq!(scale_target("web=-1").map(|t| t.replicas), Ok(-1));
        for text in ["web", "=3", "web=", "web=three"] {
            assert!(scale_target(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn labels_need_a_key_and_keep_the_rest_as_value() {
        assert_eq!(label("team=web"), Ok(("team".into(), "web".into())));
        assert_eq!(label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(label("empty="), Ok(("empty".into(), String::new())));
        for text in ["team", "=web", ""] {
            assert!(label(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn published_ports_name_a_protocol_or_both() {
        assert_eq!(published_port("8080"), Ok(PublishedPort { host_port: 8080, protocol: None }));
        assert_eq!(published_port("53/udp").map(|p| p.protocol), Ok(Some(Protocol::Udp)));
        assert!(published_port("53/sctp").is_err());
        assert!(published_port("port").is_err());
    }
}
