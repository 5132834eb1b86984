//! Stacks: the services of one compose file, deployed together. A stack is
//! the set of services whose spec names it (`spec.stack`); deploying one is
//! a single Raft entry, so a half-applied stack never exists, and the plan
//! below says what that entry changes: unchanged services are not touched,
//! changed ones roll with their update settings, and services missing from
//! the file go only with `prune`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{ClusterState, ServiceSpec};

/// What deploying a stack file changes, by service name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackPlan {
    pub create: Vec<String>,
    /// Changed; those whose tasks must be replaced roll out.
    pub update: Vec<String>,
    pub unchanged: Vec<String>,
    /// In the stack but not in the file: removed with `prune`, else kept.
    pub remove: Vec<String>,
    /// In the stack, not in the file, and kept (no `prune`).
    pub keep: Vec<String>,
}

impl StackPlan {
    pub fn changes_nothing(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

/// The services of `stack`, sorted by name.
pub fn stack_services<'a>(state: &'a ClusterState, stack: &str) -> Vec<&'a crate::Service> {
    let mut services: Vec<_> = state.services().filter(|s| s.spec.stack == stack).collect();
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    services
}

/// Every stack and how many services it has, sorted by name.
pub fn stacks(state: &ClusterState) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for service in state.services().filter(|s| !s.spec.stack.is_empty()) {
        *counts.entry(service.spec.stack.clone()).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Compares the file's specs with what runs. The file is the truth for
/// everything in it: a service scaled by hand since the last deploy goes
/// back to the file's replica count.
pub fn plan(state: &ClusterState, stack: &str, specs: &[ServiceSpec], prune: bool) -> StackPlan {
    let mut out = StackPlan::default();
    let wanted: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for spec in specs {
        match state.service(&spec.name) {
            None => out.create.push(spec.name.clone()),
            Some(current) if current.spec == *spec => out.unchanged.push(spec.name.clone()),
            Some(_) => out.update.push(spec.name.clone()),
        }
    }
    for service in stack_services(state, stack) {
        if !wanted.contains(service.spec.name.as_str()) {
            if prune {
                out.remove.push(service.spec.name.clone());
            } else {
                out.keep.push(service.spec.name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, CoreError, Outcome, Request, ServiceLink};

    fn spec(short: &str, image: &str) -> ServiceSpec {
        let mut spec = ServiceSpec::new(format!("shop_{short}"), image);
        spec.stack = "shop".into();
        spec
    }

    fn deploy(
        state: &mut ClusterState,
        index: u64,
        specs: &[ServiceSpec],
        prune: bool,
    ) -> Result<StackPlan, CoreError> {
        let services = specs.iter().map(|s| (format!("id-{}", s.name), s.clone())).collect();
        let request = Request {
            request_id: String::new(),
            issued_at_ms: 1_000,
            command: Command::DeployStack { stack: "shop".into(), services, prune },
        };
        match state.apply(index, &request).0 {
            Ok(Outcome::StackDeployed(plan)) => Ok(*plan),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn a_deploy_is_a_diff_and_only_changed_services_change() {
        let mut state = ClusterState::default();
        let mut web = spec("web", "web:1");
        web.links.push(ServiceLink { service: "shop_db".into(), alias: "db".into() });
        let first = deploy(&mut state, 1, &[web.clone(), spec("db", "db:1"), spec("cache", "c:1")], false);
        assert_eq!(first.map(|p| p.create.len()), Ok(3), "a link to a service created by the same deploy is fine");

        let again = deploy(&mut state, 2, &[web.clone(), spec("db", "db:1"), spec("cache", "c:1")], false);
        assert_eq!(again.map(|p| p.changes_nothing()), Ok(true));
        assert_eq!(state.service("shop_web").map(|s| s.version), Some(1), "unchanged services are not touched");

        let changed = deploy(&mut state, 3, &[web.clone(), spec("db", "db:2")], false).expect("deploys");
        assert_eq!(changed.update, vec!["shop_db".to_string()]);
        assert_eq!(changed.keep, vec!["shop_cache".to_string()], "without prune a missing service stays");
        assert_eq!(state.service("shop_db").map(|s| s.version), Some(3));
        assert_eq!(state.service("shop_web").map(|s| s.version), Some(1));

        let pruned = deploy(&mut state, 4, &[web, spec("db", "db:2")], true).expect("deploys");
        assert_eq!(pruned.remove, vec!["shop_cache".to_string()]);
        assert!(state.service("shop_cache").is_none());
        assert_eq!(stacks(&state), vec![("shop".to_string(), 2)]);
    }

    #[test]
    fn an_invalid_service_refuses_the_whole_stack_naming_it() {
        let mut state = ClusterState::default();
        let mut broken = spec("db", "db:1");
        broken.image.clear();
        let err = deploy(&mut state, 1, &[spec("web", "web:1"), broken], false).expect_err("invalid");
        assert_eq!(err, CoreError::invalid("shop_db.image", "must not be empty"));
        assert_eq!(state.services().count(), 0, "nothing of the stack was written");
        let mut wrong_stack = spec("web", "web:1");
        wrong_stack.stack = "other".into();
        assert!(deploy(&mut state, 2, &[wrong_stack], false).is_err());
    }

    #[test]
    fn removing_a_stack_removes_its_services_unless_others_depend_on_them() {
        let mut state = ClusterState::default();
        deploy(&mut state, 1, &[spec("web", "web:1"), spec("db", "db:1")], false).expect("deploys");
        let mut outsider = ServiceSpec::new("outsider", "x");
        outsider.links.push(ServiceLink { service: "shop_db".into(), alias: String::new() });
        let create = Command::CreateService { id: "o".into(), spec: outsider };
        let _ = state.apply(2, &Request { request_id: String::new(), issued_at_ms: 1, command: create });
        let remove = |state: &mut ClusterState, index| {
            let command = Command::RemoveStack { stack: "shop".into() };
            state.apply(index, &Request { request_id: String::new(), issued_at_ms: 1, command }).0
        };
        assert!(matches!(remove(&mut state, 3), Err(CoreError::Conflict(_))));
        let _ = state.apply(
            4,
            &Request {
                request_id: String::new(),
                issued_at_ms: 1,
                command: Command::RemoveService { name: "outsider".into() },
            },
        );
        assert!(matches!(remove(&mut state, 5), Ok(Outcome::StackRemoved { ref services }) if services.len() == 2));
        assert_eq!(state.services().count(), 0);
    }
}
