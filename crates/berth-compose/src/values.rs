//! Reading typed values out of scalars the way compose writes them:
//! whole numbers, booleans, durations (`1m30s`), sizes (`512M`), CPU counts
//! (`0.5`), keywords from a fixed list, and command lines split like a shell.
//! Every failure names the key and what would be accepted.

use crate::diagnostics::{Located, Result};
use crate::yaml::Node;

pub(crate) fn whole_number(node: &Node, path: &str) -> Result<u32> {
    let text = node.text(path)?;
    text.trim()
        .parse()
        .map_err(|_| Located::new(node.pos, format!("{path}: '{text}' is not a whole number from 0 to {}", u32::MAX)))
}

pub(crate) fn boolean(node: &Node, path: &str) -> Result<bool> {
    let text = node.text(path)?;
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(Located::new(node.pos, format!("{path}: '{text}' is not true or false"))),
    }
}

pub(crate) fn ratio(node: &Node, path: &str) -> Result<f64> {
    let text = node.text(path)?;
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(Located::new(node.pos, format!("{path}: '{text}' is not a number between 0 and 1"))),
    }
}

pub(crate) fn duration_ms(node: &Node, path: &str) -> Result<u64> {
    let text = node.text(path)?;
    parse_duration_ms(text).ok_or_else(|| {
        Located::new(
            node.pos,
            format!("{path}: '{text}' is not a duration (e.g. 10s, 1m30s, 500ms, 1h; units ns us ms s m h)"),
        )
    })
}

pub(crate) fn memory_bytes(node: &Node, path: &str) -> Result<u64> {
    let text = node.text(path)?;
    parse_memory_bytes(text).ok_or_else(|| {
        Located::new(
            node.pos,
            format!("{path}: '{text}' is not a size (a number of bytes, or with a unit: 512k, 512M, 1.5G)"),
        )
    })
}

pub(crate) fn millicpus(node: &Node, path: &str) -> Result<u64> {
    let text = node.text(path)?;
    parse_millicpus(text)
        .ok_or_else(|| Located::new(node.pos, format!("{path}: '{text}' is not a number of CPUs (e.g. 0.5, 2)")))
}

/// One of a fixed set of spellings; the error lists them.
pub(crate) fn keyword<T: Copy>(node: &Node, path: &str, accepted: &[(&str, T)]) -> Result<T> {
    let text = node.text(path)?;
    accepted.iter().find(|(spelling, _)| *spelling == text).map(|(_, value)| *value).ok_or_else(|| {
        let names: Vec<&str> = accepted.iter().map(|(spelling, _)| *spelling).collect();
        Located::new(node.pos, format!("{path}: '{text}' is not one of {}", names.join(", ")))
    })
}

/// A command given as a list, or as one string split like a shell would.
pub(crate) fn command_line(node: &Node, path: &str) -> Result<Vec<String>> {
    if let Some(text) = node.scalar() {
        return split_shell_words(text).map_err(|reason| Located::new(node.pos, format!("{path}: {reason}")));
    }
    if node.is_null() {
        return Ok(Vec::new());
    }
    let items = node.seq(path).map_err(|_| node.expected(path, "a string or a list of strings"))?;
    items.iter().enumerate().map(|(i, item)| Ok(item.text(&format!("{path}[{i}]"))?.to_string())).collect()
}

/// Go's `time.ParseDuration` syntax, which compose uses: `300ms`, `1.5h`, `2h45m`.
fn parse_duration_ms(text: &str) -> Option<u64> {
    const UNITS_NS: [(&str, f64); 8] =
        [("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("μs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3_600e9)];
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total_ns = 0.0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let (_, unit_ns) = UNITS_NS.iter().find(|(unit, _)| *unit == &rest[..unit_len])?;
        total_ns += number * unit_ns;
        rest = &rest[unit_len..];
    }
    let ms = (total_ns / 1e6).round();
    (ms.is_finite() && ms < u64::MAX as f64).then_some(ms as u64)
}

