//! Variable interpolation as `docker compose` does it, applied to every
//! scalar value of the file before it is read: `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//! `${VAR:+replacement}`, `${VAR+replacement}`, and `$$` for a literal `$`.
//! Defaults may themselves contain variables.

/// Defaults nest (`${A:-${B:-c}}`); a bound keeps a crafted value from
/// recursing without end.
pub const MAX_INTERPOLATION_NESTING: usize = 8;

/// A value with its variables replaced, and the variables that were unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interpolated {
    pub text: String,
    pub unset: Vec<String>,
}

/// Replaces the variables in `text`; the error says what is wrong with the
/// value, for the caller to place.
pub(crate) fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, String> {
    if !text.contains('$') {
        return Ok(Interpolated { text: text.to_string(), unset: Vec::new() });
    }
    let mut interpolator = Interpolator { lookup, unset: Vec::new() };
    let text = interpolator.expand(text, 0)?;
    Ok(Interpolated { text, unset: interpolator.unset })
}

struct Interpolator<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    unset: Vec<String>,
}

impl Interpolator<'_> {
    fn expand(&mut self, text: &str, nesting: usize) -> Result<String, String> {
        if nesting > MAX_INTERPOLATION_NESTING {
            return Err(format!("'{text}' nests defaults more than {MAX_INTERPOLATION_NESTING} deep"));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let end = closing_brace(tail).ok_or_else(|| format!("'{text}' has a '${{' without its '}}'"))?;
                out.push_str(&self.braced(&tail[..end], nesting)?);
                rest = &tail[end + 1..];
            } else {
                let name_len = variable_name_len(after);
                if name_len == 0 {
                    return Err(format!(
                        "invalid interpolation in '{text}': '$' must be followed by a variable name or '{{' \
                         (write $$ for a literal $)"
                    ));
                }
                out.push_str(&self.value_of(&after[..name_len]));
                rest = &after[name_len..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The inside of `${...}`: a name, then optionally an operator and its word.
    fn braced(&mut self, inner: &str, nesting: usize) -> Result<String, String> {
        let name_len = variable_name_len(inner);
        let (name, operation) = inner.split_at(name_len);
        if name.is_empty() {
            return Err(format!("invalid interpolation '${{{inner}}}': expected a variable name after '${{'"));
        }
        let value = (self.lookup)(name);
        let is_set_and_not_empty = value.as_deref().is_some_and(|v| !v.is_empty());
        let (operator, word) = split_operator(operation).ok_or_else(|| {
            format!("invalid interpolation '${{{inner}}}': after the name, expected one of :- - :? ? :+ + or '}}'")
        })?;
        match operator {
            "" => Ok(self.value_of(name)),
            ":-" if !is_set_and_not_empty => self.expand(word, nesting + 1),
            "-" if value.is_none() => self.expand(word, nesting + 1),
            ":-" | "-" => Ok(value.unwrap_or_default()),
            ":?" if !is_set_and_not_empty => Err(self.missing(name, word, nesting)?),
            "?" if value.is_none() => Err(self.missing(name, word, nesting)?),
            ":?" | "?" => Ok(value.unwrap_or_default()),
            ":+" if is_set_and_not_empty => self.expand(word, nesting + 1),
            "+" if value.is_some() => self.expand(word, nesting + 1),
            _ => Ok(String::new()),
        }
    }

    /// The message of a required variable that is missing.
    fn missing(&mut self, name: &str, word: &str, nesting: usize) -> Result<String, String> {
        let message = self.expand(word, nesting + 1)?;
        Ok(if message.is_empty() {
            format!("required variable {name} is missing a value")
        } else {
            format!("required variable {name} is missing a value: {message}")
        })
    }

    fn value_of(&mut self, name: &str) -> String {
        match (self.lookup)(name) {
            Some(value) => value,
            None => {
                self.unset.push(name.to_string());
                String::new()
            }
        }
    }
}

fn split_operator(operation: &str) -> Option<(&str, &str)> {
    if operation.is_empty() {
        return Some(("", ""));
    }
    [":-", ":?", ":+", "-", "?", "+"].into_iter().find_map(|op| operation.strip_prefix(op).map(|word| (op, word)))
}

/// Bytes of the variable name at the start of `text` (`[A-Za-z_][A-Za-z0-9_]*`).
fn variable_name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {
            1 + bytes[1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count()
        }
        _ => 0,
    }
}

/// The index of the `}` closing a `${` whose body starts `text`, counting
/// nested `${...}` and skipping `$$`.
fn closing_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'$', Some(b'$')) => i += 2,
            (b'$', Some(b'{')) => {
                depth += 1;
                i += 2;
            }
            (b'}', _) => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.2".into()),
            "EMPTY" => Some(String::new()),
            "HOST" => Some("shop.test".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<Interpolated, String> {
        interpolate(text, &env)
    }

    fn text(input: &str) -> String {
        run(input).expect("interpolates").text
    }

    #[test]
    fn plain_and_braced_variables_are_replaced() {
        assert_eq!(text("nginx:$TAG"), "nginx:1.2");
        assert_eq!(text("nginx:${TAG}-alpine"), "nginx:1.2-alpine");
        assert_eq!(text("no variables"), "no variables");
    }

    #[test]
    fn a_double_dollar_is_a_literal_dollar() {
        assert_eq!(text("echo $$HOME and $${TAG}"), "echo $HOME and ${TAG}");
    }

    #[test]
    fn colon_dash_defaults_when_unset_or_empty_and_dash_only_when_unset() {
        assert_eq!(text("${NOPE:-d}"), "d");
        assert_eq!(text("${EMPTY:-d}"), "d");
        assert_eq!(text("${TAG:-d}"), "1.2");
        assert_eq!(text("${NOPE-d}"), "d");
        assert_eq!(text("${EMPTY-d}"), "");
    }

    #[test]
    fn plus_replaces_only_when_set() {
        assert_eq!(text("${TAG:+yes}"), "yes");
        assert_eq!(text("${EMPTY:+yes}"), "");
        assert_eq!(text("${EMPTY+yes}"), "yes");
        assert_eq!(text("${NOPE+yes}"), "");
    }

    #[test]
    fn defaults_nest() {
        assert_eq!(text("${NOPE:-${HOST}}"), "shop.test");
        assert_eq!(text("${NOPE:-${ALSO_NOPE:-x}}y"), "xy");
    }

    #[test]
    fn required_variables_fail_with_their_message() {
        assert_eq!(
            run("${NOPE:?set NOPE to the db url}"),
            Err("required variable NOPE is missing a value: set NOPE to the db url".into())
        );
        assert_eq!(run("${EMPTY:?}"), Err("required variable EMPTY is missing a value".into()));
        assert_eq!(text("${EMPTY?x}"), "");
        assert!(run("${NOPE?x}").is_err());
    }

    #[test]
    fn unset_variables_become_empty_and_are_reported() {
        let result = run("a${NOPE}b$OTHER").expect("interpolates");
        assert_eq!(result.text, "ab");
        assert_eq!(result.unset, vec!["NOPE".to_string(), "OTHER".to_string()]);
        assert!(run("${NOPE:-x}").expect("interpolates").unset.is_empty());
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in ["price: 5$", "$ 1", "${", "${TAG", "${}", "${1A}", "${TAG!x}"] {
            assert!(run(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let deep = "${A:-".repeat(100) + &"}".repeat(100);
        assert!(run(&deep).is_err());
    }
}
