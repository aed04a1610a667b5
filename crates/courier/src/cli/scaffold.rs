//! `courier plugin new NAME`: writes a buildable Rust plugin (like `spin
//! new`): a crate with the SDK, a handler that counts what it sees, its
//! manifest, and how to build and deploy it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin crate, ready to build for wasm32-wasip2.
    New {
        /// The plugin's name: its file name (`NAME.wasm`), its state
        /// namespace and, by default, the topic it consumes.
        name: String,
        /// Where to create its directory (`DIR/NAME`).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The Courier plugin SDK (`plugins/sdk` of a Courier checkout);
        /// found next to this binary's sources when left out.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Where this binary's sources put the SDK.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");

pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    let PluginCommand::New { name, dir, sdk } = command;
    check_name(&name)?;
    let sdk = match sdk {
        Some(sdk) => sdk,
        None => PathBuf::from(BUILT_SDK),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the plugin SDK is not at {}: give a Courier checkout's plugins/sdk with --sdk",
            sdk.display()
        )
    })?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} holds no Cargo.toml: is it plugins/sdk?", sdk.display());
    }
    let root = dir.join(&name);
    if root.exists() {
        bail!("{} exists already: nothing written", root.display());
    }
    write(&root.join("Cargo.toml"), &cargo_toml(&name, &sdk))?;
    write(&root.join("src/lib.rs"), &lib_rs(&name))?;
    write(&root.join(format!("{name}.toml")), &manifest(&name))?;
    write(&root.join("README.md"), &readme(&name))?;
    println!("created plugin {name} in {}", root.display());
    println!(
        "build it: cd {} && cargo build --release --target wasm32-wasip2",
        root.display()
    );
    Ok(())
}

/// Plugin names become file, crate and namespace names: keep them plain.
fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !plain {
        bail!(
            "plugin name {name:?}: use 1 to 64 characters from a-z 0-9 _, starting with a letter"
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a component: a cdylib built for wasm32-wasip2.
[lib]
crate-type = ["cdylib"]

[dependencies]
courier-plugin = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# Its own workspace, whatever directory it sits in.
[workspace]

# Small, fast components; a panic is a trap (a failed attempt) anyway.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#,
        sdk = sdk.display()
    )
}

fn lib_rs(name: &str) -> String {
    format!(
        r#"//! {name}: a Courier plugin. It counts the messages it handles, and
//! the ones of each key, in its state.

use courier_plugin::{{Error, Message, Outcome, Plugin, log, state}};

struct Handler;

impl Plugin for Handler {{
    fn handle(message: Message) -> Result<Outcome, Error> {{
        // Staged: committed with the acknowledgement below, or not at all.
        let seen = state::increment("seen", 1)?;
        if let Some(key) = message.key_str() {{
            state::increment(&format!("seen/{{key}}"), 1)?;
        }}
        log::debug!("message {{}} of {{}}: number {{seen}}", message.offset, message.topic);
        // A message that can never succeed: `return Err(Error::permanent(why))`.
        // Any other error (`?`) retries, then dead-letters.
        Ok(Outcome::ack())
    }}
}}

courier_plugin::export!(Handler);
"#
    )
}

fn manifest(name: &str) -> String {
    format!(
        r#"# {name}'s manifest: deploy it beside {name}.wasm.

[[subscriptions]]
topic = "{name}"

[delivery]
mode = "ordered"      # or "unordered" (with concurrency = N)
max_attempts = 5

[limits]
memory_mib = 64
deadline_ms = 5000

[capabilities]        # everything is denied unless granted here
publish = []

[logging]
level = "info"
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A Courier plugin. Build it (once: `rustup target add wasm32-wasip2`):

```sh
cargo build --release --target wasm32-wasip2
```

Deploy it by copying the component and its manifest into the engine's
plugins directory; the engine loads it while it runs:

```sh
cp target/wasm32-wasip2/release/{name}.wasm {name}.toml /path/to/plugins/
courier publish {name} <<< '{{"hello": "world"}}'
courier state list {name}
```
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_stay_plain() {
        for good in ["hello", "order_audit", "v2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hello", "2fast", "a-b", "../x", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
