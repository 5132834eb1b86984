//! Reads a stack file — a compose file as `docker compose` and `docker stack
//! deploy` read it, or a Tutum stackfile — into the `ServiceSpec`s of one
//! berth stack, with a warning for everything berth reads differently or not
//! at all, and errors that point at a line and column.
//!
//! Invariant: pure. No network, no Docker, no clock; files (env files) are
//! read only through the closure the caller passes, and variables come only
//! from the caller's `env`. Parsing never panics, whatever the input.
//!
//! The YAML becomes a positioned tree (`yaml`, with `interpolate` applied to
//! every value); `declarations` reads the top-level volumes and secrets;
//! `service` walks each service's keys and hands them to `ports`, `mounts`,
//! `environment`, `health`, `deploy` and `extensions` (Tutum's keys and
//! `x-berth`), then validates the spec and maps a failure back to its key.

mod declarations;
mod deploy;
mod diagnostics;
mod environment;
mod extensions;
mod health;
mod interpolate;
mod mounts;
mod paths;
mod ports;
mod service;
mod values;
mod yaml;

use std::path::{Path, PathBuf};

use berth_core::ServiceSpec;

pub use diagnostics::{ComposeError, Warning};
pub use environment::{parse_env_file, EnvFileError};
pub use interpolate::MAX_INTERPOLATION_NESTING;
pub use yaml::{MAX_ALIAS_NODES, MAX_YAML_NESTING};

use declarations::Declarations;
use diagnostics::{Diagnostics, Located, Position, Result};
use service::{ServiceReader, StackContext};
use yaml::{Entry, Node};

/// A stack file is a few kilobytes; anything near this is a mistake.
pub const MAX_STACK_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Everything `parse_stack` reads from.
pub struct StackSource<'a> {
    /// The stack's name; services are named `<stack>_<service>` as
    /// `docker stack deploy` names them.
    pub stack: &'a str,
    /// How messages name the file: `compose.yml:12:5: ...`.
    pub file_name: &'a str,
    pub text: &'a str,
    /// Relative env files, bind mounts and secret files resolve against it;
    /// give an absolute path, since bind mounts must be absolute.
    pub base_dir: &'a Path,
    /// The variables for `${VAR}` interpolation and bare `environment` names.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Reads an env file.
    pub read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

/// One stack, ready to deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// In the order the file lists them.
    pub services: Vec<ServiceSpec>,
    pub secrets: Vec<StackSecret>,
    /// The names of the named volumes the file declares, as services mount them.
    pub volumes: Vec<String>,
    pub warnings: Vec<Warning>,
}

/// A secret declared in the top-level `secrets:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSecret {
    /// The name services refer to: `<stack>_<key>`, or for an external
    /// secret its own name, as `docker stack deploy` does.
    pub name: String,
    /// Where the secret's content is, for a secret the stack creates.
    pub file: Option<PathBuf>,
    /// The secret must exist already; the stack does not create it.
    pub external: bool,
}

/// Reads one stack file. Anything berth cannot run is an error at its line
/// and column; anything it ignores or reads differently is a warning.
pub fn parse_stack(source: &StackSource) -> std::result::Result<Stack, ComposeError> {
    let mut diagnostics = Diagnostics::default();
    let stack = read_stack(source, &mut diagnostics).map_err(|e| e.into_error(source.file_name))?;
    Ok(Stack { warnings: diagnostics.into_warnings(source.file_name), ..stack })
}

fn read_stack(source: &StackSource, diagnostics: &mut Diagnostics) -> Result<Stack> {
    berth_core::validate_name("stack", source.stack)
        .map_err(|e| Located::new(Position::default(), format!("the stack name is not valid: {e}")))?;
    if source.text.len() > MAX_STACK_FILE_BYTES {
        return Err(Located::new(
            Position::default(),
            format!(
                "the file has {} bytes, more than the {MAX_STACK_FILE_BYTES} a stack file may have",
                source.text.len()
            ),
        ));
    }
    let root = yaml::load(source.text, source.env, diagnostics)?;
    let layout = Layout::of(&root)?;
    let declarations = Declarations::read(&layout, source, diagnostics)?;
    let context = StackContext::new(source, &layout.services, &declarations);
    let mut services = Vec::with_capacity(layout.services.len());
    for entry in &layout.services {
        services.push(ServiceReader::new(&context, entry, diagnostics).read()?);
    }
    Ok(Stack {
        services,
        secrets: declarations.secrets,
        volumes: declarations.volumes.into_iter().map(|(_, name)| name).collect(),
        warnings: Vec::new(),
    })
}

/// The parts of the file, whichever of the two layouts it uses.
pub(crate) struct Layout<'n> {
    pub services: Vec<&'n Entry>,
    /// Top-level keys other than the services, for the compose layout.
    pub top_level: Vec<&'n Entry>,
}

impl<'n> Layout<'n> {
    fn of(root: &'n Node) -> Result<Self> {
        let entries = root.map("the file").map_err(|_| root.expected("the file", "a mapping with services:"))?;
        if let Some(services) = entries.iter().find(|e| e.key == "services") {
            let list = services.value.map("services")?;
            if list.is_empty() {
                return Err(Located::new(services.key_pos, "services: the file defines no services"));
            }
            let top_level = entries.iter().filter(|e| e.key != "services").collect();
            return Ok(Layout { services: list.iter().collect(), top_level });
        }
        // Tutum's stackfile is the services mapping itself.
        if entries.iter().any(|e| e.value.get("image").is_some()) {
            let services = entries.iter().filter(|e| !e.key.starts_with("x-")).collect();
            return Ok(Layout { services, top_level: Vec::new() });
        }
        Err(Located::new(root.pos, "the file defines no services (expected a services: mapping)"))
    }
}
