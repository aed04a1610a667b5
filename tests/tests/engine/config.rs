//! Configuration of the real binary: a config file with a key Courier does
//! not know stops `courier serve` at once with an error that names the key
//! and the file, instead of running with a silently ignored setting; and
//! `COURIER_PERFMAP` makes it write a perf map of its compiled plugins.

use std::time::{Duration, Instant, SystemTime};

use courier_tests::{CourierProcess, courier_binary, install_plugin};

/// Runs `courier serve` with `args` and returns (exit code, stderr); fails
/// if it is still running after `timeout` (it started serving).
fn serve_must_exit(args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(courier_binary())
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--plugins-dir")
        .arg(dir.path().join("plugins"))
        .env_remove("COURIER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning courier serve");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("courier serve {args:?} kept running instead of refusing its configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn unknown_config_keys_stop_the_binary_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("typo.toml", "[storage]\nfsink = \"always\"\n", "fsink"),
        (
            "section.toml",
            "[sever]\nlisten = \"127.0.0.1:0\"\n",
            "sever",
        ),
        ("server.toml", "[server]\nmax_body = 10\n", "max_body"),
        (
            "value.toml",
            "[storage]\nfsync = \"sometimes\"\n",
            "storage.fsync",
        ),
    ];
    for (name, text, key) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("config file");
        let (code, stderr) = serve_must_exit(
            &["--config", path.to_str().expect("utf-8 path")],
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(1), "{name}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains("error:") && stderr.contains(key),
            "{name}: stderr should name {key:?}: {stderr}"
        );
        if key != "storage.fsync" {
            assert!(
                stderr.contains(name),
                "{name}: stderr should name the file: {stderr}"
            );
        }
    }
    let (code, stderr) = serve_must_exit(
        &["--config", "/no/such/courier.toml"],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "missing file; stderr: {stderr}");
    assert!(stderr.contains("/no/such/courier.toml"), "{stderr}");
}

/// The perf map of the engine process `pid`, if it wrote one since
/// `started` (an older file is another process's whose pid was reused).
fn perf_map(pid: u32, started: SystemTime) -> Option<String> {
    let path = format!("/tmp/perf-{pid}.map");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    (modified >= started)
        .then(|| std::fs::read_to_string(&path).ok())
        .flatten()
}

#[tokio::test]
async fn perfmap_names_the_compiled_plugin_functions_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    install_plugin(&plugins, "fixture-ack", "ack", None);
    let mut maps = Vec::new();
    for (name, envs) in [
        ("plain", &[][..]),
        ("profiled", &[("COURIER_PERFMAP", "1")][..]),
    ] {
        // File times may be coarser than the clock: start a second early.
        let started = SystemTime::now() - Duration::from_secs(1);
        let mut engine = CourierProcess::spawn_with_env(
            &dir.path().join(name),
            &plugins,
            &[],
            envs,
            &dir.path().join(format!("{name}.log")),
        );
        // Ready = the boot plugins are loaded (boot is the first reload).
        engine.wait_ready(Duration::from_secs(30)).await;
        let pid = engine.pid().expect("running");
        maps.push(perf_map(pid, started));
        engine.kill();
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
    assert_eq!(maps[0], None, "a perf map without COURIER_PERFMAP");
    let profiled = maps[1]
        .as_deref()
        .expect("no perf map with COURIER_PERFMAP=1");
    assert!(
        profiled.lines().any(|line| line.contains("wasm[0]::")),
        "the perf map names no Wasm function:\n{}",
        profiled.chars().take(2000).collect::<String>()
    );
}
