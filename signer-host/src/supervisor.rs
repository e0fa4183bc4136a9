//! Development mode: runs the enclave binary as a child process over a Unix socket and restarts
//! it when it exits, with exponential backoff. In production the enclave is started by
//! `nitro-cli run-enclave` and this module is unused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::{Notify, watch};

use crate::config::DevEnclave;
use crate::shutdown::stopped;
use signer_proto::transport::Address;

/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Starts the enclave and keeps it running until `shutdown` turns true. `restarted` is notified
/// after every start so the loader probes at once.
pub async fn supervise(
    dev: DevEnclave,
    address: Address,
    restarted: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_backoff = Duration::from_millis(dev.max_restart_backoff_ms);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let mut command = Command::new(&dev.binary);
        command
            .arg("--listen")
            .arg(address.to_string())
            .arg("--backend")
            .arg(&dev.backend);
        match &dev.kms {
            Some(kms) => {
                command.args(["--provider", "kms", "--kms-key-arn", &kms.key_arn]);
                if let Some(endpoint) = &kms.endpoint {
                    command.args(["--kms-endpoint", endpoint]);
                }
            }
            None => {
                command
                    .args([
                        "--provider",
                        "local",
                        "--create-master-key",
                        "--master-key-file",
                    ])
                    .arg(&dev.master_key_file);
            }
        }
        command.arg("--deployment-id").arg(&dev.deployment_id);
        if !dev.keyring_creators.is_empty() {
            command
                .arg("--keyring-creator")
                .arg(dev.keyring_creators.join(","));
        }
        command.args(&dev.extra_args);
        let spawned = command
            .arg("--attestor")
            .arg("dev")
            .arg("--dev-root-dir")
            .arg(&dev.dev_root_dir)
            .arg("--exit-with-parent")
            // The child exits when this pipe closes, so it never outlives the host.
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                // `wait` would close the child's stdin; hold the pipe for as long as we run.
                let _lifeline = child.stdin.take();
                tracing::info!(pid = child.id(), binary = %dev.binary.display(), "enclave started (dev mode)");
                restarted.notify_one();
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => tracing::warn!(%status, "enclave exited"),
                        Err(error) => tracing::warn!(%error, "lost track of the enclave process"),
                    },
                    () = stopped(&mut shutdown) => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, binary = %dev.binary.display(), "cannot start the enclave")
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(backoff_ms = backoff.as_millis(), "restarting the enclave");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}
