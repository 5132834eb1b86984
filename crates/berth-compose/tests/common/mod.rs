//! What the integration tests share: a stack source over fixed variables and
//! in-memory env files, so every test reads one small file and nothing else.

#![allow(dead_code)]

use std::path::Path;

use berth_compose::{parse_stack, ComposeError, Stack, StackSource};
use berth_core::ServiceSpec;

pub const BASE_DIR: &str = "/srv/shop";

pub fn env(name: &str) -> Option<String> {
    let value = match name {
        "TAG" => "1.25",
        "HOME" => "/home/ada",
        "DB_PASSWORD" => "s3cret",
        "EMPTY" => "",
        "VIRTUAL_HOST" => "from-caller.test",
        _ => return None,
    };
    Some(value.to_string())
}

pub fn read_file(path: &Path) -> std::io::Result<String> {
    let text = match path.to_str() {
        Some("/srv/shop/app.env") => "# the app\nDB_HOST=db\nDB_PORT=5432\nLOG_LEVEL=info\n",
        Some("/srv/shop/common/extra.env") => "EXTRA=1\nLOG_LEVEL=debug\n",
        Some("/srv/shop/broken.env") => "GOOD=1\nBAD LINE\n",
        _ => return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")),
    };
    Ok(text.to_string())
}

pub fn parse(text: &str) -> Result<Stack, ComposeError> {
    parse_stack(&StackSource {
        stack: "shop",
        file_name: "compose.yml",
        text,
        base_dir: Path::new(BASE_DIR),
        env: &env,
        read_file: &read_file,
    })
}

pub fn parse_ok(text: &str) -> Stack {
    match parse(text) {
        Ok(stack) => stack,
        Err(e) => panic!("expected the file to parse, got: {e}\n{text}"),
    }
}

/// The error's `line:column: message`, for exact assertions.
pub fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(stack) => panic!("expected an error, got {stack:#?}"),
        Err(e) => format!("{}:{}: {}", e.line, e.column, e.message),
    }
}

/// The one service of a one-service file.
pub fn only_service(text: &str) -> ServiceSpec {
    let mut stack = parse_ok(text);
    assert_eq!(stack.services.len(), 1, "{:?}", stack.services);
    stack.services.remove(0)
}

/// Each warning as `line:column: message`.
pub fn warnings(stack: &Stack) -> Vec<String> {
    stack.warnings.iter().map(|w| format!("{}:{}: {}", w.line, w.column, w.message)).collect()
}

/// A one-service file with `body` indented under `services.web`.
pub fn web(body: &str) -> String {
    let mut text = String::from("services:\n  web:\n    image: nginx\n");
    for line in body.lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}
