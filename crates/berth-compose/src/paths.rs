//! Host paths written in a stack file: relative ones resolve against the
//! file's directory and `~` against `HOME`, and `.`/`..` are folded without
//! asking the file system, which this crate never touches.

use std::path::{Component, Path, PathBuf};

pub(crate) fn resolve_host_path(
    base_dir: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, String> {
    let path = match text.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = env("HOME").ok_or_else(|| format!("'{text}' starts with '~' but HOME is not set"))?;
            Path::new(&home).join(rest.trim_start_matches('/'))
        }
        _ => base_dir.join(text),
    };
    Ok(normalize(&path))
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            Component::ParentDir if out.has_root() => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/ada".to_string())
    }

    fn resolve(text: &str) -> Result<PathBuf, String> {
        resolve_host_path(Path::new("/srv/shop"), text, &home)
    }

    #[test]
    fn relative_paths_resolve_against_the_file_directory() {
        assert_eq!(resolve("./data"), Ok(PathBuf::from("/srv/shop/data")));
        assert_eq!(resolve("../common/./x.env"), Ok(PathBuf::from("/srv/common/x.env")));
        assert_eq!(resolve("/etc/ssl"), Ok(PathBuf::from("/etc/ssl")));
        assert_eq!(resolve("/../../etc"), Ok(PathBuf::from("/etc")));
        assert_eq!(resolve("~/certs"), Ok(PathBuf::from("/home/ada/certs")));
        assert!(resolve_host_path(Path::new("/srv"), "~/x", &|_| None).is_err());
    }

    #[test]
    fn a_relative_base_keeps_leading_parent_components() {
        assert_eq!(resolve_host_path(Path::new(".."), "../x", &home), Ok(PathBuf::from("../../x")));
    }
}
