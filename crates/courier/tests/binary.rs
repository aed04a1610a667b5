//! The `courier` binary itself: it starts, names its commands and refuses
//! what it cannot parse. (The end-to-end tests in `tests/` run this same
//! binary against real engines; that cargo builds it for them is a side
//! effect of this file being an integration test of its package.)

use std::process::Command;

fn courier(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(args)
        .output()
        .expect("the courier binary runs")
}

#[test]
fn help_names_every_command() {
    let output = courier(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "serve",
        "publish",
        "status",
        "dead-letters",
        "seek",
        "generate-orders",
        "bench",
    ] {
        assert!(help.contains(command), "--help lacks {command}:\n{help}");
    }
}

#[test]
fn version_names_the_package_version() {
    let output = courier(&["--version"]);
    assert!(output.status.success());
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {version:?}"
    );
}

#[test]
fn an_unknown_command_fails_with_usage() {
    let output = courier(&["frobnicate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("frobnicate"), "stderr: {stderr}");
}
