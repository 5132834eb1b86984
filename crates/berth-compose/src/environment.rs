//! A service's environment: `env_file` (read through the caller's closure,
//! in the dotenv syntax compose reads) and `environment` (a list or a
//! mapping; a bare name takes its value from the caller's variables), with
//! `environment` winning. `VIRTUAL_HOST` also names the service's virtual hosts.

use std::str::Lines;

use berth_core::EnvVar;

use crate::diagnostics::{Located, Position, Result};
use crate::interpolate::interpolate;
use crate::paths::resolve_host_path;
use crate::service::ServiceReader;
use crate::values::boolean;
use crate::yaml::{Node, Value};

/// Why an env file cannot be read; `line` starts at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

/// The variables a service gets, before `environment` is laid over `env_file`.
#[derive(Debug, Default)]
pub(crate) struct EnvironmentDraft {
    from_files: Vec<(EnvVar, Position)>,
    written: Vec<(EnvVar, Position)>,
}

impl ServiceReader<'_> {
    pub(crate) fn read_environment(&mut self, node: &Node, path: &str) -> Result<()> {
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let text = item.text(&format!("{path}[{i}]"))?;
                    let var = match text.split_once('=') {
                        Some((name, value)) => Some(EnvVar { name: name.to_string(), value: value.to_string() }),
                        None => self.passed_through(text),
                    };
                    self.environment.written.extend(var.map(|var| (var, item.pos)));
                }
            }
            Value::Map(entries) => {
                for entry in entries {
                    let var = match &entry.value.value {
                        Value::Null => self.passed_through(&entry.key),
                        _ => {
                            let value = entry.value.text(&format!("{path}.{}", entry.key))?;
                            Some(EnvVar { name: entry.key.clone(), value: value.to_string() })
                        }
                    };
                    self.environment.written.extend(var.map(|var| (var, entry.key_pos)));
                }
            }
            Value::Null => {}
            Value::Scalar(_) => return Err(node.expected(path, "a list of NAME=VALUE or a mapping")),
        }
        Ok(())
    }

    /// A name without a value is passed through from the caller's
    /// variables, and left out when they do not have it, as compose does.
    fn passed_through(&self, name: &str) -> Option<EnvVar> {
        (self.context.source.env)(name).map(|value| EnvVar { name: name.to_string(), value })
    }

    pub(crate) fn read_env_files(&mut self, node: &Node, path: &str) -> Result<()> {
        if node.scalar().is_some() {
            return self.read_env_file(node, path, true);
        }
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            if item.scalar().is_some() {
                self.read_env_file(item, &item_path, true)?;
                continue;
            }
            let mut required = true;
            let mut file = None;
            for option in item.map(&item_path)? {
                let option_path = format!("{item_path}.{}", option.key);
                match option.key.as_str() {
                    "path" => file = Some(&option.value),
                    "required" => required = boolean(&option.value, &option_path)?,
                    key if key.starts_with("x-") => {}
                    _ => self.diagnostics.unsupported(option.key_pos, &option_path),
                }
            }
            let file = file.ok_or_else(|| Located::new(item.pos, format!("{item_path}: path is required")))?;
            self.read_env_file(file, &format!("{item_path}.path"), required)?;
        }
        Ok(())
    }

    fn read_env_file(&mut self, node: &Node, path: &str, required: bool) -> Result<()> {
        let source = self.context.source;
        let text = node.text(path)?;
        let file = resolve_host_path(source.base_dir, text, source.env)
            .map_err(|reason| Located::new(node.pos, format!("{path}: {reason}")))?;
        let contents = match (source.read_file)(&file) {
            Ok(contents) => contents,
            // compose skips an optional env file that is not there.
            Err(_) if !required => return Ok(()),
            Err(e) => return Err(Located::new(node.pos, format!("{path}: cannot read {}: {e}", file.display()))),
        };
        let vars = parse_env_file(&contents, source.env)
            .map_err(|e| Located::new(node.pos, format!("{path}: {}: {e}", file.display())))?;
        for (name, value) in vars {
            self.environment.from_files.push((EnvVar { name, value }, node.pos));
        }
        Ok(())
    }

    pub(crate) fn finish_environment(&mut self) {
        let draft = std::mem::take(&mut self.environment);
        let mut merged: Vec<(EnvVar, Position)> = Vec::new();
        for (var, pos) in draft.from_files.into_iter().chain(draft.written) {
            match merged.iter_mut().find(|(known, _)| known.name == var.name) {
                Some(known) => *known = (var, pos),
                None => merged.push((var, pos)),
            }
        }
        for (i, (var, pos)) in merged.into_iter().enumerate() {
            if var.name == "VIRTUAL_HOST" {
                self.virtual_hosts.extend(split_hosts(&var.value).map(|host| (host, pos)));
            }
            self.mark(format!("env[{i}]"), pos);
            self.spec.env.push(var);
        }
    }
}

