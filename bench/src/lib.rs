//! Signing benchmarks: helpers shared by the load generator and the scale benchmark.
//!
//! `benches/micro.rs` measures per-operation costs with criterion; `loadgen` drives the real
//! binaries end to end against a baseline measured in the same run; `scale` measures loading
//! and memory at large key counts. Figures and commands: `bench/RESULTS.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use signer_client::Address;

mod closed;
pub use closed::{Run, closed_loop, interleaved, median};

/// A child process killed on drop.
#[derive(Debug)]
pub struct Process {
    /// The child.
    pub child: Child,
    /// What it announced on its first stdout line (`listening ADDRESS`).
    pub address: Address,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The order in which round `round` measures `systems` rows: each round starts with the next
/// one, so none always runs first or last (on this shared machine a fixed order measured the
/// same build 5.6 % faster in the last position; bench/RESULTS.md).
pub fn rotation(systems: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..systems).map(move |i| (i + round) % systems)
}

/// The directory of the binary running now (`target/release` when run through cargo).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .expect("own executable path qed")
}

/// Spawns `command`, reads its `listening ADDRESS` line, and returns it running.
///
/// # Panics
/// If the process does not start or announces something else.
pub fn spawn_announcing(mut command: Command) -> Process {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn benchmark process");
    let address = tests::read_announcement(&mut child);
    Process { child, address }
}

/// Waits until the host's health service reports SERVING.
///
/// # Panics
/// After 120 s.
pub async fn wait_serving(address: &Address) {
    tokio::time::timeout(Duration::from_secs(120), tests::wait_serving(address))
        .await
        .expect("stack became SERVING");
}

/// A local stack of this build's release binaries (k256 backend, defaults otherwise), SERVING.
///
/// # Panics
/// As [`tests::Stack::spawn`] and [`wait_serving`].
pub async fn stack() -> tests::Stack {
    let options = tests::StackOptions {
        bin_dir: Some(bin_dir()),
        ..tests::StackOptions::default()
    };
    let stack = tests::Stack::spawn(tempfile::tempdir().expect("tempdir"), "k256", &options);
    wait_serving(&stack.address).await;
    stack
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Resident memory of a process in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
