//! Finds which endpoint belongs to the current leader, so the script knows
//! which process to kill and when a freshly started cluster is ready: only
//! once every endpoint answers and all name the same leader (and, for berth,
//! the membership holds as many voters as there are endpoints).

use std::time::Duration;

use anyhow::{bail, Result};

use crate::client::{member_view, MemberView, System};

/// Pause between two rounds of status probes while waiting.
const LEADER_POLL_MS: u64 = 100;

/// Probes every endpoint until they agree on a leader or `wait` has passed
/// (one round only when `wait` is zero), and returns the leader's endpoint.
pub async fn wait_for_leader(system: System, endpoints: &[String], wait: Duration) -> Result<String> {
    let started = tokio::time::Instant::now();
    loop {
        let reason = match probe(system, endpoints).await {
            Ok(views) => match pick_leader(&views, endpoints.len()) {
                Ok(leader) => return Ok(leader),
                Err(reason) => reason,
            },
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() >= wait {
            bail!("no agreed {} leader among {endpoints:?} after {} s: {reason}", system.name(), wait.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(LEADER_POLL_MS)).await;
    }
}

async fn probe(system: System, endpoints: &[String]) -> Result<Vec<MemberView>> {
    let mut views = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        views.push(member_view(system, endpoint).await?);
    }
    Ok(views)
}

/// The leader's endpoint when every view names the same leader, that leader
/// is one of the endpoints, and no view reports fewer than `expected_voters`
/// voters; otherwise why not.
pub fn pick_leader(views: &[MemberView], expected_voters: usize) -> Result<String, String> {
    let Some(first) = views.first() else {
        return Err("no endpoint answered".to_string());
    };
    let Some(leader) = first.leader_id else {
        return Err(format!("{} knows no leader yet", first.endpoint));
    };
    if let Some(other) = views.iter().find(|v| v.leader_id != Some(leader)) {
        return Err(format!("{} follows {:?}, {} follows {leader}", other.endpoint, other.leader_id, first.endpoint));
    }
    if let Some(short) = views.iter().find(|v| v.voters.is_some_and(|n| n < expected_voters)) {
        return Err(format!("{} counts {:?} voters, waiting for {expected_voters}", short.endpoint, short.voters));
    }
    views
        .iter()
        .find(|v| v.member_id == leader)
        .map(|v| v.endpoint.clone())
        .ok_or_else(|| format!("leader {leader} is none of the endpoints"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(endpoint: &str, member_id: u64, leader_id: Option<u64>, voters: Option<usize>) -> MemberView {
        MemberView { endpoint: endpoint.to_string(), member_id, leader_id, voters }
    }

    #[test]
    fn agreed_leader_maps_to_its_endpoint() {
        let views = [view("a", 1, Some(2), Some(3)), view("b", 2, Some(2), Some(3)), view("c", 3, Some(2), Some(3))];
        assert_eq!(pick_leader(&views, 3), Ok("b".to_string()));
    }

    #[test]
    fn etcd_views_without_voter_counts_are_accepted() {
        let views = [view("a", 10, Some(30), None), view("b", 30, Some(30), None)];
        assert_eq!(pick_leader(&views, 2), Ok("b".to_string()));
    }

    #[test]
    fn disagreement_or_missing_leader_is_not_ready() {
        let split = [view("a", 1, Some(1), Some(3)), view("b", 2, Some(2), Some(3))];
        assert!(pick_leader(&split, 3).is_err());
        let leaderless = [view("a", 1, None, Some(3))];
        assert!(pick_leader(&leaderless, 1).is_err());
        assert!(pick_leader(&[], 0).is_err());
    }

    #[test]
    fn cluster_still_joining_is_not_ready() {
        let views = [view("a", 1, Some(1), Some(2)), view("b", 2, Some(1), Some(2))];
        assert!(pick_leader(&views, 3).is_err());
    }

    #[test]
    fn leader_outside_the_endpoints_is_reported() {
        let views = [view("a", 1, Some(9), None)];
        assert!(pick_leader(&views, 1).is_err());
    }
}
