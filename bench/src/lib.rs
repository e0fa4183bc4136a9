//! Signing benchmarks: helpers shared by the load generator and the scale benchmark.
//!
//! `benches/micro.rs` measures per-operation costs with criterion; `loadgen` drives the real
//! binaries end to end against a baseline measured in the same run; `scale` measures loading
//! and memory at large key counts. Figures and commands: `bench/RESULTS.md`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use signer_client::Address;
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped qed"))
        .read_line(&mut line)
        .expect("read announcement");
    let address = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected announcement {line:?}"))
        .parse()
        .expect("announced address parses");
    Process { child, address }
}

/// Waits until the host's health service reports SERVING.
///
/// # Panics
/// After 120 s.
pub async fn wait_serving(address: &Address) {
    let channel = signer_proto::transport::dial(address, Default::default()).expect("address qed");
    let mut health = HealthClient::new(channel);
    let wait = async {
        loop {
            let Ok(stream) = health
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            else {
                tokio::task::yield_now().await;
                continue;
            };
            let mut stream = stream.into_inner();
            while let Some(Ok(update)) = stream.next().await {
                if update.status() == ServingStatus::Serving {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("stack became SERVING");
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

/// The first child process of `pid` (the host's enclave).
pub fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .next()
}
