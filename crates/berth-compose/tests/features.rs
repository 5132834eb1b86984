//! One test per supported stack-file feature: each reads a small file and
//! checks the `ServiceSpec` fields it maps to, and the warnings it gives.

mod common;

use std::collections::BTreeMap;

use berth_compose::StackSecret;
use berth_core::{
    Autodestroy, Dependency, DependencyCondition, EnvVar, FailureAction, HealthCheck, PortMapping, Protocol, Resources,
    RestartCondition, RestartPolicy, SecretRef, ServiceLink, ServiceMode, Strategy, UpdateConfig, UpdateOrder,
    VolumeKind, VolumeMount,
};
use common::{only_service, parse_err, parse_ok, warnings, web};

fn env_vars(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs.iter().map(|(name, value)| EnvVar { name: name.to_string(), value: value.to_string() }).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn services_are_named_after_the_stack_in_file_order() {
    let stack = parse_ok("services:\n  web:\n    image: nginx\n  api:\n    image: api:1\n");
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shop_web", "shop_api"]);
    assert!(stack.services.iter().all(|s| s.stack == "shop"));
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    assert_eq!(stack.services[0].mode, ServiceMode::Replicated { replicas: 1 });
}

#[test]
fn a_service_without_an_image_is_an_error_at_the_service() {
    assert_eq!(
        parse_err("services:\n  web:\n    command: echo hi\n"),
        "2:3: services.web: image is required (berth runs images; it does not build them)"
    );
}

#[test]
fn command_and_entrypoint_split_strings_like_a_shell_and_take_lists_as_they_are() {
    let spec =
        only_service(&web("command: nginx -g 'daemon off;'\nentrypoint: [\"/docker-entrypoint.sh\", \"--verbose\"]"));
    assert_eq!(spec.command, strings(&["nginx", "-g", "daemon off;"]));
    assert_eq!(spec.entrypoint, strings(&["/docker-entrypoint.sh", "--verbose"]));
}

#[test]
fn environment_as_a_list_takes_bare_names_from_the_caller() {
    let spec = only_service(&web("environment:\n  - MODE=prod\n  - URL=http://x/?a=b\n  - DB_PASSWORD\n  - NOT_SET"));
    assert_eq!(spec.env, env_vars(&[("MODE", "prod"), ("URL", "http://x/?a=b"), ("DB_PASSWORD", "s3cret")]));
}

#[test]
fn environment_as_a_mapping_keeps_values_as_written() {
    let spec =
        only_service(&web("environment:\n  DEBUG: true\n  RATIO: 0.50\n  DB_PASSWORD:\n  NOT_SET:\n  EMPTY: ''"));
    assert_eq!(spec.env, env_vars(&[("DEBUG", "true"), ("RATIO", "0.50"), ("DB_PASSWORD", "s3cret"), ("EMPTY", "")]));
}

#[test]
fn env_files_resolve_against_the_base_dir_and_environment_wins() {
    let spec = only_service(&web(
        "environment:\n  LOG_LEVEL: warn\nenv_file:\n  - ./app.env\n  - path: common/extra.env\n  - path: missing.env\n    required: false",
    ));
    assert_eq!(spec.env, env_vars(&[("DB_HOST", "db"), ("DB_PORT", "5432"), ("LOG_LEVEL", "warn"), ("EXTRA", "1")]));
    let single = only_service(&web("env_file: app.env"));
    assert_eq!(single.env.len(), 3);
}

#[test]
fn a_missing_or_broken_env_file_is_an_error_at_its_entry() {
    assert_eq!(
        parse_err(&web("env_file: missing.env")),
        "4:15: services.web.env_file: cannot read /srv/shop/missing.env: No such file or directory"
    );
    assert_eq!(
        parse_err(&web("env_file:\n  - broken.env")),
        "5:9: services.web.env_file[0]: /srv/shop/broken.env: line 2: 'BAD LINE' is not a variable name (expected NAME=VALUE)"
    );
}

#[test]
fn short_ports_publish_and_a_container_port_alone_is_exposed() {
    let stack = parse_ok(&web(
        "ports:\n  - \"8080:80\"\n  - 5353:53/udp\n  - \"127.0.0.1:8443:443\"\n  - \"9000\"\n  - 7000-7001:8000-8001",
    ));
    let spec = &stack.services[0];
    let tcp = |host_port, container_port| PortMapping { host_port, container_port, protocol: Protocol::Tcp };
    assert_eq!(
        spec.ports,
        vec![
            tcp(8080, 80),
            PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp },
            tcp(8443, 443),
            tcp(7000, 8000),
            tcp(7001, 8001),
        ]
    );
    assert_eq!(spec.expose, vec![9000]);
    assert_eq!(
        warnings(&stack),
        ["7:9: services.web.ports[2]: the host IP 127.0.0.1 is ignored; berth publishes on the address of the node running the task"]
    );
}