/// `a.test, b.test` as jwilder's nginx-proxy and Tutum's haproxy read `VIRTUAL_HOST`.
pub(crate) fn split_hosts(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',').map(str::trim).filter(|host| !host.is_empty()).map(str::to_string)
}

/// Reads an env file as compose does: `NAME=VALUE` lines, `#` comments,
/// an optional `export `, single quotes taken literally, double quotes with
/// `\n`-style escapes, and `${VAR}` interpolation outside single quotes from
/// the file's earlier lines, then `env`. A bare `NAME` takes its value from
/// `env` and is left out when `env` does not have it.
pub fn parse_env_file(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<(String, String)>, EnvFileError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut lines = text.strip_prefix('\u{feff}').unwrap_or(text).lines();
    let mut line_number = 0;
    while let Some(line) = lines.next() {
        line_number += 1;
        let first_line = line_number;
        let error = |message: String| EnvFileError { line: first_line, message };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((name, raw)) = line.split_once('=') else {
            check_name(line).map_err(error)?;
            vars.extend(env(line).map(|value| (line.to_string(), value)));
            continue;
        };
        let name = name.trim_end();
        check_name(name).map_err(error)?;
        let lookup = |var: &str| {
            let earlier = vars.iter().rev().find(|(known, _)| known == var);
            earlier.map(|(_, value)| value.clone()).or_else(|| env(var))
        };
        let (value, extra_lines) = read_value(raw.trim_start(), &mut lines, &lookup).map_err(error)?;
        line_number += extra_lines;
        vars.retain(|(known_name, _)| known_name != name);
        vars.push((name.to_string(), value));
    }
    Ok(vars)
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '=') {
        return Err(format!("'{name}' is not a variable name (expected NAME=VALUE)"));
    }
    Ok(())
}

/// A value and how many more lines a quoted value spanned.
fn read_value(
    raw: &str,
    lines: &mut Lines<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(String, usize), String> {
    let (value, extra_lines) = match raw.chars().next() {
        Some('\'') => return quoted(&raw[1..], '\'', lines).ok_or("a single quote is not closed".to_string()),
        Some('"') => {
            let (content, extra) = quoted(&raw[1..], '"', lines).ok_or("a double quote is not closed".to_string())?;
            (unescape_double_quoted(&content), extra)
        }
        _ => (strip_inline_comment(raw).to_string(), 0),
    };
    Ok((interpolate(&value, lookup)?.text, extra_lines))
}

/// The text up to the closing quote, across lines if need be.
fn quoted(first: &str, quote: char, lines: &mut Lines<'_>) -> Option<(String, usize)> {
    let mut content = String::new();
    let mut current = first;
    let mut extra_lines = 0;
    loop {
        if let Some(end) = closing_quote(current, quote) {
            content.push_str(&current[..end]);
            return Some((content, extra_lines));
        }
        content.push_str(current);
        content.push('\n');
        current = lines.next()?;
        extra_lines += 1;
    }
}

fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// `\$` becomes `$$`, so that interpolation leaves a literal `$`.
fn unescape_double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('$') => out.push_str("$$"),
            Some(other @ ('"' | '\\')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value ends where ` #` starts a comment.
fn strip_inline_comment(raw: &str) -> &str {
    let end =
        raw.char_indices().find(|&(i, c)| c == '#' && raw[..i].ends_with([' ', '\t'])).map_or(raw.len(), |(i, _)| i);
    raw[..end].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/ada".into()),
            "FROM_CALLER" => Some("outside".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Vec<(String, String)> {
        parse_env_file(text, &env).expect("valid env file")
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn env_files_read_like_compose() {
        let text = "\
# database
DB_HOST=db
export DB_PORT = 5432
EMPTY=
GREETING='hello $HOME'   # literal
QUOTED=\"a \\\"b\\\"\\n$HOME\"
URL=http://x/#anchor # comment
FROM_CALLER
MISSING
DB_HOST=override
";
        assert_eq!(
            parse(text),
            vec![
                pair("DB_PORT", "5432"),
                pair("EMPTY", ""),
                pair("GREETING", "hello $HOME"),
                pair("QUOTED", "a \"b\"\n/home/ada"),
                pair("URL", "http://x/#anchor"),
                pair("FROM_CALLER", "outside"),
                pair("DB_HOST", "override"),
            ]
        );
    }

    #[test]
    fn later_lines_see_earlier_ones() {
        assert_eq!(parse("A=1\nB=${A}2\n"), vec![pair("A", "1"), pair("B", "12")]);
    }

    #[test]
    fn quoted_values_may_span_lines() {
        let vars = parse("KEY=\"line one\nline two\"\nNEXT=1\n");
        assert_eq!(vars, vec![pair("KEY", "line one\nline two"), pair("NEXT", "1")]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_env_file("A=1\n\nB C=2\n", &env).expect_err("space in name");
        assert_eq!(err.line, 3);
        let err = parse_env_file("A='open\nB=2\n", &env).expect_err("unclosed");
        assert_eq!(err.line, 1);
        assert!(parse_env_file("A=${NOPE:?needed}\n", &env).is_err());
    }
}
