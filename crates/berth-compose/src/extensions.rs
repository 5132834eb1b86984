//! berth's own service keys: Tutum's stackfile keys (`target_num_containers`,
//! `deployment_strategy`, `tags`, `autorestart`, `autodestroy`,
//! `sequential_deployment`, `autoredeploy`), accepted directly in the service
//! as Tutum wrote them or under `x-berth:` where `docker compose` ignores
//! them, and `x-berth.virtual_host`.

use berth_core::{Autodestroy, RestartCondition, RestartPolicy, Strategy};

use crate::diagnostics::{Located, Result};
use crate::environment::split_hosts;
use crate::service::{ServiceReader, Setting};
use crate::values::{boolean, whole_number};
use crate::yaml::{Entry, Node, Value};

impl ServiceReader<'_> {
    /// Reads `entry` if it is one of Tutum's keys; `false` when it is not.
    pub(crate) fn read_berth_key(&mut self, entry: &Entry, path: &str) -> Result<bool> {
        let node = &entry.value;
        match entry.key.as_str() {
            "target_num_containers" => {
                let replicas = whole_number(node, path)?;
                self.placement.replicas = Some(Setting { value: replicas, pos: node.pos, path: path.to_string() });
            }
            "deployment_strategy" => {
                let strategy = tutum_keyword(node, path, &STRATEGIES)?;
                self.placement.strategy = Some(Setting { value: strategy, pos: node.pos, path: path.to_string() });
            }
            "tags" => self.read_tags(node, path)?,
            "autorestart" => {
                let condition = tutum_keyword(node, path, &AUTORESTART)?;
                self.spec.restart = RestartPolicy { condition, max_attempts: 0 };
            }
            "autodestroy" => self.spec.autodestroy = tutum_keyword(node, path, &AUTODESTROY)?,
            "sequential_deployment" => self.spec.sequential = boolean(node, path)?,
            "autoredeploy" => self.spec.autoredeploy = boolean(node, path)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(crate) fn read_berth_section(&mut self, node: &Node, path: &str) -> Result<()> {
        for entry in node.map(path)? {
            let entry_path = format!("{path}.{}", entry.key);
            if entry.key == "virtual_host" {
                self.read_virtual_host(&entry.value, &entry_path)?;
            } else if !self.read_berth_key(entry, &entry_path)? {
                self.diagnostics.unsupported(entry.key_pos, &entry_path);
            }
        }
        Ok(())
    }

    fn read_tags(&mut self, node: &Node, path: &str) -> Result<()> {
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let tag = item.text(&format!("{path}[{i}]"))?;
            self.add_tag(tag.to_string(), item.pos);
        }
        Ok(())
    }

    /// `a.test,b.test`, or a list of host names.
    fn read_virtual_host(&mut self, node: &Node, path: &str) -> Result<()> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        for (i, item) in items.into_iter().enumerate() {
            let text = item.text(&format!("{path}[{i}]")).map_err(|_| item.expected(path, "host names"))?;
            self.virtual_hosts.extend(split_hosts(text).map(|host| (host, item.pos)));
        }
        Ok(())
    }
}

const STRATEGIES: [(&str, Strategy); 3] = [
    ("emptiest_node", Strategy::EmptiestNode),
    ("high_availability", Strategy::HighAvailability),
    ("every_node", Strategy::EveryNode),
];

const AUTORESTART: [(&str, RestartCondition); 3] = [
    ("OFF", RestartCondition::Never),
    ("ON_FAILURE", RestartCondition::OnFailure),
    ("ALWAYS", RestartCondition::Always),
];

const AUTODESTROY: [(&str, Autodestroy); 3] =
    [("OFF", Autodestroy::Off), ("ON_SUCCESS", Autodestroy::OnSuccess), ("ALWAYS", Autodestroy::Always)];

/// Tutum's keywords, in either case and with `-` or `_`, as its users wrote them.
fn tutum_keyword<T: Copy>(node: &Node, path: &str, accepted: &[(&str, T)]) -> Result<T> {
    let text = node.text(path)?;
    let normalized = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let wanted = normalized(text);
    accepted.iter().find(|(spelling, _)| normalized(spelling) == wanted).map(|(_, value)| *value).ok_or_else(|| {
        let names: Vec<&str> = accepted.iter().map(|(spelling, _)| *spelling).collect();
        Located::new(node.pos, format!("{path}: '{text}' is not one of {}", names.join(", ")))
    })
}
