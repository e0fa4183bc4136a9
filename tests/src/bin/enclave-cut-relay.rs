//! Test stand-in for the enclave binary, for cutting the host's enclave socket mid-stream: it
//! starts the real `signer-enclave` (from the same directory, with the same arguments) on
//! `PATH.real`, listens itself on the `unix://PATH` the host gave, and relays each connection's
//! bytes both ways. On SIGUSR1 it closes every relayed connection at once, on both sides, as a
//! severed socket would, and keeps accepting new ones. The real enclave keeps running, so what a
//! cut costs is seen apart from a restart. Used only by the end-to-end tests.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use tokio::io::AsyncReadExt as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("enclave-cut-relay: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<ExitCode> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| i + 1)
        .filter(|&i| i < args.len())
        .ok_or_else(|| std::io::Error::other("no --listen"))?;
    let path = PathBuf::from(
        args[listen]
            .strip_prefix("unix://")
            .ok_or_else(|| std::io::Error::other("--listen is not unix://"))?,
    );
    let real = path.with_extension("real");
    args[listen] = format!("unix://{}", real.display());
    let binary = std::env::current_exe()?.with_file_name("signer-enclave");
    // The real enclave exits when this pipe closes: when this process ends, however it ends.
    let mut enclave = tokio::process::Command::new(binary)
        .args(&args)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let _lifeline = enclave.stdin.take();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let (cut, _) = watch::channel(0u64);
    let mut cuts = signal(SignalKind::user_defined1())?;
    // The host's pipe to this process: closed when the host goes.
    let mut parent = tokio::io::stdin();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            status = enclave.wait() => {
                let status = status?;
                eprintln!("enclave-cut-relay: the enclave exited: {status}");
                return Ok(ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)));
            }
            read = parent.read(&mut sink) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ = cuts.recv() => {
                cut.send_modify(|n| *n += 1);
                eprintln!("enclave-cut-relay: cut every connection");
            }
            accepted = listener.accept() => {
                let (client, _) = accepted?;
                tokio::spawn(relay(client, real.clone(), cut.subscribe()));
            }
        }
    }
}

/// Relays one connection until either side closes it or a cut.
async fn relay(mut client: UnixStream, real: impl AsRef<Path>, mut cut: watch::Receiver<u64>) {
    // Not listening yet (the enclave is starting): the host's connection is dropped and it
    // retries, as it would against a starting enclave.
    let Ok(mut upstream) = UnixStream::connect(real).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cut.changed() => {}
    }
}