#[test]
fn long_ports_read_target_published_protocol_and_mode() {
    let stack = parse_ok(&web(
        "ports:\n  - target: 80\n    published: 8080\n    protocol: tcp\n    mode: host\n  - target: 9090\n  - target: 53\n    published: \"53\"\n    protocol: udp\n    host_ip: 10.0.0.1",
    ));
    let spec = &stack.services[0];
    assert_eq!(
        spec.ports,
        vec![
            PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp },
            PortMapping { host_port: 53, container_port: 53, protocol: Protocol::Udp },
        ]
    );
    assert_eq!(spec.expose, vec![9090]);
    assert_eq!(warnings(&stack), ["13:9: services.web.ports[2].host_ip is not supported by berth and is ignored"]);
}

#[test]
fn expose_takes_ports_and_ranges() {
    let spec = only_service(&web("expose:\n  - \"3000\"\n  - 4000-4002\n  - 5000/tcp\n  - 3000"));
    assert_eq!(spec.expose, vec![3000, 4000, 4001, 4002, 5000]);
}

#[test]
fn labels_as_a_list_or_a_mapping_and_deploy_labels_join_them() {
    let spec = only_service(&web("labels:\n  - com.example.team=shop\n  - flag\ndeploy:\n  labels:\n    com.example.tier: front\n    com.example.team: ignored"));
    let expected = BTreeMap::from([
        ("com.example.team".to_string(), "shop".to_string()),
        ("com.example.tier".to_string(), "front".to_string()),
        ("flag".to_string(), String::new()),
    ]);
    assert_eq!(spec.labels, expected);
    let mapped = only_service(&web("labels:\n  a: \"1\"\n  b:"));
    assert_eq!(mapped.labels.get("a").map(String::as_str), Some("1"));
    assert_eq!(mapped.labels.get("b").map(String::as_str), Some(""));
}

#[test]
fn healthcheck_cmd_becomes_a_quoted_shell_line_with_durations() {
    let spec = only_service(&web(
        "healthcheck:\n  test: [\"CMD\", \"curl\", \"-f\", \"http://localhost/health check\"]\n  interval: 1m30s\n  timeout: 500ms\n  retries: 5\n  start_period: 10s",
    ));
    assert_eq!(
        spec.health,
        Some(HealthCheck {
            command: "curl -f 'http://localhost/health check'".into(),
            interval_ms: 90_000,
            timeout_ms: 500,
            retries: 5,
            start_period_ms: 10_000,
        })
    );
}

#[test]
fn healthcheck_shell_forms_and_docker_defaults() {
    let shell = only_service(&web("healthcheck:\n  test: [\"CMD-SHELL\", \"pg_isready || exit 1\"]"));
    assert_eq!(
        shell.health,
        Some(HealthCheck {
            command: "pg_isready || exit 1".into(),
            interval_ms: 30_000,
            timeout_ms: 30_000,
            retries: 3,
            start_period_ms: 0
        })
    );
    let string = only_service(&web("healthcheck:\n  test: wget -q -O- localhost"));
    assert_eq!(string.health.map(|h| h.command), Some("wget -q -O- localhost".to_string()));
}

