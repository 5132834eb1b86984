//! What the scheduler decides for one pending task, and how a batch of
//! decisions becomes the two lists that `Command::AssignTasks` carries.

/// The outcome of placing one pending task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Run the task on this node.
    Assign { task_id: String, node_id: String },
    /// No node can run the task now; `reason` says why, for the user.
    Unplaceable { task_id: String, reason: String },
}

impl Decision {
    pub fn task_id(&self) -> &str {
        match self {
            Decision::Assign { task_id, .. } | Decision::Unplaceable { task_id, .. } => task_id,
        }
    }

    /// The chosen node, if the task was placed.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Decision::Assign { node_id, .. } => Some(node_id),
            Decision::Unplaceable { .. } => None,
        }
    }
}

/// `(task id, node id)` pairs, as `Command::AssignTasks` carries them.
pub type Assignments = Vec<(String, String)>;
/// `(task id, reason)` pairs, as `Command::AssignTasks` carries them.
pub type Refusals = Vec<(String, String)>;

/// Splits decisions into `(task id, node id)` assignments and
/// `(task id, reason)` refusals, in batch order, as `Command::AssignTasks`
/// takes them.
pub fn partition_decisions(decisions: impl IntoIterator<Item = Decision>) -> (Assignments, Refusals) {
    let mut assignments = Vec::new();
    let mut unplaceable = Vec::new();
    for decision in decisions {
        match decision {
            Decision::Assign { task_id, node_id } => assignments.push((task_id, node_id)),
            Decision::Unplaceable { task_id, reason } => unplaceable.push((task_id, reason)),
        }
    }
    (assignments, unplaceable)
}
