//! One service of the file into one `ServiceSpec`: the reader walks the
//! service's keys in file order, hands each to the module that knows it
//! (ports, mounts, environment, health, deploy, berth's extensions), warns
//! about the keys berth does not read, and finally validates the spec,
//! pointing a validation error back at the key that set the field.

use std::collections::BTreeMap;

use berth_core::{
    CoreError, Dependency, DependencyCondition, RestartCondition, RestartPolicy, ServiceLink, ServiceSpec,
};

use crate::declarations::Declarations;
use crate::deploy::{Placement, ResourceDraft};
use crate::diagnostics::{Diagnostics, Located, Position, Result};
use crate::environment::EnvironmentDraft;
use crate::values::{command_line, keyword};
use crate::yaml::{Entry, Node, Value};
use crate::StackSource;

/// What every service of the stack may refer to.
pub(crate) struct StackContext<'a> {
    pub source: &'a StackSource<'a>,
    /// The services' keys in the file.
    pub services: Vec<&'a str>,
    pub declarations: &'a Declarations,
}

impl<'a> StackContext<'a> {
    pub fn new(source: &'a StackSource<'a>, services: &[&'a Entry], declarations: &'a Declarations) -> Self {
        StackContext { source, services: services.iter().map(|e| e.key.as_str()).collect(), declarations }
    }

    /// `docker stack deploy` names service `web` of stack `shop` `shop_web`.
    pub fn full_name(&self, service: &str) -> String {
        format!("{}_{service}", self.source.stack)
    }

    /// The full name of a service the file defines, or an error at `node`.
    pub fn service_named(&self, short: &str, node_pos: Position, path: &str) -> Result<String> {
        if self.services.contains(&short) {
            Ok(self.full_name(short))
        } else {
            Err(Located::new(node_pos, format!("{path}: service '{short}' is not defined in this file")))
        }
    }
}

/// A value and the key that set it, for settings that are combined at the end.
#[derive(Debug, Clone)]
pub(crate) struct Setting<T> {
    pub value: T,
    pub pos: Position,
    pub path: String,
}

pub(crate) struct ServiceReader<'a> {
    pub context: &'a StackContext<'a>,
    pub diagnostics: &'a mut Diagnostics,
    pub entry: &'a Entry,
    /// `services.web`, the prefix of every message about this service.
    pub path: String,
    pub spec: ServiceSpec,
    /// Where each spec field was set, by the name `ServiceSpec::validate` uses.
    fields: BTreeMap<String, Position>,
    has_image: bool,
    pub environment: EnvironmentDraft,
    pub placement: Placement,
    pub resources: ResourceDraft,
    pub virtual_hosts: Vec<(String, Position)>,
    /// `deploy.labels`; berth has one label set, where the service's own labels win.
    pub deploy_labels: BTreeMap<String, String>,
}

impl<'a> ServiceReader<'a> {
    pub fn new(context: &'a StackContext<'a>, entry: &'a Entry, diagnostics: &'a mut Diagnostics) -> Self {
        let mut spec = ServiceSpec::new(context.full_name(&entry.key), "");
        spec.stack = context.source.stack.to_string();
        let mut fields = BTreeMap::new();
        fields.insert("name".to_string(), entry.key_pos);
        ServiceReader {
            context,
            diagnostics,
            entry,
            path: format!("services.{}", entry.key),
            spec,
            fields,
            has_image: false,
            environment: EnvironmentDraft::default(),
            placement: Placement::default(),
            resources: ResourceDraft::default(),
            virtual_hosts: Vec::new(),
            deploy_labels: BTreeMap::new(),
        }
    }

    pub fn read(mut self) -> Result<ServiceSpec> {
        for entry in self.entry.value.map(&self.path)? {
            self.read_key(entry)?;
        }
        self.finish()
    }

    /// Records that `field` (as `ServiceSpec::validate` names it) was set at `pos`.
    pub fn mark(&mut self, field: impl Into<String>, pos: Position) {
        self.fields.insert(field.into(), pos);
    }

    fn read_key(&mut self, entry: &Entry) -> Result<()> {
        let path = format!("{}.{}", self.path, entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "image" => self.read_image(node, &path),
            "command" => {
                self.spec.command = command_line(node, &path)?;
                Ok(())
            }
            "entrypoint" => {
                self.spec.entrypoint = command_line(node, &path)?;
                Ok(())
            }
            "environment" => self.read_environment(node, &path),
            "env_file" => self.read_env_files(node, &path),
            "ports" => self.read_ports(node, &path),
            "expose" => self.read_expose(node, &path),
            "labels" => {
                let labels = read_labels(node, &path)?;
                self.spec.labels.extend(labels);
                self.mark("labels", entry.key_pos);
                Ok(())
            }
            "healthcheck" => self.read_healthcheck(entry, &path),
            "links" => self.read_links(node, &path),
            "depends_on" => self.read_depends_on(node, &path),
            "volumes" => self.read_volumes(node, &path),
            "secrets" => self.read_secrets(node, &path),
            "deploy" => self.read_deploy(node, &path),
            "restart" => self.read_restart(node, &path),
            "x-berth" => self.read_berth_section(node, &path),
            _ if self.read_berth_key(entry, &path)? => Ok(()),
            key if key.starts_with("x-") => Ok(()),
            _ => {
                self.diagnostics.unsupported(entry.key_pos, &path);
                Ok(())
            }
        }
    }

    fn read_image(&mut self, node: &Node, path: &str) -> Result<()> {
        self.spec.image = node.text(path)?.to_string();
        self.has_image = true;
        self.mark("image", node.pos);
        Ok(())
    }

