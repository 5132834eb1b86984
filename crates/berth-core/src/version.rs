//! Release and cluster versions. A release is what `CARGO_PKG_VERSION`
//! says (`0.2.0-dev`); its *level* is major.minor (`0.2`), the unit in which
//! features and record kinds arrive. The *cluster version* is the level
//! every manager supports: the lowest level among the voting managers,
//! recorded in the replicated state once the leader has seen every voter
//! run it. A write that needs a newer level is refused until then, so a
//! manager of the previous release never meets a record it cannot read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A feature level: major.minor of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterVersion {
    pub major: u16,
    pub minor: u16,
}

impl ClusterVersion {
    /// Release 0.1, the first with versioned formats: what a cluster runs
    /// until its state records a higher level.
    pub const INITIAL: ClusterVersion = ClusterVersion { major: 0, minor: 1 };
    /// Release 0.2: managers report their versions, the cluster version is
    /// recorded (`SetClusterVersion`) and nodes record their agent's release.
    pub const V0_2: ClusterVersion = ClusterVersion { major: 0, minor: 2 };

    /// The level of a release such as `0.2.0`, `0.2.0-dev` or `0.2`. An
    /// empty string is a manager of release 0.1, which did not say.
    pub fn of_release(release: &str) -> Option<ClusterVersion> {
        if release.is_empty() {
            return Some(ClusterVersion::INITIAL);
        }
        let mut parts = release.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ClusterVersion { major, minor })
    }

    /// The level of this build.
    pub fn this_build() -> ClusterVersion {
        ClusterVersion::of_release(THIS_RELEASE).unwrap_or(ClusterVersion::INITIAL)
    }
}

/// This build's release, as `berth --version` and the managers report it.
pub const THIS_RELEASE: &str = env!("CARGO_PKG_VERSION");

impl fmt::Display for ClusterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_level_is_its_major_and_minor() {
        let v = |s| ClusterVersion::of_release(s);
        assert_eq!(v("0.2.0-dev"), Some(ClusterVersion::V0_2));
        assert_eq!(v("0.2.7"), Some(ClusterVersion::V0_2));
        assert_eq!(v("0.1"), Some(ClusterVersion::INITIAL));
        assert_eq!(v(""), Some(ClusterVersion::INITIAL), "a 0.1 manager reports no release");
        assert_eq!(v("1.10.0"), Some(ClusterVersion { major: 1, minor: 10 }));
        assert_eq!(v("banana"), None);
        assert!(ClusterVersion { major: 1, minor: 0 } > ClusterVersion { major: 0, minor: 10 });
        assert_eq!(ClusterVersion::V0_2.to_string(), "0.2");
    }

    #[test]
    fn this_build_is_at_least_the_level_it_introduces() {
        assert!(ClusterVersion::this_build() >= ClusterVersion::V0_2, "{THIS_RELEASE}");
    }
}