#[test]
fn healthcheck_none_or_disable_means_no_check() {
    assert_eq!(only_service(&web("healthcheck:\n  test: [\"NONE\"]")).health, None);
    assert_eq!(only_service(&web("healthcheck:\n  test: [\"CMD\", \"true\"]\n  disable: true")).health, None);
    let stack = parse_ok(&web("healthcheck:\n  interval: 5s"));
    assert_eq!(stack.services[0].health, None);
    assert_eq!(
        warnings(&stack),
        ["4:5: services.web.healthcheck has no test, and berth does not use the image's HEALTHCHECK; no health check runs"]
    );
}

#[test]
fn links_name_services_of_the_file_and_alias_defaults_to_the_short_name() {
    let stack = parse_ok("services:\n  web:\n    image: nginx\n    links: [api, \"store:db\"]\n  api:\n    image: api\n  store:\n    image: postgres\n");
    assert_eq!(
        stack.services[0].links,
        vec![
            ServiceLink { service: "shop_api".into(), alias: "api".into() },
            ServiceLink { service: "shop_store".into(), alias: "db".into() },
        ]
    );
}

#[test]
fn depends_on_as_a_list_or_with_conditions() {
    let text = "services:
  web:
    image: nginx
    depends_on:
      store:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
        restart: true
      api:
  worker:
    image: w
    depends_on: [store]
  api:
    image: api
  store:
    image: postgres
  migrate:
    image: migrate
";
    let stack = parse_ok(text);
    let dependency = |service: &str, condition| Dependency { service: service.into(), condition };
    assert_eq!(
        stack.services[0].depends_on,
        vec![
            dependency("shop_store", DependencyCondition::Healthy),
            dependency("shop_migrate", DependencyCondition::Completed),
            dependency("shop_api", DependencyCondition::Started),
        ]
    );
    assert_eq!(stack.services[1].depends_on, vec![dependency("shop_store", DependencyCondition::Started)]);
    assert_eq!(
        warnings(&stack),
        ["9:9: services.web.depends_on.migrate.restart is not supported by berth and is ignored"]
    );
}

#[test]
fn volumes_short_syntax_named_absolute_relative_and_home() {
    let text = "services:
  web:
    image: nginx
    volumes:
      - data:/var/lib/data
      - /etc/ssl/certs:/certs:ro
      - ./site:/usr/share/nginx/html:ro,z
      - ~/cache:/cache
      - /scratch
volumes:
  data:
";
    let stack = parse_ok(text);
    let mount = |kind, source: &str, target: &str, read_only| VolumeMount {
        kind,
        source: source.into(),
        target: target.into(),
        read_only,
    };
    assert_eq!(
        stack.services[0].volumes,
        vec![
            mount(VolumeKind::Named, "shop_data", "/var/lib/data", false),
            mount(VolumeKind::Bind, "/etc/ssl/certs", "/certs", true),
            mount(VolumeKind::Bind, "/srv/shop/site", "/usr/share/nginx/html", true),
            mount(VolumeKind::Bind, "/home/ada/cache", "/cache", false),
        ]
    );
    assert_eq!(stack.volumes, strings(&["shop_data"]));
    assert_eq!(
        warnings(&stack),
        [
            "7:9: services.web.volumes[2]: the mount option 'z' is ignored",
            "9:9: services.web.volumes[4]: berth has no anonymous volumes; name the volume to keep it",
        ]
    );
}

