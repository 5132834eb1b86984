//! `healthcheck`: the test in any of compose's forms becomes one shell
//! command (berth runs health checks with `CMD-SHELL`), with Docker's
//! defaults for what the file leaves out.

use berth_core::HealthCheck;

use crate::diagnostics::{Located, Result};
use crate::service::ServiceReader;
use crate::values::{boolean, duration_ms, shell_join, whole_number};
use crate::yaml::{Entry, Node, Value};

/// Docker's defaults when a health check leaves a setting out; a compose
/// file is written against them, not berth's own.
const DOCKER_HEALTH_INTERVAL_MS: u64 = 30_000;
const DOCKER_HEALTH_TIMEOUT_MS: u64 = 30_000;
const DOCKER_HEALTH_RETRIES: u32 = 3;

/// What `healthcheck.test` asks for.
enum Test {
    Disabled,
    Shell(String),
}

impl ServiceReader<'_> {
    pub(crate) fn read_healthcheck(&mut self, entry: &Entry, path: &str) -> Result<()> {
        let mut check = HealthCheck {
            command: String::new(),
            interval_ms: DOCKER_HEALTH_INTERVAL_MS,
            timeout_ms: DOCKER_HEALTH_TIMEOUT_MS,
            retries: DOCKER_HEALTH_RETRIES,
            start_period_ms: 0,
        };
        let mut test = None;
        let mut disabled = false;
        self.mark("health", entry.key_pos);
        for option in entry.value.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            let value = &option.value;
            match option.key.as_str() {
                "test" => {
                    test = Some(read_test(value, &option_path)?);
                    self.mark("health.command", value.pos);
                }
                "disable" => disabled = boolean(value, &option_path)?,
                "interval" => check.interval_ms = duration_ms(value, &option_path)?,
                "timeout" => check.timeout_ms = duration_ms(value, &option_path)?,
                "start_period" => check.start_period_ms = duration_ms(value, &option_path)?,
                "retries" => check.retries = whole_number(value, &option_path)?,
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
            if matches!(option.key.as_str(), "interval" | "timeout" | "retries") {
                self.mark(format!("health.{}", option.key), value.pos);
            }
        }
        self.spec.health = match test {
            _ if disabled => None,
            Some(Test::Disabled) => None,
            Some(Test::Shell(command)) => Some(HealthCheck { command, ..check }),
            None => {
                self.diagnostics.warn(
                    entry.key_pos,
                    format!("{path} has no test, and berth does not use the image's HEALTHCHECK; no health check runs"),
                );
                None
            }
        };
        Ok(())
    }
}

/// `CMD-SHELL cmd`, a plain string, `[CMD, arg, ...]` or `[NONE]`.
fn read_test(node: &Node, path: &str) -> Result<Test> {
    if let Value::Scalar(command) = &node.value {
        return Ok(Test::Shell(command.clone()));
    }
    let items =
        node.seq(path).map_err(|_| node.expected(path, "a string or a list starting with CMD, CMD-SHELL or NONE"))?;
    let words = items
        .iter()
        .enumerate()
        .map(|(i, item)| Ok(item.text(&format!("{path}[{i}]"))?.to_string()))
        .collect::<Result<Vec<String>>>()?;
    match words.split_first() {
        Some((first, _)) if first == "NONE" => Ok(Test::Disabled),
        Some((first, args)) if first == "CMD" => Ok(Test::Shell(shell_join(args))),
        Some((first, args)) if first == "CMD-SHELL" => Ok(Test::Shell(args.join(" "))),
        Some((first, _)) => {
            Err(Located::new(items[0].pos, format!("{path}[0]: '{first}' is not one of CMD, CMD-SHELL, NONE")))
        }
        None => Err(Located::new(node.pos, format!("{path}: is empty; expected CMD, CMD-SHELL or NONE and a command"))),
    }
}
