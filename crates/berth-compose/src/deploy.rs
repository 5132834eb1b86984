//! `deploy:` — replicas and mode, placement constraints as berth tags,
//! resources, restart policy, and update and rollback configuration — and
//! how replicas, mode and strategy from `deploy` and berth's extensions
//! combine into one `ServiceMode` and `Strategy`.

use berth_core::{FailureAction, RestartCondition, ServiceMode, Strategy, UpdateConfig, UpdateOrder};

use crate::diagnostics::{Located, Position, Result};
use crate::service::{read_labels, ServiceReader, Setting};
use crate::values::{duration_ms, keyword, memory_bytes, millicpus, ratio, whole_number};
use crate::yaml::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeChoice {
    Replicated,
    Global,
}

/// Replicas, mode and strategy as the file sets them, combined at the end.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    pub replicas: Option<Setting<u32>>,
    pub mode: Option<Setting<ModeChoice>>,
    pub strategy: Option<Setting<Strategy>>,
}

impl Placement {
    /// The key that asks for one task per node, if any.
    fn every_node_reason(&self) -> Option<&str> {
        let global = self.mode.as_ref().filter(|m| m.value == ModeChoice::Global);
        let every_node = self.strategy.as_ref().filter(|s| s.value == Strategy::EveryNode);
        global.map(|g| g.path.as_str()).or(every_node.map(|s| s.path.as_str()))
    }

    /// A setting that contradicts running one task per node: where it is and its key.
    fn conflict_with_every_node(&self) -> Option<(Position, &str)> {
        let replicas = self.replicas.as_ref().map(|r| (r.pos, r.path.as_str()));
        let replicated = self.mode.as_ref().filter(|m| m.value == ModeChoice::Replicated);
        let other_strategy = self.strategy.as_ref().filter(|s| s.value != Strategy::EveryNode);
        replicas.or(replicated.map(|m| (m.pos, m.path.as_str()))).or(other_strategy.map(|s| (s.pos, s.path.as_str())))
    }
}

/// berth reserves and limits with one value per resource.
#[derive(Debug, Default)]
pub(crate) struct ResourceDraft {
    reserved_millicpus: Option<Setting<u64>>,
    reserved_memory: Option<Setting<u64>>,
    limit_millicpus: Option<Setting<u64>>,
    limit_memory: Option<Setting<u64>>,
}

