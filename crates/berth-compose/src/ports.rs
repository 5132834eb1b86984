//! `ports` and `expose`: the short syntax
//! `[HOST_IP:][HOST[-HOST]:]CONTAINER[-CONTAINER][/PROTOCOL]`, the long
//! syntax `{target, published, protocol, mode}`, and port ranges. A port
//! with no host side is only exposed: berth does not pick random host ports.

use berth_core::{PortMapping, Protocol, MAX_PORTS};

use crate::diagnostics::{Located, Position, Result};
use crate::service::ServiceReader;
use crate::values::keyword;
use crate::yaml::{Node, Value};

/// An inclusive run of ports, as `8000-8010` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    fn ports(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

/// One short-syntax entry, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShortPort<'t> {
    host_ip: Option<&'t str>,
    /// `None` when the entry names only the container port; `Some(None)`
    /// when it asks for a random host port (`127.0.0.1::80`).
    host: Option<Option<PortRange>>,
    container: PortRange,
    protocol: Protocol,
}

impl ServiceReader<'_> {
    pub(crate) fn read_ports(&mut self, node: &Node, path: &str) -> Result<()> {
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match &item.value {
                Value::Map(_) => self.read_long_port(item, &item_path)?,
                _ => self.read_short_port(item, &item_path)?,
            }
        }
        Ok(())
    }

    fn read_short_port(&mut self, node: &Node, path: &str) -> Result<()> {
        let text = node.text(path)?;
        let port = parse_short_port(text).map_err(|reason| {
            Located::new(node.pos, format!("{path}: '{text}' {reason} (expected [HOST_IP:][HOST:]CONTAINER[/tcp|udp])"))
        })?;
        if let Some(ip) = port.host_ip {
            self.diagnostics.warn(
                node.pos,
                format!(
                    "{path}: the host IP {ip} is ignored; berth publishes on the address of the node running the task"
                ),
            );
        }
        match port.host {
            Some(Some(host)) => self.publish(host, port.container, port.protocol, node.pos, path),
            Some(None) => {
                self.diagnostics
                    .warn(node.pos, format!("{path}: berth does not pick random host ports; the port is only exposed"));
                self.expose_range(port.container, port.protocol, node.pos, path)
            }
            None => self.expose_range(port.container, port.protocol, node.pos, path),
        }
    }

    fn read_long_port(&mut self, node: &Node, path: &str) -> Result<()> {
        const MODES: [(&str, ()); 2] = [("ingress", ()), ("host", ())];
        let mut target = None;
        let mut published = None;
        let mut protocol = Protocol::Tcp;
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            let value = &option.value;
            let range = |node: &Node| {
                let text = node.text(&option_path)?;
                parse_range(text).map_err(|reason| Located::new(node.pos, format!("{option_path}: '{text}' {reason}")))
            };
            match option.key.as_str() {
                "target" => target = Some(range(value)?),
                "published" => published = Some(range(value)?),
                "protocol" => protocol = parse_protocol(value, &option_path)?,
                // berth publishes on the node that runs the task, whatever the mode.
                "mode" => keyword(value, &option_path, &MODES)?,
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        let target =
            target.ok_or_else(|| Located::new(node.pos, format!("{path}: target (the container port) is required")))?;
        match published {
            Some(host) => self.publish(host, target, protocol, node.pos, path),
            None => self.expose_range(target, protocol, node.pos, path),
        }
    }

    pub(crate) fn read_expose(&mut self, node: &Node, path: &str) -> Result<()> {
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let text = item.text(&item_path)?;
            let (ports, protocol) = split_protocol(text)
                .and_then(|(ports, protocol)| Ok((parse_range(ports)?, protocol)))
                .map_err(|reason| {
                    Located::new(item.pos, format!("{item_path}: '{text}' {reason} (expected PORT[/tcp|udp])"))
                })?;
            self.expose_range(ports, protocol, item.pos, &item_path)?;
        }
        Ok(())
    }

    fn publish(
        &mut self,
        host: PortRange,
        container: PortRange,
        protocol: Protocol,
        pos: Position,
        path: &str,
    ) -> Result<()> {
        if host.len() != container.len() {
            return Err(Located::new(
                pos,
                format!(
                    "{path}: the host range has {} ports and the container range {}; they must match",
                    host.len(),
                    container.len()
                ),
            ));
        }
        for (host_port, container_port) in host.ports().zip(container.ports()) {
            self.mark(format!("ports[{}]", self.spec.ports.len()), pos);
            self.spec.ports.push(PortMapping { host_port, container_port, protocol });
        }
        Ok(())
    }

    fn expose_range(&mut self, ports: PortRange, protocol: Protocol, pos: Position, path: &str) -> Result<()> {
        if protocol == Protocol::Udp {
            self.diagnostics.warn(pos, format!("{path}: berth exposes ports without a protocol; udp is not kept"));
        }
        for port in ports.ports() {
            if !self.spec.expose.contains(&port) {
                self.mark(format!("expose[{}]", self.spec.expose.len()), pos);
                self.spec.expose.push(port);
            }
        }
        Ok(())
    }
}

