//! Errors point at the exact line and column of the key or value at fault,
//! and say what would be accepted; spec validation errors are mapped back to
//! the key that set the field.

mod common;

use berth_compose::{parse_stack, StackSource};
use common::{parse_err, web};
use std::path::Path;

#[test]
fn bad_yaml_is_an_error_with_its_position() {
    assert_eq!(
        parse_err("services:\n  web:\n    image: nginx\n   ports: [\"80:80\"]\n"),
        "4:4: invalid YAML: while parsing a block mapping, did not find expected key"
    );
    assert_eq!(
        parse_err("services:\n  web:\n    image: [nginx\n"),
        "4:1: invalid YAML: while parsing a flow sequence, expected ',' or ']'"
    );
}

#[test]
fn a_duplicate_key_is_an_error_at_the_second_one() {
    assert_eq!(parse_err(&web("image: httpd")), "4:5: duplicate key 'image'");
}

#[test]
fn the_file_must_be_a_mapping_with_services() {
    assert_eq!(parse_err("- web\n"), "1:1: the file: expected a mapping with services:, found a list");
    assert_eq!(parse_err("version: '3'\n"), "1:1: the file defines no services (expected a services: mapping)");
    assert_eq!(parse_err("services: {}\n"), "1:1: services: the file defines no services");
    assert_eq!(parse_err(""), "1:1: the file defines no services (expected a services: mapping)");
}

#[test]
fn a_bad_stack_name_is_an_error_about_the_file() {
    let error = parse_stack(&StackSource {
        stack: "My Shop",
        file_name: "compose.yml",
        text: "services:\n  web:\n    image: nginx\n",
        base_dir: Path::new("/srv"),
        env: &|_| None,
        read_file: &|_| Err(std::io::ErrorKind::NotFound.into()),
    })
    .expect_err("bad stack name");
    assert_eq!((error.line, error.column), (0, 0));
    assert_eq!(
        error.to_string(),
        "compose.yml: the stack name is not valid: invalid stack: 'My Shop' must use lowercase letters, digits, '-' and '_', starting with a letter or digit"
    );
}

#[test]
fn replicas_must_be_a_whole_number() {
    assert_eq!(
        parse_err(&web("deploy:\n  replicas: -1")),
        "5:17: services.web.deploy.replicas: '-1' is not a whole number from 0 to 4294967295"
    );
    assert_eq!(
        parse_err(&web("deploy:\n  replicas: abc")),
        "5:17: services.web.deploy.replicas: 'abc' is not a whole number from 0 to 4294967295"
    );
    assert_eq!(
        parse_err(&web("target_num_containers: [3]")),
        "4:28: services.web.target_num_containers: expected a string, found a list"
    );
}

#[test]
fn keywords_list_what_is_accepted() {
    assert_eq!(
        parse_err(&web("deploy:\n  restart_policy:\n    condition: sometimes")),
        "6:20: services.web.deploy.restart_policy.condition: 'sometimes' is not one of none, on-failure, any"
    );
    assert_eq!(
        parse_err(&web("deployment_strategy: fastest")),
        "4:26: services.web.deployment_strategy: 'fastest' is not one of emptiest_node, high_availability, every_node"
    );
    assert_eq!(
        parse_err(&web("restart: sometimes")),
        "4:14: services.web.restart: 'sometimes' is not one of no, always, unless-stopped, on-failure, on-failure:COUNT"
    );
    assert_eq!(
        parse_err(&web("depends_on:\n  web:\n    condition: service_ready")),
        "6:20: services.web.depends_on.web.condition: 'service_ready' is not one of service_started, service_healthy, service_completed_successfully"
    );
}

#[test]
fn a_bad_duration_names_the_key_and_the_syntax() {
    assert_eq!(
        parse_err(&web("healthcheck:\n  test: [\"CMD\", \"true\"]\n  interval: 10")),
        "6:17: services.web.healthcheck.interval: '10' is not a duration (e.g. 10s, 1m30s, 500ms, 1h; units ns us ms s m h)"
    );
}

#[test]
fn bad_sizes_and_cpus_name_the_key() {
    assert_eq!(
        parse_err(&web("deploy:\n  resources:\n    limits:\n      memory: lots")),
        "7:19: services.web.deploy.resources.limits.memory: 'lots' is not a size (a number of bytes, or with a unit: 512k, 512M, 1.5G)"
    );
    assert_eq!(
        parse_err(&web("deploy:\n  resources:\n    limits:\n      cpus: half")),
        "7:17: services.web.deploy.resources.limits.cpus: 'half' is not a number of CPUs (e.g. 0.5, 2)"
    );
}

#[test]
fn links_and_dependencies_must_name_services_of_the_file() {
    assert_eq!(
        parse_err(&web("links:\n  - db:database")),
        "5:9: services.web.links[0]: service 'db' is not defined in this file"
    );
    assert_eq!(
        parse_err(&web("depends_on:\n  cache:\n    condition: service_started")),
        "5:7: services.web.depends_on.cache: service 'cache' is not defined in this file"
    );
    assert_eq!(
        parse_err(&web("depends_on: [queue]")),
        "4:18: services.web.depends_on[0]: service 'queue' is not defined in this file"
    );
}