impl ServiceReader<'_> {
    pub(crate) fn read_deploy(&mut self, node: &Node, path: &str) -> Result<()> {
        const MODES: [(&str, ModeChoice); 2] = [("replicated", ModeChoice::Replicated), ("global", ModeChoice::Global)];
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            let value = &option.value;
            match option.key.as_str() {
                "replicas" => {
                    let replicas = whole_number(value, &option_path)?;
                    self.placement.replicas = Some(Setting { value: replicas, pos: value.pos, path: option_path });
                }
                "mode" => {
                    let mode = keyword(value, &option_path, &MODES)?;
                    self.placement.mode = Some(Setting { value: mode, pos: value.pos, path: option_path });
                }
                "placement" => self.read_constraints(value, &option_path)?,
                "resources" => self.read_resources(value, &option_path)?,
                "restart_policy" => self.read_restart_policy(value, &option_path)?,
                "update_config" => self.spec.update = self.read_update_config(value, &option_path, "update")?,
                "rollback_config" => self.spec.rollback = self.read_update_config(value, &option_path, "rollback")?,
                "labels" => self.deploy_labels.extend(read_labels(value, &option_path)?),
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        Ok(())
    }

    fn read_constraints(&mut self, node: &Node, path: &str) -> Result<()> {
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            if option.key != "constraints" {
                if !option.key.starts_with("x-") {
                    self.diagnostics.unsupported(option.key_pos, &option_path);
                }
                continue;
            }
            for (i, item) in option.value.seq(&option_path)?.iter().enumerate() {
                let item_path = format!("{option_path}[{i}]");
                let constraint = item.text(&item_path)?;
                match node_label_tag(constraint) {
                    Some(tag) => self.add_tag(tag, item.pos),
                    None => self.diagnostics.warn(
                        item.pos,
                        format!(
                            "{item_path}: '{constraint}' is ignored; berth places by node tags, \
                             written as node.labels.KEY == VALUE"
                        ),
                    ),
                }
            }
        }
        Ok(())
    }

    pub(crate) fn add_tag(&mut self, tag: String, pos: Position) {
        self.mark(format!("tags[{}]", self.spec.tags.len()), pos);
        self.spec.tags.push(tag);
    }

    fn read_resources(&mut self, node: &Node, path: &str) -> Result<()> {
        for section in node.map(path)? {
            let section_path = format!("{path}.{}", section.key);
            let reserved = match section.key.as_str() {
                "reservations" => true,
                "limits" => false,
                key => {
                    if !key.starts_with("x-") {
                        self.diagnostics.unsupported(section.key_pos, &section_path);
                    }
                    continue;
                }
            };
            for option in section.value.map(&section_path)? {
                let option_path = format!("{section_path}.{}", option.key);
                let value = &option.value;
                let draft = &mut self.resources;
                let (slot, amount) = match option.key.as_str() {
                    "cpus" if reserved => (&mut draft.reserved_millicpus, millicpus(value, &option_path)?),
                    "cpus" => (&mut draft.limit_millicpus, millicpus(value, &option_path)?),
                    "memory" if reserved => (&mut draft.reserved_memory, memory_bytes(value, &option_path)?),
                    "memory" => (&mut draft.limit_memory, memory_bytes(value, &option_path)?),
                    key if key.starts_with("x-") => continue,
                    _ => {
                        self.diagnostics.unsupported(option.key_pos, &option_path);
                        continue;
                    }
                };
                *slot = Some(Setting { value: amount, pos: value.pos, path: option_path });
            }
        }
        Ok(())
    }

    fn read_restart_policy(&mut self, node: &Node, path: &str) -> Result<()> {
        const CONDITIONS: [(&str, RestartCondition); 3] = [
            ("none", RestartCondition::Never),
            ("on-failure", RestartCondition::OnFailure),
            ("any", RestartCondition::Always),
        ];
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            match option.key.as_str() {
                "condition" => self.spec.restart.condition = keyword(&option.value, &option_path, &CONDITIONS)?,
                "max_attempts" => self.spec.restart.max_attempts = whole_number(&option.value, &option_path)?,
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        Ok(())
    }

    /// `section` is the name `ServiceSpec::validate` uses: "update" or "rollback".
    fn read_update_config(&mut self, node: &Node, path: &str, section: &str) -> Result<UpdateConfig> {
        const ORDERS: [(&str, UpdateOrder); 2] =
            [("stop-first", UpdateOrder::StopFirst), ("start-first", UpdateOrder::StartFirst)];
        const ACTIONS: [(&str, FailureAction); 3] = [
            ("pause", FailureAction::Pause),
            ("continue", FailureAction::Continue),
            ("rollback", FailureAction::Rollback),
        ];
        let mut config = UpdateConfig::default();
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            let value = &option.value;
            match option.key.as_str() {
                "parallelism" => config.parallelism = whole_number(value, &option_path)?,
                "delay" => config.delay_ms = duration_ms(value, &option_path)?,
                "order" => config.order = keyword(value, &option_path, &ORDERS)?,
                "failure_action" => config.failure_action = keyword(value, &option_path, &ACTIONS)?,
                "monitor" => config.monitor_ms = duration_ms(value, &option_path)?,
                "max_failure_ratio" => {
                    config.max_failure_ratio = ratio(value, &option_path)?;
                    self.mark(format!("{section}.max_failure_ratio"), value.pos);
                }
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        Ok(config)
    }

    /// One task per node (`deploy.mode: global` or Tutum's `every_node`)
    /// cannot be combined with a replica count or another strategy.
    pub(crate) fn finish_placement(&mut self) -> Result<()> {
        let placement = std::mem::take(&mut self.placement);
        if let Some(reason) = placement.every_node_reason() {
            if let Some((pos, path)) = placement.conflict_with_every_node() {
                return Err(Located::new(
                    pos,
                    format!("{path}: cannot be combined with {reason}, which runs one task on every node"),
                ));
            }
            self.spec.mode = ServiceMode::EveryNode;
            self.spec.strategy = Strategy::EveryNode;
            return Ok(());
        }
        self.spec.mode = ServiceMode::Replicated { replicas: placement.replicas.as_ref().map_or(1, |r| r.value) };
        if let Some(pos) = placement.replicas.as_ref().map(|r| r.pos).or(placement.mode.as_ref().map(|m| m.pos)) {
            self.mark("replicas", pos);
        }
        if let Some(strategy) = placement.strategy {
            self.spec.strategy = strategy.value;
            self.mark("strategy", strategy.pos);
        }
        Ok(())
    }

    /// Reservations are what berth places by; a different limit is reported
    /// because berth cannot honour both.
    pub(crate) fn finish_resources(&mut self) {
        let draft = std::mem::take(&mut self.resources);
        if let Some(cpus) = self.pick_resource(draft.reserved_millicpus, draft.limit_millicpus) {
            self.spec.resources.millicpus = cpus.value;
        }
        if let Some(memory) = self.pick_resource(draft.reserved_memory, draft.limit_memory) {
            self.spec.resources.memory_bytes = memory.value;
            self.mark("memory", memory.pos);
        }
    }

    fn pick_resource(&mut self, reserved: Option<Setting<u64>>, limit: Option<Setting<u64>>) -> Option<Setting<u64>> {
        match (reserved, limit) {
            (Some(reserved), Some(limit)) => {
                if reserved.value != limit.value {
                    self.diagnostics.warn(
                        limit.pos,
                        format!(
                            "{}: berth reserves and limits with one value; the reservation ({}) is used",
                            limit.path, reserved.path
                        ),
                    );
                }
                Some(reserved)
            }
            (reserved, limit) => reserved.or(limit),
        }
    }
}

/// `node.labels.KEY == VALUE` becomes berth's node tag `KEY:VALUE`.
fn node_label_tag(constraint: &str) -> Option<String> {
    let (left, right) = constraint.split_once("==")?;
    let key = left.trim().strip_prefix("node.labels.")?;
    let value = right.trim();
    (!key.is_empty() && !value.is_empty() && !value.contains('=')).then(|| format!("{key}:{value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_label_constraints_become_tags() {
        assert_eq!(node_label_tag("node.labels.zone == eu-1"), Some("zone:eu-1".into()));
        assert_eq!(node_label_tag("node.labels.ssd==true"), Some("ssd:true".into()));
        assert_eq!(node_label_tag("node.role == manager"), None);
        assert_eq!(node_label_tag("node.labels.zone != eu-1"), None);
        assert_eq!(node_label_tag("node.labels. == x"), None);
    }
}
