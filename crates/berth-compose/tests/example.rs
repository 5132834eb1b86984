//! The full example in `tests/fixtures/shop.yml` — a web front end behind a
//! virtual host, a worker with an env file and a secret, and a database with
//! a health check that both wait for — parses into exactly these specs.

use std::path::{Path, PathBuf};

use berth_compose::{parse_stack, Stack, StackSecret, StackSource};
use berth_core::{
    Dependency, DependencyCondition, EnvVar, HealthCheck, Resources, RestartCondition, RestartPolicy, SecretRef,
    ServiceLink, ServiceMode, ServiceSpec, Strategy, UpdateConfig, UpdateOrder, VolumeKind, VolumeMount,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn parse_fixture() -> Stack {
    let dir = fixtures();
    let text = std::fs::read_to_string(dir.join("shop.yml")).expect("fixture is readable");
    let read_file = |path: &Path| std::fs::read_to_string(path);
    parse_stack(&StackSource {
        stack: "shop",
        file_name: "shop.yml",
        text: &text,
        base_dir: &dir,
        env: &|_| None,
        read_file: &read_file,
    })
    .unwrap_or_else(|e| panic!("the example parses: {e}"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs.iter().map(|(name, value)| EnvVar { name: name.to_string(), value: value.to_string() }).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn base(short: &str, image: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(format!("shop_{short}"), image);
    spec.stack = "shop".into();
    spec
}

fn db_link() -> ServiceLink {
    ServiceLink { service: "shop_store".into(), alias: "db".into() }
}

fn store_healthy() -> Dependency {
    Dependency { service: "shop_store".into(), condition: DependencyCondition::Healthy }
}

fn db_password() -> SecretRef {
    SecretRef { name: "shop_db_password".into(), target: "db_password".into() }
}

fn expected_web() -> ServiceSpec {
    let mut web = base("web", "example/shop-web:1.4.2");
    web.command = strings(&["gunicorn", "--bind", "0.0.0.0:8000", "shop.wsgi"]);
    web.env = env(&[("DATABASE_URL", "postgres://shop@db:5432/shop"), ("LOG_LEVEL", "info")]);
    web.expose = vec![8000];
    web.links = vec![db_link()];
    web.depends_on = vec![store_healthy()];
    web.mode = ServiceMode::Replicated { replicas: 3 };
    web.strategy = Strategy::HighAvailability;
    web.update =
        UpdateConfig { parallelism: 1, delay_ms: 10_000, order: UpdateOrder::StartFirst, ..UpdateConfig::default() };
    web.resources = Resources { millicpus: 500, memory_bytes: 256 * 1024 * 1024 };
    web.virtual_hosts = strings(&["shop.example.com", "www.shop.example.com"]);
    web
}

fn expected_worker() -> ServiceSpec {
    let mut worker = base("worker", "example/shop-worker:1.4.2");
    worker.command = strings(&["python", "-m", "shop.worker", "--queue", "default"]);
    worker.env = env(&[("QUEUE_CONCURRENCY", "4"), ("LOG_LEVEL", "info")]);
    worker.links = vec![db_link()];
    worker.depends_on = vec![store_healthy()];
    worker.secrets = vec![db_password()];
    worker.mode = ServiceMode::Replicated { replicas: 2 };
    worker.restart = RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 5 };
    worker
}

fn expected_store() -> ServiceSpec {
    let mut store = base("store", "postgres:16");
    store.env = env(&[("POSTGRES_DB", "shop"), ("POSTGRES_PASSWORD_FILE", "/run/secrets/db_password")]);
    store.volumes = vec![VolumeMount {
        kind: VolumeKind::Named,
        source: "shop_store-data".into(),
        target: "/var/lib/postgresql/data".into(),
        read_only: false,
    }];
    store.secrets = vec![db_password()];
    store.health = Some(HealthCheck {
        command: "pg_isready -U postgres".into(),
        interval_ms: 10_000,
        timeout_ms: 5_000,
        retries: 5,
        start_period_ms: 30_000,
    });
    store.tags = strings(&["disk:ssd"]);
    store
}

#[test]
fn the_shop_example_parses_into_the_expected_specs() {
    let stack = parse_fixture();
    assert_eq!(stack.services, vec![expected_web(), expected_worker(), expected_store()]);
    assert_eq!(stack.volumes, strings(&["shop_store-data"]));
    assert_eq!(
        stack.secrets,
        vec![StackSecret {
            name: "shop_db_password".into(),
            file: Some(fixtures().join("secrets/db_password.txt")),
            external: false,
        }]
    );
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
}

#[test]
fn every_spec_of_the_example_is_valid() {
    for spec in parse_fixture().services {
        assert_eq!(spec.validate(), Ok(()), "{}", spec.name);
    }
}
