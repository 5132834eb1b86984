//! The top level of a compose file besides `services:`: the named volumes
//! and secrets that services may use and the names they get in the stack,
//! and a warning for every other top-level key berth does not read.

use berth_core::validate_name;

use crate::diagnostics::{Diagnostics, Located, Result};
use crate::paths::resolve_host_path;
use crate::values::boolean;
use crate::yaml::{Entry, Node};
use crate::{Layout, StackSecret, StackSource};

#[derive(Debug, Default)]
pub(crate) struct Declarations {
    /// Key in the file and the name the stack uses, in file order.
    pub volumes: Vec<(String, String)>,
    pub secrets: Vec<StackSecret>,
    /// Key in the file and the name the stack uses, in file order.
    pub secret_names: Vec<(String, String)>,
}

impl Declarations {
    pub fn read(layout: &Layout, source: &StackSource, diagnostics: &mut Diagnostics) -> Result<Self> {
        let mut declarations = Declarations::default();
        for entry in &layout.top_level {
            match entry.key.as_str() {
                // The project name and the file format version change nothing for a stack.
                "version" | "name" => {}
                "volumes" => declarations.read_volumes(&entry.value, source.stack, diagnostics)?,
                "secrets" => declarations.read_secrets(&entry.value, source, diagnostics)?,
                key if key.starts_with("x-") => {}
                key => diagnostics.unsupported(entry.key_pos, key),
            }
        }
        Ok(declarations)
    }

    pub fn volume(&self, key: &str) -> Option<&str> {
        self.volumes.iter().find(|(k, _)| k == key).map(|(_, name)| name.as_str())
    }

    pub fn secret(&self, key: &str) -> Option<&str> {
        self.secret_names.iter().find(|(k, _)| k == key).map(|(_, name)| name.as_str())
    }

    fn read_volumes(&mut self, node: &Node, stack: &str, diagnostics: &mut Diagnostics) -> Result<()> {
        for entry in node.map("volumes")? {
            let path = format!("volumes.{}", entry.key);
            let mut external = false;
            let mut name = None;
            for option in entry.value.map(&path)? {
                let option_path = format!("{path}.{}", option.key);
                match option.key.as_str() {
                    "external" => (external, name) = read_external(&option.value, &option_path, name)?,
                    "name" => name = Some(option.value.text(&option_path)?.to_string()),
                    key if key.starts_with("x-") => {}
                    _ => diagnostics.unsupported(option.key_pos, &option_path),
                }
            }
            let name = stack_name(stack, entry, &path, external, name)?;
            self.volumes.push((entry.key.clone(), name));
        }
        Ok(())
    }

    fn read_secrets(&mut self, node: &Node, source: &StackSource, diagnostics: &mut Diagnostics) -> Result<()> {
        for entry in node.map("secrets")? {
            let path = format!("secrets.{}", entry.key);
            let mut external = false;
            let mut name = None;
            let mut file = None;
            for option in entry.value.map(&path)? {
                let option_path = format!("{path}.{}", option.key);
                match option.key.as_str() {
                    "external" => (external, name) = read_external(&option.value, &option_path, name)?,
                    "name" => name = Some(option.value.text(&option_path)?.to_string()),
                    "file" => {
                        let text = option.value.text(&option_path)?;
                        let resolved = resolve_host_path(source.base_dir, text, source.env)
                            .map_err(|reason| Located::new(option.value.pos, format!("{option_path}: {reason}")))?;
                        file = Some(resolved);
                    }
                    key if key.starts_with("x-") => {}
                    _ => diagnostics.unsupported(option.key_pos, &option_path),
                }
            }
            if external == file.is_some() {
                return Err(Located::new(
                    entry.key_pos,
                    format!("{path}: give either file: (a path relative to the stack file) or external: true"),
                ));
            }
            let name = stack_name(source.stack, entry, &path, external, name)?;
            self.secret_names.push((entry.key.clone(), name.clone()));
            self.secrets.push(StackSecret { name, file, external });
        }
        Ok(())
    }
}

/// `external: true`, or the older `external: {name: ...}`.
fn read_external(node: &Node, path: &str, name: Option<String>) -> Result<(bool, Option<String>)> {
    if let Some(external_name) = node.get("name") {
        return Ok((true, Some(external_name.text(&format!("{path}.name"))?.to_string())));
    }
    Ok((boolean(node, path)?, name))
}

/// Names are prefixed with the stack's, as `docker stack deploy` does,
/// unless the file names the object itself or it exists outside the stack.
fn stack_name(stack: &str, entry: &Entry, path: &str, external: bool, name: Option<String>) -> Result<String> {
    let name = match name {
        Some(name) => name,
        None if external => entry.key.clone(),
        None => format!("{stack}_{}", entry.key),
    };
    validate_name("name", &name).map_err(|e| Located::new(entry.key_pos, format!("{path}: {e}")))?;
    Ok(name)
}
