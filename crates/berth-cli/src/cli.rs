//! The command line as clap sees it: every command, flag and its help text.
//! Parsing only; what a command does lives in `commands`, and how flags
//! become a service spec lives in `spec`.

use std::net::SocketAddr;
use std::path::PathBuf;

use berth_core::{
    Autodestroy, Availability, EnvVar, FailureAction, PortMapping, RestartCondition, ServiceLink, Strategy,
    TriggerAction, UpdateOrder,
};
use berth_manager::config::DEFAULT_LISTEN;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;
use crate::parse::{self, ScaleTarget};

/// Where `manager init`/`join` keep their state when neither `--data-dir`
/// nor `BERTH_DATA_DIR` says otherwise: beside the caller, so a laptop
/// cluster needs no flags and leaves nothing outside the working folder.
pub const DEFAULT_DATA_DIR: &str = "./.berth/manager";
/// Where `berth agent` keeps its state, beside the caller like the manager's.
pub const DEFAULT_AGENT_DATA_DIR: &str = "./.berth/agent";
/// Where `berth up` keeps its manager's state; running it again resumes.
pub const DEFAULT_UP_DATA_DIR: &str = "./.berth/up";
/// How long `service create`/`scale`/`update` wait for the tasks to run
/// when `--timeout` is not given: long enough for a local image to start
/// on a busy host, short enough that a stuck deployment is reported.
pub const DEFAULT_PROGRESS_TIMEOUT: &str = "60s";
/// How long a rollout is followed without `--timeout`: the cluster ends a
/// stuck rollout by itself (a task stuck past its deadline is a failure),
/// so this only bounds a very long one.
pub const DEFAULT_ROLLOUT_TIMEOUT: &str = "15m";
/// Where an agent's load balancer serves HTTP unless told otherwise: the
/// standard port on every interface, as Tutum's haproxy did.
pub const DEFAULT_PROXY_HTTP_LISTEN: &str = "0.0.0.0:80";
/// The availabilities `node update --availability` accepts.
pub const AVAILABILITIES: &[&str] = &["active", "pause", "drain"];

/// `berth --version`: the release, and the data formats it writes and reads
/// (an upgrade or a downgrade needs the formats to overlap).
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (data format {}, reads formats {} to {})",
        env!("CARGO_PKG_VERSION"),
        berth_codec::FORMAT_VERSION,
        berth_codec::OLDEST_READABLE_FORMAT,
        berth_codec::FORMAT_VERSION
    )
});

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = VERSION.as_str(),
    about = "Run a berth cluster and deploy services on it",
    propagate_version = true
)]
pub struct Cli {
    /// Managers to reach, tried in turn until one answers; any manager will
    /// do, writes are forwarded to the leader.
    #[arg(
        long,
        global = true,
        env = "BERTH_MANAGER",
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        default_value = DEFAULT_LISTEN
    )]
    pub manager: Vec<String>,

    /// Read from the manager that answers without confirming with the
    /// leader: faster, but may miss the latest writes. Reads are
    /// linearizable by default.
    #[arg(long, global = true)]
    pub local: bool,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process and moved, never stored in bulk: boxing the
// large service flags would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a manager, or remove one from the cluster.
    #[command(subcommand)]
    Manager(ManagerCommand),
    /// Print the token that lets a manager or a worker join the cluster.
    JoinToken(JoinTokenArgs),
    /// Inspect the cluster itself.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create, inspect, change and remove services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List, inspect, drain and remove the worker nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Deploy, list and remove stacks: the services of a compose file.
    #[command(subcommand)]
    Stack(StackCommand),
    /// Credentials for image registries: agents pull a task's image from its
    /// registry with them when the image is not on the node.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Create, list and remove secrets: encrypted in the cluster, mounted
    /// read-only at /run/secrets/NAME in the tasks that use them.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Secret URLs that redeploy or scale a service on an HTTP POST (for CI
    /// pipelines).
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Run an agent: join the cluster as a worker and run its tasks on the
    /// local Docker engine.
    Agent(AgentArgs),
    /// One host, one command: a new (or resumed) single-manager cluster and
    /// an agent on the local Docker engine, in this process.
    Up(UpArgs),
}