    /// `SERVICE` or `SERVICE:ALIAS`; the alias defaults to the service's key.
    fn read_links(&mut self, node: &Node, path: &str) -> Result<()> {
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let text = item.text(&item_path)?;
            let (short, alias) = text.split_once(':').unwrap_or((text, text));
            let service = self.context.service_named(short, item.pos, &item_path)?;
            self.mark(format!("links[{}]", self.spec.links.len()), item.pos);
            self.spec.links.push(ServiceLink { service, alias: alias.to_string() });
        }
        Ok(())
    }

    fn read_depends_on(&mut self, node: &Node, path: &str) -> Result<()> {
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    let short = item.text(&item_path)?;
                    self.add_dependency(short, DependencyCondition::Started, item.pos, &item_path)?;
                }
                Ok(())
            }
            Value::Map(entries) => {
                for entry in entries {
                    let entry_path = format!("{path}.{}", entry.key);
                    let condition = self.read_dependency_options(&entry.value, &entry_path)?;
                    self.add_dependency(&entry.key, condition, entry.key_pos, &entry_path)?;
                }
                Ok(())
            }
            Value::Null => Ok(()),
            Value::Scalar(_) => Err(node.expected(path, "a list or a mapping of services")),
        }
    }

    fn read_dependency_options(&mut self, node: &Node, path: &str) -> Result<DependencyCondition> {
        const CONDITIONS: [(&str, DependencyCondition); 3] = [
            ("service_started", DependencyCondition::Started),
            ("service_healthy", DependencyCondition::Healthy),
            ("service_completed_successfully", DependencyCondition::Completed),
        ];
        let mut condition = DependencyCondition::Started;
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            match option.key.as_str() {
                "condition" => condition = keyword(&option.value, &option_path, &CONDITIONS)?,
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        Ok(condition)
    }

    fn add_dependency(&mut self, short: &str, condition: DependencyCondition, pos: Position, path: &str) -> Result<()> {
        let service = self.context.service_named(short, pos, path)?;
        self.mark(format!("depends_on[{}]", self.spec.depends_on.len()), pos);
        self.spec.depends_on.push(Dependency { service, condition });
        Ok(())
    }

    /// The service-level `restart:` of compose, which `docker stack deploy`
    /// also honours when `deploy.restart_policy` is absent.
    fn read_restart(&mut self, node: &Node, path: &str) -> Result<()> {
        let text = node.text(path)?;
        let parsed = match text.split_once(':') {
            None => match text {
                "no" => Some((RestartCondition::Never, 0)),
                "always" | "unless-stopped" => Some((RestartCondition::Always, 0)),
                "on-failure" => Some((RestartCondition::OnFailure, 0)),
                _ => None,
            },
            Some(("on-failure", count)) => count.parse().ok().map(|count| (RestartCondition::OnFailure, count)),
            Some(_) => None,
        };
        let (condition, max_attempts) = parsed.ok_or_else(|| {
            Located::new(
                node.pos,
                format!("{path}: '{text}' is not one of no, always, unless-stopped, on-failure, on-failure:COUNT"),
            )
        })?;
        self.spec.restart = RestartPolicy { condition, max_attempts };
        Ok(())
    }

    fn finish(mut self) -> Result<ServiceSpec> {
        if !self.has_image {
            return Err(Located::new(
                self.entry.key_pos,
                format!("{}: image is required (berth runs images; it does not build them)", self.path),
            ));
        }
        self.finish_environment();
        self.finish_virtual_hosts();
        self.finish_placement()?;
        self.finish_resources();
        for (key, value) in std::mem::take(&mut self.deploy_labels) {
            self.spec.labels.entry(key).or_insert(value);
        }
        match self.spec.validate() {
            Ok(()) => Ok(self.spec),
            Err(error) => Err(self.validation_error(error)),
        }
    }

    /// Hosts from `VIRTUAL_HOST` and `x-berth.virtual_host`, in file order, once each.
    fn finish_virtual_hosts(&mut self) {
        let mut hosts = std::mem::take(&mut self.virtual_hosts);
        hosts.sort_by_key(|(_, pos)| *pos);
        for (host, pos) in hosts {
            if !self.spec.virtual_hosts.contains(&host) {
                self.mark(format!("virtual_hosts[{}]", self.spec.virtual_hosts.len()), pos);
                self.spec.virtual_hosts.push(host);
            }
        }
    }

    fn validation_error(&self, error: CoreError) -> Located {
        let pos = match &error {
            CoreError::SpecInvalid { field, .. } => self.position_of(field),
            _ => self.entry.key_pos,
        };
        Located::new(pos, format!("{}: {error}", self.path))
    }

    /// The key that set `field`, or failing that the list or section it is in
    /// (`ports[1].host_port`, then `ports[1]`, then `ports`), or the service.
    fn position_of(&self, field: &str) -> Position {
        let mut candidate = field;
        loop {
            if let Some(pos) = self.fields.get(candidate) {
                return *pos;
            }
            match candidate.rfind(['.', '[']) {
                Some(end) => candidate = &candidate[..end],
                None => return self.entry.key_pos,
            }
        }
    }
}

/// `labels` as a list of `KEY=VALUE` or a mapping; a key alone has an empty value.
pub(crate) fn read_labels(node: &Node, path: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let text = item.text(&format!("{path}[{i}]"))?;
                let (key, value) = text.split_once('=').unwrap_or((text, ""));
                labels.insert(key.to_string(), value.to_string());
            }
        }
        Value::Map(entries) => {
            for entry in entries {
                let value = match &entry.value.value {
                    Value::Null => "",
                    _ => entry.value.text(&format!("{path}.{}", entry.key))?,
                };
                labels.insert(entry.key.clone(), value.to_string());
            }
        }
        Value::Null => {}
        Value::Scalar(_) => return Err(node.expected(path, "a list of KEY=VALUE or a mapping")),
    }
    Ok(labels)
}
