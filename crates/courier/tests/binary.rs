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
        version.contains(env!("CARGO_PKG_VERSION")) && version.contains(", built 20"),
        "--version printed {version:?}"
    );
    let completions = courier(&["completions", "bash"]);
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("courier"));
}

#[test]
fn an_unknown_command_fails_with_usage() {
    let output = courier(&["frobnicate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("frobnicate"), "stderr: {stderr}");
}

#[test]
fn a_client_command_whose_output_is_cut_short_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;

    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["generate-orders", "--count", "1000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the courier binary runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("one line");
    assert!(line.contains("order_id"), "{line}");
    drop(stdout); // what `| head -1` does
    let output = child.wait_with_output().expect("it ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc_sigpipe()),
        "ended with {:?}: {stderr}",
        output.status
    );
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn a_server_without_a_scheme_is_http_and_an_absent_one_says_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port")
        .port();
    let output = courier(&["status", "--server", &format!("127.0.0.1:{port}")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("scheme"), "stderr: {stderr}");
    assert!(
        stderr.contains("is `courier serve` running there?") && stderr.contains("--server"),
        "stderr: {stderr}"
    );
}

#[test]
fn serving_a_public_address_without_a_token_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let plugins = dir.path().join("plugins");
    let output = courier(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--plugins-dir",
        plugins.to_str().expect("utf-8 path"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a token")
            && stderr.contains("--insecure"),
        "stderr: {stderr}"
    );
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::Read;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--plugins-dir")
        .arg(dir.path().join("plugins"))
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the courier binary runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("courier is running") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the engine never said it runs: {}",
            String::from_utf8_lossy(&seen)
        );
        match stdout.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
            Err(error) => panic!("reading the engine's logs: {error}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let logs = String::from_utf8_lossy(&seen);
    assert!(logs.contains("courier is running"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in piped logs: {logs:?}"
    );
    // The plugins directory given did not exist: said, not silently made.
    assert!(
        logs.contains("the plugins directory does not exist"),
        "{logs}"
    );
}

#[test]
fn a_taken_port_is_said_once_with_its_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--plugins-dir")
        .arg(dir.path().join("plugins"))
        .output()
        .expect("the courier binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains("cannot listen on"), "{line}");
    assert_eq!(
        line.matches("in use").count(),
        1,
        "the cause is said once: {line}"
    );
}
