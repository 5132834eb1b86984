//! Whatever the text, `parse_stack` returns `Ok` or `Err` and never panics;
//! an `Ok` stack holds only specs that pass `ServiceSpec::validate`, and an
//! error points inside the file. Inputs are random text, random edits of the
//! example file, and random services assembled from valid and invalid keys.
//! proptest prints the failing input (and records its seed) on failure.

mod common;

use proptest::prelude::*;

use common::parse;

const SHOP: &str = include_str!("fixtures/shop.yml");

/// Service-level fragments, good and bad, for assembling services.
const FRAGMENTS: &[&str] = &[
    "image: nginx:${TAG}",
    "image: [oops]",
    "image: \"bad image\"",
    "command: sh -c 'echo \"hi\"'",
    "command: 'unclosed",
    "entrypoint: [\"/init\", 3, true]",
    "environment: [A=1, B, DB_PASSWORD, \"=x\"]",
    "environment:\n  A: ${NOPE:?required}\n  B:",
    "environment:\n  VIRTUAL_HOST: a.test,,b.test",
    "env_file: [app.env, {path: missing.env, required: false}, broken.env]",
    "env_file: ~/nothing.env",
    "ports: [\"8080:80\", \"80\", \"127.0.0.1::81\", \"1-300:1-300\", \"65535:65535/udp\", 0]",
    "ports:\n  - target: 80\n    published: 8080-8081\n  - {published: 9}\n  - {target: x}",
    "expose: [\"80/udp\", 3000-3002, 70000]",
    "labels: [a=b, c]",
    "labels: {a: [1]}",
    "healthcheck:\n  test: [CMD]\n  interval: 0s",
    "healthcheck:\n  test: [CMD-SHELL, exit 0]\n  retries: 0\n  timeout: 1ns",
    "healthcheck: {test: [], disable: maybe}",
    "links: [api, \"api:x\", nope, \":\"]",
    "depends_on: {api: {condition: service_healthy}, web: null}",
    "depends_on: [web]",
    "volumes: [data:/data, \"./x:/x:ro,z\", \"a:b:c:d\", \"/only\", \"data:relative\"]",
    "volumes:\n  - type: bind\n    target: /t\n  - {type: volume, source: undeclared, target: /u}",
    "secrets: [token, {source: token, target: ../../etc/passwd}, {target: x}]",
    "deploy:\n  replicas: 10001",
    "deploy:\n  mode: global\n  replicas: 2",
    "deploy:\n  mode: replicated-job",
    "deploy:\n  placement: {constraints: [\"node.labels.a==b\", \"node.labels.==\", 3]}",
    "deploy:\n  resources: {limits: {cpus: '1e300', memory: 1P}, reservations: {memory: 1k}}",
    "deploy:\n  restart_policy: {condition: on-failure, max_attempts: 99999999999}",
    "deploy:\n  update_config: {parallelism: x, delay: 1h1h, order: sideways, max_failure_ratio: NaN}",
    "deploy:\n  rollback_config: {monitor: 1.5.5s, failure_action: rollback}",
    "restart: on-failure:x",
    "target_num_containers: 3",
    "deployment_strategy: every-node",
    "tags: [a, \"b c\", '']",
    "autorestart: SOMETIMES",
    "autodestroy: on_success",
    "sequential_deployment: 2",
    "x-berth:\n  virtual_host: [a.test, {b: c}]\n  autoredeploy: true",
    "x-berth: 5",
    "networks: [front]",
    "<<: {image: merged}",
    "<<: [1, 2]",
    "&anchor build: .",
];

fn assert_sound(text: &str) {
    match parse(text) {
        Ok(stack) => {
            for spec in &stack.services {
                assert_eq!(spec.validate(), Ok(()), "an accepted spec is valid: {spec:?}\n--- input ---\n{text}");
            }
        }
        Err(error) => {
            let lines = text.lines().count() + 1;
            assert!(error.line <= lines, "error {error} points past the end ({lines} lines)\n--- input ---\n{text}");
        }
    }
}

/// A file of two services built from fragments, with top-level declarations.
fn assembled(web: &[usize], api: &[usize], declarations: bool) -> String {
    let mut text = String::from("services:\n");
    for (name, picks) in [("web", web), ("api", api)] {
        text.push_str(&format!("  {name}:\n    image: app\n"));
        for &pick in picks {
            for line in FRAGMENTS[pick % FRAGMENTS.len()].lines() {
                text.push_str(&format!("    {line}\n"));
            }
        }
    }
    if declarations {
        text.push_str("volumes:\n  data:\nsecrets:\n  token:\n    file: ./token\n");
    }
    text
}

/// An edit of a text: delete a span, insert a token, or duplicate a line.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: &'static str },
    DuplicateLine { at: usize },
}

const TOKENS: &[&str] = &[
    ":", "- ", "  ", "\n", "\t", "[", "]", "{", "}", "\"", "'", "$", "${", "$$", "#", "&a ", "*a", "<<: ", "!!str ",
    "|", "~", "é", "\u{0}",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(at, token)| Edit::Insert { at, token }),
        any::<usize>().prop_map(|at| Edit::DuplicateLine { at }),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
    let boundary = |at: usize| boundaries[at % boundaries.len()];
    match edit {
        Edit::Delete { at, len } => {
            let start = boundary(*at);
            let end = boundaries.iter().copied().filter(|b| *b >= start).nth(*len).unwrap_or(text.len());
            format!("{}{}", &text[..start], &text[end..])
        }
        Edit::Insert { at, token } => {
            let at = boundary(*at);
            format!("{}{token}{}", &text[..at], &text[at..])
        }
        Edit::DuplicateLine { at } => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = at % lines.len();
                lines.insert(i, lines[i]);
            }
            lines.join("\n")
        }
    }
}

/// 1,000 cases a run; `PROPTEST_CASES` asks for more.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_text_never_panics(text in "[a-z0-9 :\\-\\[\\]{}\"'$#&*!|>,.~%@\n\t]{0,300}") {
        assert_sound(&text);
    }

    #[test]
    fn edits_of_the_example_never_panic(edits in prop::collection::vec(edit(), 1..8)) {
        let text = edits.iter().fold(SHOP.to_string(), |text, e| apply(&text, e));
        assert_sound(&text);
    }

    #[test]
    fn assembled_services_never_panic(
        web in prop::collection::vec(any::<usize>(), 0..6),
        api in prop::collection::vec(any::<usize>(), 0..6),
        declarations in any::<bool>(),
    ) {
        assert_sound(&assembled(&web, &api, declarations));
    }
}

#[test]
fn every_fragment_alone_gives_ok_or_err() {
    for i in 0..FRAGMENTS.len() {
        assert_sound(&assembled(&[i], &[], true));
        assert_sound(&assembled(&[i], &[i], false));
    }
}

#[test]
fn hostile_shapes_are_refused_without_running_out_of_stack() {
    let deep_flow = "[".repeat(100_000);
    let deep_block = "- ".repeat(100_000);
    let deep_map = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect::<String>();
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
    let nested_defaults =
        format!("services:\n  web:\n    image: \"{}x{}\"\n", "${A:-".repeat(1_000), "}".repeat(1_000));
    for text in [deep_flow, deep_block, deep_map, bomb.to_string(), nested_defaults, "\u{feff}".into(), "\0".into()] {
        assert!(parse(&text).is_err(), "{}", &text[..text.len().min(80)]);
    }
}