#[test]
fn volumes_long_syntax_and_external_or_renamed_declarations() {
    let text = "services:
  web:
    image: nginx
    volumes:
      - type: volume
        source: uploads
        target: /uploads
      - type: bind
        source: ./conf
        target: /etc/nginx/conf.d
        read_only: true
      - type: volume
        source: shared
        target: /shared
        volume:
          nocopy: true
      - type: tmpfs
        target: /tmp
volumes:
  uploads:
    external: true
  shared:
    name: shared-between-stacks
    driver: local
";
    let stack = parse_ok(text);
    let volumes = &stack.services[0].volumes;
    assert_eq!(
        volumes[0],
        VolumeMount { kind: VolumeKind::Named, source: "uploads".into(), target: "/uploads".into(), read_only: false }
    );
    assert_eq!(
        volumes[1],
        VolumeMount {
            kind: VolumeKind::Bind,
            source: "/srv/shop/conf".into(),
            target: "/etc/nginx/conf.d".into(),
            read_only: true
        }
    );
    assert_eq!(volumes[2].source, "shared-between-stacks");
    assert_eq!(volumes.len(), 3);
    assert_eq!(stack.volumes, strings(&["uploads", "shared-between-stacks"]));
    assert_eq!(
        warnings(&stack),
        [
            "15:9: services.web.volumes[2].volume is not supported by berth and is ignored",
            "17:15: services.web.volumes[3].type: berth mounts only volumes and binds; this mount is ignored",
            "24:5: volumes.shared.driver is not supported by berth and is ignored",
        ]
    );
}

#[test]
fn secrets_short_and_long_must_be_declared_with_a_file_or_external() {
    let text = "services:
  web:
    image: nginx
    secrets:
      - db_password
      - source: tls_key
        target: /run/secrets/server.key
      - source: api_token
        target: token
secrets:
  db_password:
    file: ./secrets/db.txt
  tls_key:
    external: true
  api_token:
    file: /etc/berth/token
    name: shop-api-token
";
    let stack = parse_ok(text);
    assert_eq!(
        stack.services[0].secrets,
        vec![
            SecretRef { name: "shop_db_password".into(), target: "db_password".into() },
            SecretRef { name: "tls_key".into(), target: "server.key".into() },
            SecretRef { name: "shop-api-token".into(), target: "token".into() },
        ]
    );
    assert_eq!(
        stack.secrets,
        vec![
            StackSecret {
                name: "shop_db_password".into(),
                file: Some("/srv/shop/secrets/db.txt".into()),
                external: false
            },
            StackSecret { name: "tls_key".into(), file: None, external: true },
            StackSecret { name: "shop-api-token".into(), file: Some("/etc/berth/token".into()), external: false },
        ]
    );
}

#[test]
fn deploy_replicas_and_global_mode() {
    assert_eq!(only_service(&web("deploy:\n  replicas: 4")).mode, ServiceMode::Replicated { replicas: 4 });
    let global = only_service(&web("deploy:\n  mode: global"));
    assert_eq!((global.mode, global.strategy), (ServiceMode::EveryNode, Strategy::EveryNode));
}

#[test]
fn placement_constraints_on_node_labels_become_tags_and_others_warn() {
    let stack = parse_ok(&web(
        "deploy:\n  placement:\n    constraints:\n      - node.labels.zone == eu-1\n      - \"node.labels.ssd==true\"\n      - node.role == manager\n    preferences:\n      - spread: node.labels.zone",
    ));
    assert_eq!(stack.services[0].tags, strings(&["zone:eu-1", "ssd:true"]));
    assert_eq!(
        warnings(&stack),
        [
            "9:13: services.web.deploy.placement.constraints[2]: 'node.role == manager' is ignored; berth places by node tags, written as node.labels.KEY == VALUE",
            "10:9: services.web.deploy.placement.preferences is not supported by berth and is ignored",
        ]
    );
}