#[test]
fn named_volumes_and_secrets_must_be_declared() {
    assert_eq!(
        parse_err(&web("volumes:\n  - data:/data")),
        "5:9: services.web.volumes[0]: volume 'data' is not declared in the top-level volumes:"
    );
    assert_eq!(
        parse_err(&web("secrets:\n  - source: api_key")),
        "5:9: services.web.secrets[0]: secret 'api_key' is not declared in the top-level secrets:"
    );
    assert_eq!(
        parse_err("services:\n  web:\n    image: nginx\nsecrets:\n  api_key:\n    name: key\n"),
        "5:3: secrets.api_key: give either file: (a path relative to the stack file) or external: true"
    );
}

#[test]
fn a_required_variable_fails_at_its_value_with_its_message() {
    assert_eq!(
        parse_err(&web("environment:\n  DATABASE_URL: ${DATABASE_URL:?set DATABASE_URL to the primary}")),
        "5:21: services.web.environment.DATABASE_URL: required variable DATABASE_URL is missing a value: set DATABASE_URL to the primary"
    );
    assert_eq!(
        parse_err(&web("command: echo $ 5")),
        "4:14: services.web.command: invalid interpolation in 'echo $ 5': '$' must be followed by a variable name or '{' (write $$ for a literal $)"
    );
}

#[test]
fn bad_ports_say_the_syntax() {
    assert_eq!(
        parse_err(&web("ports:\n  - \"80:http\"")),
        "5:9: services.web.ports[0]: '80:http' has 'http', which is not a port from 1 to 65535 (expected [HOST_IP:][HOST:]CONTAINER[/tcp|udp])"
    );
    assert_eq!(
        parse_err(&web("ports:\n  - published: 8080")),
        "5:9: services.web.ports[0]: target (the container port) is required"
    );
    assert_eq!(
        parse_err(&web("ports:\n  - 8000-8001:80")),
        "5:9: services.web.ports[0]: the host range has 2 ports and the container range 1; they must match"
    );
}

#[test]
fn validation_errors_point_at_the_key_that_set_the_field() {
    assert_eq!(
        parse_err(&web("ports:\n  - \"80:80\"\n  - target: 81\n    published: 80")),
        "6:9: services.web: invalid ports[1].host_port: host port 80/tcp is published twice"
    );
    assert_eq!(
        parse_err(&web("deploy:\n  resources:\n    reservations:\n      memory: 1M")),
        "7:19: services.web: invalid memory: 1048576 bytes is below Docker's minimum of 6291456 bytes (6 MiB)"
    );
    assert_eq!(
        parse_err(&web("x-berth:\n  virtual_host: good.test, bad host")),
        "5:21: services.web: invalid virtual_hosts[1]: 'bad host' is not a host name"
    );
    assert_eq!(
        parse_err(&web("environment:\n  - OK=1\n  - \"BAD NAME=2\"")),
        "6:9: services.web: invalid env[1]: name 'BAD NAME' must not contain '=', whitespace or NUL (expected NAME=VALUE)"
    );
    assert_eq!(
        parse_err(&web("healthcheck:\n  test: [\"CMD\", \"true\"]\n  retries: 0")),
        "6:16: services.web: invalid health.retries: must be at least 1"
    );
    assert_eq!(
        parse_err(&web("deploy:\n  rollback_config:\n    max_failure_ratio: 1.5")),
        "6:28: services.web: invalid rollback.max_failure_ratio: 1.5 is not between 0 and 1"
    );
    assert_eq!(
        parse_err(&web("tags: [\"two words\"]")),
        "4:12: services.web: invalid tags[0]: tag 'two words' must be non-empty, without whitespace or ','"
    );
    assert_eq!(
        parse_err("services:\n  Web:\n    image: nginx\n"),
        "2:3: services.Web: invalid name: 'shop_Web' must use lowercase letters, digits, '-' and '_', starting with a letter or digit"
    );
    assert_eq!(
        parse_err("services:\n  web:\n    image: \"ngi nx\"\n"),
        "3:12: services.web: invalid image: 'ngi nx' contains whitespace"
    );
}

#[test]
fn one_task_per_node_conflicts_with_a_replica_count() {
    assert_eq!(
        parse_err(&web("deploy:\n  mode: global\n  replicas: 2")),
        "6:17: services.web.deploy.replicas: cannot be combined with services.web.deploy.mode, which runs one task on every node"
    );
    assert_eq!(
        parse_err(&web("x-berth:\n  deployment_strategy: every_node\n  target_num_containers: 3")),
        "6:30: services.web.x-berth.target_num_containers: cannot be combined with services.web.x-berth.deployment_strategy, which runs one task on every node"
    );
}

#[test]
fn wrong_shapes_say_what_was_expected() {
    assert_eq!(
        parse_err(&web("environment: PROD")),
        "4:18: services.web.environment: expected a list of NAME=VALUE or a mapping, found a single value"
    );
    assert_eq!(
        parse_err("services:\n  web:\n    image: [nginx]\n"),
        "3:12: services.web.image: expected a string, found a list"
    );
    assert_eq!(
        parse_err(&web("healthcheck:\n  test: [\"RUN\", \"true\"]")),
        "5:14: services.web.healthcheck.test[0]: 'RUN' is not one of CMD, CMD-SHELL, NONE"
    );
    assert_eq!(parse_err("services:\n  web: nginx\n"), "2:8: services.web: expected a mapping, found a single value");
}