/// Docker's `RAMInBytes`: a number with an optional binary unit, `b`, `k`,
/// `m`, `g`, `t` or `p`, optionally followed by `i` and/or `b`.
fn parse_memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let number_len = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let number: f64 = text[..number_len].parse().ok()?;
    let unit = text[number_len..].trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let exponent = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    let bytes = (number * 1024f64.powi(exponent)).floor();
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn parse_millicpus(text: &str) -> Option<u64> {
    /// More CPUs than any machine has; it keeps the conversion in range.
    const MAX_CPUS: f64 = 1e6;
    let cpus: f64 = text.trim().parse().ok()?;
    (cpus.is_finite() && (0.0..=MAX_CPUS).contains(&cpus)).then(|| (cpus * 1000.0).round() as u64)
}

/// Splits a command line into words as a POSIX shell would for plain
/// commands: whitespace separates, quotes group, backslash escapes. There is
/// no expansion of variables or globs, as in compose.
pub(crate) fn split_shell_words(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let quoted = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => quoted.push(c),
                        None => return Err(format!("'{text}' has an unclosed single quote")),
                    }
                }
            }
            '"' => {
                let quoted = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => quoted.push(c),
                            Some(c) => {
                                quoted.push('\\');
                                quoted.push(c);
                            }
                            None => return Err(format!("'{text}' has an unclosed double quote")),
                        },
                        Some(c) => quoted.push(c),
                        None => return Err(format!("'{text}' has an unclosed double quote")),
                    }
                }
            }
            '\\' => {
                let escaped = chars.next().ok_or_else(|| format!("'{text}' ends with a lone backslash"))?;
                word.get_or_insert_with(String::new).push(escaped);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Joins words into one shell command line that splits back into them.
pub(crate) fn shell_join(words: &[String]) -> String {
    words.iter().map(|word| shell_quote(word)).collect::<Vec<_>>().join(" ")
}

fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_compose() {
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1.5h"), Some(5_400_000));
        assert_eq!(parse_duration_ms("0"), Some(0));
        for bad in ["", "10", "10x", "s", "-1s", "1..5s", "1e400h"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_memory_bytes("512M"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_memory_bytes("1gb"), Some(1 << 30));
        assert_eq!(parse_memory_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_memory_bytes("1048576"), Some(1_048_576));
        assert_eq!(parse_memory_bytes("64 k"), Some(65_536));
        for bad in ["", "M", "1X", "-5M", "1.2.3M"] {
            assert_eq!(parse_memory_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpus_become_millicpus() {
        assert_eq!(parse_millicpus("0.5"), Some(500));
        assert_eq!(parse_millicpus("2"), Some(2_000));
        assert_eq!(parse_millicpus("0.25"), Some(250));
        assert_eq!(parse_millicpus("-1"), None);
        assert_eq!(parse_millicpus("lots"), None);
    }

    #[test]
    fn command_lines_split_like_a_shell() {
        let words = |s: &str| split_shell_words(s).expect("splits");
        assert_eq!(words("nginx -g 'daemon off;'"), ["nginx", "-g", "daemon off;"]);
        assert_eq!(words(r#"sh -c "echo \"hi\" $HOME""#), ["sh", "-c", r#"echo "hi" $HOME"#]);
        assert_eq!(words(r"a\ b  c ''"), ["a b", "c", ""]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert!(split_shell_words("echo 'oops").is_err());
        assert!(split_shell_words("echo \"oops").is_err());
        assert!(split_shell_words("echo \\").is_err());
    }

    #[test]
    fn joined_words_split_back() {
        let words: Vec<String> =
            ["curl", "-f", "http://localhost/health check", "it's", ""].iter().map(|s| s.to_string()).collect();
        let line = shell_join(&words);
        assert_eq!(line, r"curl -f 'http://localhost/health check' 'it'\''s' ''");
        assert_eq!(split_shell_words(&line).expect("splits"), words);
    }
}