fn parse_protocol(node: &Node, path: &str) -> Result<Protocol> {
    keyword(node, path, &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)])
}

fn split_protocol(text: &str) -> std::result::Result<(&str, Protocol), String> {
    match text.rsplit_once('/') {
        None => Ok((text, Protocol::Tcp)),
        Some((ports, "tcp")) => Ok((ports, Protocol::Tcp)),
        Some((ports, "udp")) => Ok((ports, Protocol::Udp)),
        Some((_, other)) => Err(format!("has protocol '{other}', which is not tcp or udp")),
    }
}

fn parse_short_port(text: &str) -> std::result::Result<ShortPort<'_>, String> {
    let (address, protocol) = split_protocol(text)?;
    let (host_ip, ports) = split_host_ip(address)?;
    let (host, container) = match ports.rsplit_once(':') {
        None if host_ip.is_none() => (None, ports),
        None => return Err("gives a host IP but no host port".to_string()),
        Some(("", container)) => (Some(None), container),
        Some((host, container)) => (Some(Some(parse_range(host)?)), container),
    };
    if host.is_some_and(|h| h.is_none()) && host_ip.is_none() {
        return Err("has an empty host port".to_string());
    }
    Ok(ShortPort { host_ip, host, container: parse_range(container)?, protocol })
}

/// Takes `IP:` (or `[IPv6]:`) off `IP:HOST:CONTAINER`.
fn split_host_ip(address: &str) -> std::result::Result<(Option<&str>, &str), String> {
    if let Some(bracketed) = address.strip_prefix('[') {
        let (ip, rest) = bracketed.split_once("]:").ok_or("has an IPv6 address without ']:'")?;
        return Ok((Some(ip), rest));
    }
    match address.split(':').count() {
        1 | 2 => Ok((None, address)),
        3 => Ok(address.split_once(':').map(|(ip, rest)| (Some(ip), rest)).unwrap_or((None, address))),
        _ => Err("has too many ':'".to_string()),
    }
}

fn parse_range(text: &str) -> std::result::Result<PortRange, String> {
    let port = |part: &str| match part.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("has '{part}', which is not a port from 1 to 65535")),
    };
    let range = match text.split_once('-') {
        Some((first, last)) => PortRange { first: port(first)?, last: port(last)? },
        None => {
            let single = port(text)?;
            PortRange { first: single, last: single }
        }
    };
    if range.first > range.last {
        return Err("is a range that ends before it starts".to_string());
    }
    if range.len() > MAX_PORTS {
        return Err(format!("is a range of more than {MAX_PORTS} ports"));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn short_syntax_is_taken_apart() {
        let parse = |text| parse_short_port(text).expect("valid");
        assert_eq!(
            parse("8080:80"),
            ShortPort {
                host_ip: None,
                host: Some(Some(range(8080, 8080))),
                container: range(80, 80),
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(parse("53:53/udp").protocol, Protocol::Udp);
        assert_eq!(parse("127.0.0.1:8080:80").host_ip, Some("127.0.0.1"));
        assert_eq!(parse("[::1]:8080:80").host_ip, Some("::1"));
        assert_eq!(parse("127.0.0.1::80").host, Some(None));
        assert_eq!(parse("80").host, None);
        assert_eq!(parse("8000-8002:9000-9002").host, Some(Some(range(8000, 8002))));
    }

    #[test]
    fn bad_short_ports_are_refused() {
        for bad in ["", "http", "0:80", "80:0", "70000:80", "80/sctp", "a:b:c:d", ":80", "9-1", "1-1000"] {
            assert!(parse_short_port(bad).is_err(), "{bad} should be refused");
        }
    }
}
