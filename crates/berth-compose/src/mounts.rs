//! A service's `volumes` and `secrets`. Named volumes and secrets must be
//! declared at the top level, as compose requires, and take the stack's name
//! for them; bind-mount sources resolve against the stack file's directory.

use berth_core::{SecretRef, VolumeKind, VolumeMount};

use crate::diagnostics::{Located, Position, Result};
use crate::paths::resolve_host_path;
use crate::service::ServiceReader;
use crate::values::{boolean, keyword};
use crate::yaml::{Node, Value};

/// Where Docker mounts secrets; a target under it is the same as its file name.
const SECRETS_DIR: &str = "/run/secrets/";

/// What a volume entry asks for, before its source is resolved.
struct MountRequest<'t> {
    kind: VolumeKind,
    source: &'t str,
    target: &'t str,
    read_only: bool,
}

impl ServiceReader<'_> {
    pub(crate) fn read_volumes(&mut self, node: &Node, path: &str) -> Result<()> {
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let request = match &item.value {
                Value::Map(_) => self.long_volume(item, &item_path)?,
                _ => self.short_volume(item, &item_path)?,
            };
            if let Some(request) = request {
                self.mount(request, item.pos, &item_path)?;
            }
        }
        Ok(())
    }

    /// `SOURCE:TARGET[:MODE]`; a source that looks like a path is a bind mount.
    fn short_volume<'n>(&mut self, node: &'n Node, path: &str) -> Result<Option<MountRequest<'n>>> {
        let text = node.text(path)?;
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts[..] {
            [_] => {
                self.warn_anonymous(node.pos, path);
                return Ok(None);
            }
            [source, target] => (source, target, ""),
            [source, target, mode] => (source, target, mode),
            _ => return Err(Located::new(node.pos, format!("{path}: '{text}' is not SOURCE:TARGET[:MODE]"))),
        };
        let kind = if source.starts_with(['/', '.', '~']) { VolumeKind::Bind } else { VolumeKind::Named };
        let mut read_only = false;
        for flag in mode.split(',').filter(|flag| !flag.is_empty()) {
            match flag {
                "ro" => read_only = true,
                "rw" => read_only = false,
                other => self.diagnostics.warn(node.pos, format!("{path}: the mount option '{other}' is ignored")),
            }
        }
        Ok(Some(MountRequest { kind, source, target, read_only }))
    }

    fn long_volume<'n>(&mut self, node: &'n Node, path: &str) -> Result<Option<MountRequest<'n>>> {
        let mut kind = Some(VolumeKind::Named);
        let mut source = None;
        let mut target = None;
        let mut read_only = false;
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            match option.key.as_str() {
                "type" => kind = self.volume_type(&option.value, &option_path)?,
                "source" => source = Some(option.value.text(&option_path)?),
                "target" => target = Some(option.value.text(&option_path)?),
                "read_only" => read_only = boolean(&option.value, &option_path)?,
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        let Some(kind) = kind else { return Ok(None) };
        let target = target.ok_or_else(|| Located::new(node.pos, format!("{path}: target is required")))?;
        let Some(source) = source else {
            self.warn_anonymous(node.pos, path);
            return Ok(None);
        };
        Ok(Some(MountRequest { kind, source, target, read_only }))
    }

    /// `None` for the mount types berth does not run.
    fn volume_type(&mut self, node: &Node, path: &str) -> Result<Option<VolumeKind>> {
        const TYPES: [(&str, Option<VolumeKind>); 6] = [
            ("volume", Some(VolumeKind::Named)),
            ("bind", Some(VolumeKind::Bind)),
            ("tmpfs", None),
            ("npipe", None),
            ("cluster", None),
            ("image", None),
        ];
        let kind = keyword(node, path, &TYPES)?;
        if kind.is_none() {
            self.diagnostics
                .warn(node.pos, format!("{path}: berth mounts only volumes and binds; this mount is ignored"));
        }
        Ok(kind)
    }

    fn warn_anonymous(&mut self, pos: Position, path: &str) {
        self.diagnostics.warn(pos, format!("{path}: berth has no anonymous volumes; name the volume to keep it"));
    }

    fn mount(&mut self, request: MountRequest, pos: Position, path: &str) -> Result<()> {
        let source = match request.kind {
            VolumeKind::Bind => {
                let source = self.context.source;
                let resolved = resolve_host_path(source.base_dir, request.source, source.env)
                    .map_err(|reason| Located::new(pos, format!("{path}: {reason}")))?;
                resolved.to_string_lossy().into_owned()
            }
            VolumeKind::Named => {
                self.context.declarations.volume(request.source).map(str::to_string).ok_or_else(|| {
                    Located::new(
                        pos,
                        format!("{path}: volume '{}' is not declared in the top-level volumes:", request.source),
                    )
                })?
            }
        };
        self.mark(format!("volumes[{}]", self.spec.volumes.len()), pos);
        self.spec.volumes.push(VolumeMount {
            kind: request.kind,
            source,
            target: request.target.to_string(),
            read_only: request.read_only,
        });
        Ok(())
    }

    pub(crate) fn read_secrets(&mut self, node: &Node, path: &str) -> Result<()> {
        for (i, item) in node.seq(path)?.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let (source, target) = match &item.value {
                Value::Map(_) => self.long_secret(item, &item_path)?,
                _ => (item.text(&item_path)?, None),
            };
            let name = self.context.declarations.secret(source).map(str::to_string).ok_or_else(|| {
                Located::new(
                    item.pos,
                    format!("{item_path}: secret '{source}' is not declared in the top-level secrets:"),
                )
            })?;
            // The file keeps the name the compose file knows the secret by.
            let target = target.unwrap_or(source);
            let target = target.strip_prefix(SECRETS_DIR).unwrap_or(target).to_string();
            self.mark(format!("secrets[{}]", self.spec.secrets.len()), item.pos);
            self.spec.secrets.push(SecretRef { name, target });
        }
        Ok(())
    }

    fn long_secret<'n>(&mut self, node: &'n Node, path: &str) -> Result<(&'n str, Option<&'n str>)> {
        let mut source = None;
        let mut target = None;
        for option in node.map(path)? {
            let option_path = format!("{path}.{}", option.key);
            match option.key.as_str() {
                "source" => source = Some(option.value.text(&option_path)?),
                "target" => target = Some(option.value.text(&option_path)?),
                key if key.starts_with("x-") => {}
                _ => self.diagnostics.unsupported(option.key_pos, &option_path),
            }
        }
        let source = source.ok_or_else(|| Located::new(node.pos, format!("{path}: source is required")))?;
        Ok((source, target))
    }
}