/// How a worker node appears to the cluster; shared by `agent` and `up`.
#[derive(Debug, Args)]
pub struct NodeIdentityArgs {
    /// The node's name in the cluster [default: this host's name].
    #[arg(long)]
    pub name: Option<String>,
    /// A tag for placement, e.g. ssd or zone:a (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The Docker engine to run tasks on, e.g. unix:///var/run/docker.sock
    /// or tcp://10.0.0.5:2375 [default: DOCKER_HOST, else the local socket].
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,
    /// Where the node's load balancer serves services with a virtual host
    /// (HTTP, by Host header); `off` turns it off. Services' TCP_PORTS are
    /// served on their own ports.
    #[arg(long, value_name = "ADDR|off", default_value = DEFAULT_PROXY_HTTP_LISTEN, value_parser = parse::proxy_listen)]
    pub proxy_http_listen: parse::ProxyListen,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The worker join token (`berth join-token worker` on a manager). The
    /// managers to join are given with --manager (or BERTH_MANAGER).
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub node: NodeIdentityArgs,
    /// Where the agent keeps its state (created if missing).
    #[arg(long, default_value = DEFAULT_AGENT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the manager keeps its Raft log and state; an existing one is
    /// resumed, with its services.
    #[arg(long, default_value = DEFAULT_UP_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address to serve the API on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address clients and other managers use to reach this one
    /// [default: the --listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub node: NodeIdentityArgs,
    /// Deploy this compose file as a stack once the node is ready (the same
    /// file `berth stack deploy` takes to a cluster).
    #[arg(long = "compose-file", short = 'c', value_name = "FILE")]
    pub compose_file: Option<PathBuf>,
    /// The stack's name with -c [default: the compose file's folder name].
    #[arg(long, requires = "compose_file")]
    pub stack: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ManagerCommand {
    /// Start a new cluster with this process as its first manager (or resume
    /// the manager whose state is in the data dir).
    Init(ManagerRunArgs),
    /// Run a manager that joins an existing cluster (or resume the manager
    /// whose state is in the data dir).
    Join(ManagerJoinArgs),
    /// Remove a manager from the cluster by its id (see `berth cluster status`).
    Rm {
        /// The manager's Raft node id.
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct ManagerJoinArgs {
    /// Any manager of the cluster to join.
    #[arg(long, value_name = "ADDR")]
    pub peer: String,
    /// A manager join token (`berth join-token manager` on a manager).
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub run: ManagerRunArgs,
}

#[derive(Debug, Args)]
pub struct ManagerRunArgs {
    /// Where this manager keeps its Raft log and state.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address to serve the API and manager-to-manager traffic on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address other managers and clients use to reach this one
    /// [default: the --listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Raft heartbeat period [default: the manager's LAN-tuned value].
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the randomised election timeout [default: the manager's].
    #[arg(long, value_name = "MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Upper bound of the randomised election timeout [default: the manager's].
    #[arg(long, value_name = "MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Snapshot and compact the log after this many entries [default: the manager's].
    #[arg(long, value_name = "ENTRIES")]
    pub snapshot_threshold: Option<u64>,
    /// How often agents heartbeat to the leader [default: 250].
    #[arg(long, value_name = "MS")]
    pub agent_heartbeat_ms: Option<u64>,
    /// A node silent for this long is marked down and its tasks move [default: 1500].
    #[arg(long, value_name = "MS")]
    pub node_down_grace_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Which kind of node the token admits.
    #[arg(value_enum)]
    pub role: TokenRoleArg,
    /// Print only the token.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRoleArg {
    Manager,
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Managers, leader, term and log indexes, as the answering manager sees them.
    Status {
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service; prints its id, then shows its tasks starting until
    /// all run (unless --detach).
    Create(CreateArgs),
    /// List services.
    #[command(alias = "list")]
    Ls {
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one service's spec and version.
    Inspect {
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// List a service's tasks: where each runs, what it is meant to do and
    /// what it does, newest first within a slot.
    Ps {
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Change some of a service's settings; the others keep their values.
    /// A change to what the tasks run rolls out one batch at a time; waits
    /// until the rollout ends, unless --detach.
    Update(UpdateArgs),
    /// Replace every task with a fresh one running the same spec, rolling
    /// as the update settings say; waits until done, unless --detach.
    Redeploy {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Roll back to the spec before the last update, rolling; waits until
    /// done, unless --detach.
    Rollback {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set the number of replicas of one or more services, and wait until
    /// that many run (unless --detach).
    Scale {
        /// NAME=REPLICAS, e.g. web=3.
        #[arg(required = true, value_name = "NAME=REPLICAS", value_parser = parse::scale_target)]
        targets: Vec<ScaleTarget>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove one or more services and their tasks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name: lowercase letters, digits, '-' and '_'.
    pub name: String,
    /// Container image, e.g. nginx:1.27.
    #[arg(long)]
    pub image: String,
    #[command(flatten)]
    pub flags: ServiceFlags,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Command and arguments replacing the image's CMD, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    /// New container image.
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub flags: ServiceFlags,
    #[command(flatten)]
    pub removals: ServiceRemovals,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// New command and arguments replacing the image's CMD, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Whether and how long a service write waits for its tasks to run.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return once the cluster accepted the change, without waiting for
    /// the tasks to run.
    #[arg(long, short)]
    pub detach: bool,
    /// Give up waiting after this long, e.g. 2m (the change itself stays)
    /// [default: 60s for tasks to start, 15m for a rollout].
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ms)]
    pub timeout: Option<i64>,
}

impl WaitArgs {
    /// The wait, or `default` when --timeout was not given.
    pub fn timeout_or(&self, default: &str) -> std::time::Duration {
        let ms = self.timeout.or_else(|| parse::duration_ms(default).ok()).unwrap_or(0);
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Create or update a stack from a compose file: new services are
    /// created, changed ones roll with their update settings, unchanged ones
    /// are not touched; all in one write. Waits until the changes are done,
    /// unless --detach.
    Deploy(StackDeployArgs),
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// List the tasks of a stack's services.
    Ps {
        stack: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// List a stack's services.
    Services {
        stack: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Remove a stack and all its services.
    #[command(alias = "remove")]
    Rm { stack: String },
}

#[derive(Debug, Args)]
pub struct StackDeployArgs {
    /// The compose file (compose specification, or a Tutum stackfile).
    #[arg(long = "compose-file", short = 'c', value_name = "FILE")]
    pub compose_file: PathBuf,
    /// The stack's name; its services are named STACK_SERVICE.
    pub stack: String,
    /// Remove the stack's services that are no longer in the file.
    #[arg(long)]
    pub prune: bool,
    /// Print what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Store credentials for HOST (e.g. registry.example.com:5000); replaces
    /// earlier ones. The password is read from standard input.
    Login {
        host: String,
        #[arg(long, short)]
        username: String,
        /// Read the password from standard input (the only way, so it never
        /// shows in a process list or shell history).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List registries with stored credentials (never the passwords).
    #[command(alias = "list")]
    Ls {
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Forget the credentials of registries.
    #[command(alias = "remove", alias = "logout")]
    Rm {
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file, or from standard input with `-` (at most
    /// 500 KiB). Secrets never change: rotate by creating a new one and
    /// updating the services (`--secret-rm old --secret new`), which rolls.
    Create {
        name: String,
        /// The file holding the secret, or `-` for standard input.
        file: PathBuf,
    },
    /// List secrets (never their content).
    #[command(alias = "list")]
    Ls {
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Remove secrets no service uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Create a trigger and print its URL; POST to it on any manager's API
    /// port to run the action. The URL is shown once: keep it secret.
    Create {
        service: String,
        #[arg(long, default_value = "redeploy", value_parser = parse::keyword::<TriggerAction>(TriggerAction::ALL))]
        action: TriggerAction,
        /// Print only the URL.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List triggers (of one service, or all).
    #[command(alias = "list")]
    Ls {
        service: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Remove (revoke) triggers by id; their URLs answer 404 from then on.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the worker nodes.
    #[command(alias = "list")]
    Ls {
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one node, by name or id.
    Inspect {
        node: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Pause or drain a node, or change its tags.
    Update(NodeUpdateArgs),
    /// Remove a node from the cluster, by name or id.
    #[command(alias = "remove")]
    Rm { node: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)
    .args(["availability", "tag_add", "tag_rm"])))]
pub struct NodeUpdateArgs {
    /// The node's name or id.
    pub node: String,
    /// active: takes new tasks; pause: keeps its tasks, takes no new ones;
    /// drain: its tasks move to other nodes.
    #[arg(long, value_parser = parse::keyword::<Availability>(AVAILABILITIES))]
    pub availability: Option<Availability>,
    /// Add a tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub tag_add: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub tag_rm: Vec<String>,
}

/// Settings shared by `service create` and `service update`. Every one is
/// optional so that `update` changes only what was given. Counts are `i64`
/// so a negative value reaches the manager, which refuses it naming the field.
#[derive(Debug, Default, Args)]
pub struct ServiceFlags {
    /// Number of tasks to run.
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with = "every_node")]
    pub replicas: Option<i64>,
    /// Run one task on every eligible node (the every-node strategy).
    #[arg(long)]
    pub every_node: bool,
    /// How tasks are spread over nodes.
    #[arg(long, value_parser = parse::keyword::<Strategy>(Strategy::ALL))]
    pub strategy: Option<Strategy>,
    /// Run only on nodes carrying this tag (repeatable; all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Environment variable (repeatable); replaces a variable of the same name.
    #[arg(long, short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<EnvVar>,
    /// Publish a container port on every node running a task (repeatable);
    /// replaces a mapping of the same host port and protocol.
    #[arg(long, short = 'p', value_name = "HOST:CONTAINER[/tcp|udp]")]
    pub publish: Vec<PortMapping>,
    /// A TCP container port other services reach by this service's name,
    /// from any node, without publishing it (repeatable).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub expose: Vec<u16>,
    /// When a stopped task is replaced.
    #[arg(long, value_parser = parse::keyword::<RestartCondition>(RestartCondition::ALL))]
    pub restart: Option<RestartCondition>,
    /// Give up restarting a task after this many attempts (0: never give up).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub restart_max: Option<i64>,
    /// Remove finished tasks for good instead of replacing them.
    #[arg(long, value_parser = parse::keyword::<Autodestroy>(Autodestroy::ALL))]
    pub autodestroy: Option<Autodestroy>,
    /// Health check command, run in the container through the shell; exit 0 is healthy.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between health checks, e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ms)]
    pub health_interval: Option<i64>,
    /// How long one health check may take, e.g. 3s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ms)]
    pub health_timeout: Option<i64>,
    /// Failed checks in a row before a task counts as unhealthy.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub health_retries: Option<i64>,
    /// Grace period after start during which failed checks do not count.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ms)]
    pub health_start_period: Option<i64>,
    /// CPUs reserved for and limiting each task, e.g. 0.5.
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Memory reserved for and limiting each task: bytes, or with a binary
    /// suffix k, m or g (e.g. 512m).
    #[arg(long, value_name = "BYTES", value_parser = parse::memory_bytes)]
    pub memory: Option<i64>,
    /// Reach another service by its name or ALIAS (repeatable); replaces a
    /// link to the same service.
    #[arg(long = "link", value_name = "SERVICE[:ALIAS]")]
    pub links: Vec<ServiceLink>,
    /// Mount a secret at /run/secrets/FILE (default: its name), read-only
    /// (repeatable); replaces the same secret's mount.
    #[arg(long = "secret", value_name = "NAME[:FILE]", value_parser = parse::secret_ref)]
    pub secrets: Vec<berth_core::SecretRef>,
    /// Tasks replaced at once during a rolling update (0: all at once).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub update_parallelism: Option<i64>,
    /// Pause between batches of a rolling update, e.g. 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ms)]
    pub update_delay: Option<i64>,
    /// Stop the old task before starting its replacement, or the reverse.
    #[arg(long, value_parser = parse::keyword::<UpdateOrder>(UpdateOrder::ALL))]
    pub update_order: Option<UpdateOrder>,
    /// What a rolling update does when a new task fails.
    #[arg(long, value_parser = parse::keyword::<FailureAction>(FailureAction::ALL))]
    pub update_failure_action: Option<FailureAction>,
    /// How long a new task is watched before it counts as updated, e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ms)]
    pub update_monitor: Option<i64>,
    /// Share of new tasks that may fail before the failure action is taken,
    /// between 0 and 1.
    #[arg(long, value_name = "F")]
    pub update_max_failure_ratio: Option<f64>,
    /// A label on the service and its containers (repeatable); replaces a
    /// label of the same key.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse::label)]
    pub labels: Vec<(String, String)>,
    /// Replace the image's ENTRYPOINT with these words, split at blanks
    /// (e.g. "/bin/sh -c"); an empty string restores the image's.
    #[arg(long, value_name = "WORDS")]
    pub entrypoint: Option<String>,
    /// Start tasks one after another instead of all at once
    /// (`--sequential=false` turns it off again).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sequential: Option<bool>,
    /// Redeploy the service when its image is updated
    /// (`--autoredeploy=false` turns it off again).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub autoredeploy: Option<bool>,
}

/// Removals only `service update` has. Removing something the service does
/// not have is not an error, so repeating an update is harmless.
#[derive(Debug, Default, Args)]
pub struct ServiceRemovals {
    /// Remove an environment variable by name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub env_rm: Vec<String>,
    /// Remove a published port by host port, on one protocol or both (repeatable).
    #[arg(long, value_name = "HOST_PORT[/tcp|udp]", value_parser = parse::published_port)]
    pub publish_rm: Vec<parse::PublishedPort>,
    /// Remove a placement tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub tag_rm: Vec<String>,
    /// Stop exposing a container port (repeatable).
    #[arg(long, value_name = "PORT")]
    pub expose_rm: Vec<u16>,
    /// Remove a link by the linked service's name (repeatable).
    #[arg(long, value_name = "SERVICE")]
    pub link_rm: Vec<String>,
    /// Stop mounting a secret, by name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub secret_rm: Vec<String>,
    /// Remove a label by key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Remove the health check.
    #[arg(
        long,
        conflicts_with_all = ["health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period"]
    )]
    pub health_rm: bool,
}