#[test]
fn resources_prefer_reservations_then_limits() {
    let stack = parse_ok(&web(
        "deploy:\n  resources:\n    limits:\n      cpus: \"1.5\"\n      memory: 1G\n    reservations:\n      memory: 512M\n      devices: []",
    ));
    assert_eq!(stack.services[0].resources, Resources { millicpus: 1_500, memory_bytes: 512 * 1024 * 1024 });
    assert_eq!(
        warnings(&stack),
        [
            "8:19: services.web.deploy.resources.limits.memory: berth reserves and limits with one value; the reservation (services.web.deploy.resources.reservations.memory) is used",
            "11:11: services.web.deploy.resources.reservations.devices is not supported by berth and is ignored",
        ]
    );
    let bytes =
        only_service(&web("deploy:\n  resources:\n    reservations:\n      cpus: 0.25\n      memory: 67108864"));
    assert_eq!(bytes.resources, Resources { millicpus: 250, memory_bytes: 64 * 1024 * 1024 });
}

#[test]
fn restart_policy_conditions_map_to_berth_restart() {
    let spec = only_service(&web("deploy:\n  restart_policy:\n    condition: on-failure\n    max_attempts: 3"));
    assert_eq!(spec.restart, RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 3 });
    assert_eq!(
        only_service(&web("deploy:\n  restart_policy:\n    condition: none")).restart.condition,
        RestartCondition::Never
    );
    assert_eq!(
        only_service(&web("deploy:\n  restart_policy:\n    condition: any")).restart.condition,
        RestartCondition::Always
    );
}

#[test]
fn service_level_restart_is_read_too() {
    let read = |value: &str| only_service(&web(&format!("restart: {value}"))).restart;
    assert_eq!(read("\"no\""), RestartPolicy { condition: RestartCondition::Never, max_attempts: 0 });
    assert_eq!(read("unless-stopped"), RestartPolicy { condition: RestartCondition::Always, max_attempts: 0 });
    assert_eq!(read("on-failure:4"), RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 4 });
}

#[test]
fn update_and_rollback_config_become_update_configs() {
    let spec = only_service(&web(
        "deploy:\n  update_config:\n    parallelism: 2\n    delay: 10s\n    order: start-first\n    failure_action: rollback\n    monitor: 1m\n    max_failure_ratio: 0.2\n  rollback_config:\n    parallelism: 0\n    failure_action: continue",
    ));
    assert_eq!(
        spec.update,
        UpdateConfig {
            parallelism: 2,
            delay_ms: 10_000,
            order: UpdateOrder::StartFirst,
            failure_action: FailureAction::Rollback,
            monitor_ms: 60_000,
            max_failure_ratio: 0.2,
        }
    );
    assert_eq!(
        spec.rollback,
        UpdateConfig { parallelism: 0, failure_action: FailureAction::Continue, ..UpdateConfig::default() }
    );
}

#[test]
fn tutum_keys_are_read_directly_in_the_service() {
    let spec = only_service(&web(
        "target_num_containers: 3\ndeployment_strategy: high_availability\ntags: [ssd, eu]\nautorestart: ON_FAILURE\nautodestroy: ALWAYS\nsequential_deployment: true\nautoredeploy: true",
    ));
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(spec.strategy, Strategy::HighAvailability);
    assert_eq!(spec.tags, strings(&["ssd", "eu"]));
    assert_eq!(spec.restart.condition, RestartCondition::OnFailure);
    assert_eq!(spec.autodestroy, Autodestroy::Always);
    assert!(spec.sequential && spec.autoredeploy);
}

#[test]
fn berth_keys_under_x_berth_with_virtual_hosts() {
    let stack = parse_ok(&web(
        "environment:\n  - VIRTUAL_HOST=a.test,b.test\nx-berth:\n  deployment_strategy: every-node\n  virtual_host: b.test, c.test\n  autorestart: off\n  colour: blue",
    ));
    let spec = &stack.services[0];
    assert_eq!((spec.mode, spec.strategy), (ServiceMode::EveryNode, Strategy::EveryNode));
    assert_eq!(spec.virtual_hosts, strings(&["a.test", "b.test", "c.test"]));
    assert_eq!(spec.restart.condition, RestartCondition::Never);
    assert_eq!(warnings(&stack), ["10:7: services.web.x-berth.colour is not supported by berth and is ignored"]);
}

#[test]
fn a_tutum_stackfile_is_the_services_mapping_itself() {
    let text = "lb:\n  image: tutum/haproxy\n  links: [web]\n  ports: [\"80:80\"]\n  deployment_strategy: every_node\nweb:\n  image: tutum/hello-world\n  target_num_containers: 2\n  environment:\n    VIRTUAL_HOST: hello.test\n";
    let stack = parse_ok(text);
    assert_eq!(stack.services.len(), 2);
    assert_eq!(stack.services[0].links, vec![ServiceLink { service: "shop_web".into(), alias: "web".into() }]);
    assert_eq!(stack.services[0].mode, ServiceMode::EveryNode);
    assert_eq!(stack.services[1].mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(stack.services[1].virtual_hosts, strings(&["hello.test"]));
}

#[test]
fn unsupported_keys_warn_with_their_path_and_extensions_are_silent() {
    let text = "version: \"3.9\"
name: shop
x-defaults: &defaults
  logging:
    driver: json-file
services:
  web:
    image: nginx
    build: .
    container_name: web
    networks: [front]
    x-notes: whatever
    deploy:
      endpoint_mode: dnsrr
networks:
  front:
configs:
  site:
    file: ./site.conf
";
    let stack = parse_ok(text);
    assert_eq!(
        warnings(&stack),
        [
            "9:5: services.web.build is not supported by berth and is ignored",
            "10:5: services.web.container_name is not supported by berth and is ignored",
            "11:5: services.web.networks is not supported by berth and is ignored",
            "14:7: services.web.deploy.endpoint_mode is not supported by berth and is ignored",
            "15:1: networks is not supported by berth and is ignored",
            "17:1: configs is not supported by berth and is ignored",
        ]
    );
    assert_eq!(
        stack.warnings[4].to_string(),
        "compose.yml:15:1: warning: networks is not supported by berth and is ignored"
    );
}

#[test]
fn interpolation_replaces_variables_in_every_value() {
    let stack = parse_ok(&web(
        "command: [\"echo\", \"$$HOME\", \"${NOT_SET:-fallback}\", \"${EMPTY-kept-empty}\", \"$TAG\"]\nlabels:\n  version: ${TAG}\n  missing: x${ALSO_NOT_SET}y",
    ));
    let spec = &stack.services[0];
    assert_eq!(spec.command, strings(&["echo", "$HOME", "fallback", "", "1.25"]));
    assert_eq!(spec.labels.get("version").map(String::as_str), Some("1.25"));
    assert_eq!(spec.labels.get("missing").map(String::as_str), Some("xy"));
    assert_eq!(
        warnings(&stack),
        ["7:16: services.web.labels.missing: the variable ALSO_NOT_SET is not set; using an empty string"]
    );
}

#[test]
fn interpolated_numbers_are_read_after_interpolation() {
    let text = "services:\n  web:\n    image: nginx:${TAG}\n    deploy:\n      replicas: ${REPLICAS:-2}\n";
    let spec = only_service(text);
    assert_eq!(spec.image, "nginx:1.25");
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 2 });
}

#[test]
fn anchors_and_merge_keys_share_settings_between_services() {
    let text = "x-service: &service
  image: app:1
  environment:
    MODE: prod
  deploy:
    replicas: 2
services:
  web:
    <<: *service
    command: web
  worker:
    <<: *service
    deploy:
      replicas: 5
";
    let stack = parse_ok(text);
    assert_eq!(stack.services[0].image, "app:1");
    assert_eq!(stack.services[0].mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(stack.services[1].env, env_vars(&[("MODE", "prod")]));
    assert_eq!(stack.services[1].mode, ServiceMode::Replicated { replicas: 5 });
}

#[test]
fn only_the_first_yaml_document_is_read() {
    let stack = parse_ok("services:\n  web:\n    image: nginx\n---\nservices:\n  api:\n    image: api\n");
    assert_eq!(stack.services.len(), 1);
    assert_eq!(warnings(&stack), ["4:1: only the first YAML document of the file is read"]);
}
