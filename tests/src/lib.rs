//! Harness for end-to-end tests (and the benchmarks): runs `signer-host dev` (which runs
//! `signer-enclave` as its child) as real processes in a temporary directory, and kills them on
//! drop.
//!
//! The binaries are found beside the test executable's target directory; `scripts/test` builds
//! them first (`cargo build --workspace --bins`).

pub mod postgres;
pub mod relay;
pub mod wallet;

pub use relay::HostileRelay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use signer_client::attestation::{AttestationPolicy, TrustAnchor};
use signer_client::{
    Address, ApiKeyPair, ApiKeyScheme, Client, ClientConfig, KeyInfo, RetryPolicy, Stamper,
};
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a stack may take to become SERVING before a test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the workspace's built binaries, seen from a test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path qed");
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps qed")
        .to_owned();
    for name in ["signer-host", "signer-enclave"] {
        assert!(
            dir.join(name).exists(),
            "{name} is not built in {}: run `cargo build --workspace --bins` (scripts/test does)",
            dir.display()
        );
    }
    dir
}

/// Reads a child's first stdout line, `listening ADDRESS`: it binds before it prints, so the
/// address accepts connections once this returns.
///
/// # Panics
/// If the child closes stdout or announces something else.
pub fn read_announcement(child: &mut Child) -> Address {
    let stdout = child.stdout.take().expect("stdout is piped qed");
    announced(&mut BufReader::new(stdout), "listening ")
}

/// The address on the next line of `lines`, which must start with `prefix`.
fn announced(lines: &mut impl BufRead, prefix: &str) -> Address {
    let mut line = String::new();
    lines.read_line(&mut line).expect("child stdout readable");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected announcement {line:?}"))
        .parse()
        .expect("announced address parses")
}

/// Waits, through the health Watch stream (no polling), until the host at `address` reports
/// its API SERVING.
pub async fn wait_serving(address: &Address) {
    wait_serving_on(
        signer_proto::transport::dial(address, Default::default()).expect("valid address qed"),
    )
    .await;
}

/// [`wait_serving`] over a given channel (for TLS).
pub async fn wait_serving_on(channel: tonic::transport::Channel) {
    wait_status_on(channel, ServingStatus::Serving).await;
}

/// Waits until the API's health over `channel` reports `status` (NOT_SERVING, say).
pub async fn wait_status_on(channel: tonic::transport::Channel, status: ServingStatus) {
    let mut health = HealthClient::new(channel);
    loop {
        // The first attempt may race the server's accept loop on a slow machine.
        let request = HealthCheckRequest {
            service: "signer.v1.SignerService".into(),
        };
        let Ok(stream) = health.watch(request).await else {
            tokio::task::yield_now().await;
            continue;
        };
        let mut stream = stream.into_inner();
        while let Some(Ok(update)) = stream.next().await {
            if update.status() == status {
                return;
            }
        }
    }
}

/// Whether `(r, s)` is a valid ECDSA signature of `digest` by `key`, checked here with k256,
/// independently of the SDK's own verification.
pub fn ecdsa_verifies(key: &KeyInfo, digest: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> bool {
    use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
    let Ok(public) = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key_compressed) else {
        return false;
    };
    k256::ecdsa::Signature::from_scalars(*r, *s)
        .is_ok_and(|signature| public.verify_prehash(digest, &signature).is_ok())
}

/// The first child process of `pid` (a development host's enclave).
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

/// The KMS-API test server (`tests/kms-test-server`): moto's KMS with `Recipient` support and
/// key-policy attestation conditions. Killed on drop (it also exits when our pipe closes).
pub struct KmsServer {
    child: Child,
    /// Its endpoint URL.
    pub endpoint: String,
}

impl KmsServer {
    /// Starts the server; attestation documents must chain to the DER certificate at `root`
    /// (read on every request, so it may appear later).
    ///
    /// # Panics
    /// If the Python environment is missing: `scripts/test` installs it.
    pub fn start(root: &Path) -> KmsServer {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var_os("SIGNER_TEST_PYTHON")
            .map_or_else(|| workspace.join(".venv/bin/python"), PathBuf::from);
        assert!(
            python.exists(),
            "{} missing: run scripts/test, which installs the KMS test server's Python packages",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(workspace.join("tests/kms-test-server/kms_test_server.py"))
            .arg("--attestation-root")
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the KMS test server");
        let address = read_announcement(&mut child);
        let endpoint = match address {
            Address::Tcp(addr) => format!("http://{addr}"),
            other => panic!("unexpected KMS server address {other}"),
        };
        KmsServer { child, endpoint }
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start a stack beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// Use AWS KMS at this endpoint with this key ARN instead of the local provider; the host
    /// gets test credentials in its environment.
    pub kms: Option<(String, String)>,
    /// Run this enclave binary instead of the built one.
    pub enclave_binary: Option<PathBuf>,
    /// Serve TLS: certificate chain, key, and (for mutual TLS) the client CA, all PEM files.
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// Where `signer-host` and `signer-enclave` are (the benchmarks run release builds);
    /// `None` for the test build's.
    pub bin_dir: Option<PathBuf>,
    /// Further enclave options (`--nonce-quota-per-key=5`, …).
    pub enclave_args: Vec<String>,
    /// Keyring creators instead of the stack's admin key (empty: keyring creation disabled).
    pub keyring_creators: Option<Vec<String>>,
    /// Serve Prometheus metrics on a free loopback port ([`Stack::metrics`]).
    pub metrics: bool,
    /// The PCR0 (hex) the host expects its enclave to attest to, instead of the binary's.
    pub expected_pcr0: Option<String>,
    /// Log as JSON lines (`SIGNER_LOG_FORMAT=json`, which the enclave inherits).
    pub json_logs: bool,
    /// Keep keys in this PostgreSQL database instead of the data directory's SQLite file.
    pub store_url: Option<String>,
    /// Further `signer-host dev` options (`--idle-timeout-ms=900`, …).
    pub host_args: Vec<String>,
    /// Run the host through this command (its arguments, then the host's command line): a
    /// `unshare` that gives it its own mount namespace, say. It must `exec` the host, so the
    /// stack's process is the host.
    pub host_wrapper: Vec<String>,
}

/// A running host + enclave pair.
pub struct Stack {
    /// Temporary data directory (socket, master key, database, logs).
    pub dir: tempfile::TempDir,
    host: Child,
    /// The host's public address.
    pub address: Address,
    /// The enclave binary the stack runs (its SHA-384 is the development attestor's PCR0).
    pub enclave_binary: PathBuf,
    /// The deployment id its enclave serves.
    pub deployment_id: String,
    /// Where the host serves Prometheus metrics, if asked to ([`StackOptions::metrics`]).
    pub metrics: Option<std::net::SocketAddr>,
}

/// A second handle on the same API key.
pub fn copy(key: &ApiKeyPair) -> ApiKeyPair {
    ApiKeyPair::from_pem(&key.to_pem().expect("encodes qed")).expect("parses qed")
}

/// Copies a stack's data directory's regular files (local master key, development root,
/// deployment id, admin key, keyring marker, SQLite store) from `from` into `to`, so that a second
/// stack serves the same deployment; not the enclave's socket, nor the host's log.
pub fn copy_data_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read data dir qed") {
        let entry = entry.expect("dir entry qed");
        let is_file = entry.file_type().expect("file type qed").is_file();
        if is_file && entry.file_name() != "host.log" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy qed");
        }
    }
}

/// A stamper over copies of `keys`.
pub fn stamper(keys: &[&ApiKeyPair]) -> Stamper {
    Stamper::new(keys.iter().map(|k| copy(k)).collect())
}

/// The deployment id kept in `dir` (a fresh random one the first time).
fn deployment_id_in(dir: &Path) -> String {
    let path = dir.join("deployment-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return id;
    }
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("RNG qed");
    let id = format!("test-{}", hex::encode(bytes));
    std::fs::write(&path, &id).expect("write deployment id qed");
    id
}

/// The admin API key kept in `dir` (created the first time).
fn admin_key_in(dir: &Path) -> ApiKeyPair {
    let path = dir.join("admin-api-key.pem");
    if !path.exists() {
        ApiKeyPair::generate(ApiKeyScheme::Ed25519)
            .and_then(|k| k.save(&path))
            .expect("admin key qed");
    }
    ApiKeyPair::load(&path).expect("admin key qed")
}

impl Stack {
    /// Starts `signer-host dev` with the given backend and waits until it reports SERVING.
    pub async fn start(backend: &str) -> Stack {
        Self::start_in(tempfile::tempdir().expect("tempdir qed"), backend).await
    }

    /// Starts a stack over an existing data directory (to restart over the same store).
    pub async fn start_in(dir: tempfile::TempDir, backend: &str) -> Stack {
        let stack =
            tokio::task::block_in_place(|| Self::spawn(dir, backend, &StackOptions::default()));
        stack.wait_serving().await;
        stack
    }

    /// Starts a stack over an existing data directory with options, and waits until SERVING.
    pub async fn start_with(dir: tempfile::TempDir, options: &StackOptions) -> Stack {
        let stack = tokio::task::block_in_place(|| Self::spawn(dir, "k256", options));
        stack.wait_serving().await;
        stack
    }

    /// Starts a stack with options, without waiting for it to become SERVING. The stack's
    /// deployment id and admin API key live in its data directory, so a restart over the same
    /// directory keeps them; the admin key is the keyring creator unless `options` says
    /// otherwise.
    pub fn spawn(dir: tempfile::TempDir, backend: &str, options: &StackOptions) -> Stack {
        let bins = options.bin_dir.clone().unwrap_or_else(bin_dir);
        let deployment_id = deployment_id_in(dir.path());
        let creators = options
            .keyring_creators
            .clone()
            .unwrap_or_else(|| vec![admin_key_in(dir.path()).public_text()]);
        // Each start has its own log: what a test reads is this stack's.
        let log = std::fs::File::create(dir.path().join("host.log")).expect("log file qed");
        let enclave_binary = options
            .enclave_binary
            .clone()
            .unwrap_or_else(|| bins.join("signer-enclave"));
        let mut command = match options.host_wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bins.join("signer-host"));
                command
            }
            None => Command::new(bins.join("signer-host")),
        };
        let mut host = command
            .args([
                "dev",
                "--listen",
                "tcp://127.0.0.1:0",
                "--backend",
                backend,
                "--data-dir",
            ])
            .arg(dir.path())
            .arg("--enclave-binary")
            .arg(&enclave_binary)
            .args(["--deployment-id", &deployment_id])
            .args(
                creators
                    .iter()
                    .flat_map(|c| ["--keyring-creator", c.as_str()]),
            )
            .args(
                options
                    .enclave_args
                    .iter()
                    .map(|a| format!("--enclave-arg={a}")),
            )
            .args(options.kms.iter().flat_map(|(endpoint, key_arn)| {
                [
                    "--kms-endpoint",
                    endpoint.as_str(),
                    "--kms-key-arn",
                    key_arn.as_str(),
                ]
            }))
            .args(options.tls.iter().flat_map(|(cert, key, client_ca)| {
                let mut args = vec![
                    "--tls-cert".into(),
                    cert.clone().into_os_string(),
                    "--tls-key".into(),
                    key.clone().into_os_string(),
                ];
                if let Some(ca) = client_ca {
                    args.extend(["--tls-client-ca".into(), ca.clone().into_os_string()]);
                }
                args
            }))
            .args(
                options
                    .metrics
                    .then_some(["--metrics-listen", "tcp://127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(
                options
                    .expected_pcr0
                    .iter()
                    .flat_map(|pcr0| ["--expected-pcr0", pcr0.as_str()]),
            )
            .args(
                options
                    .store_url
                    .iter()
                    .flat_map(|url| ["--store-url", url.as_str()]),
            )
            .args(options.host_args.iter())
            .env(
                "SIGNER_LOG_FORMAT",
                if options.json_logs { "json" } else { "text" },
            )
            .env("AWS_ACCESS_KEY_ID", "test-access-key")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn signer-host");
        let stdout = host.stdout.take().expect("stdout is piped qed");
        let mut lines = BufReader::new(stdout);
        let address = announced(&mut lines, "listening ");
        let metrics = options
            .metrics
            .then(|| match announced(&mut lines, "metrics ") {
                Address::Tcp(address) => address,
                other => panic!("metrics announced at {other}"),
            });
        Stack {
            dir,
            host,
            address,
            enclave_binary,
            deployment_id,
            metrics,
        }
    }

    /// Waits until the host reports SERVING, or fails the test with the host's log.
    pub async fn wait_serving(&self) {
        tokio::time::timeout(READY_TIMEOUT, wait_serving(&self.address))
            .await
            .unwrap_or_else(|_| panic!("not SERVING in time; log:\n{}", self.log()));
    }

    /// A client stamping with this stack's admin API key (kept in the data directory), verifying
    /// the enclave against the development root and the enclave binary's PCR0, with a generous
    /// retry budget (restarts take a moment). The first call on a new stack creates its keyring
    /// (see [`Stack::keyring`]), administered by the admin key.
    pub async fn client(&self) -> Client {
        let client = self.client_with(Some(self.admin_stamper())).await;
        let marker = self.dir.path().join("keyring-id");
        if !marker.exists() {
            let keyring = client
                .create_keyring(vec![self.admin_key().public()], 1)
                .await
                .unwrap_or_else(|e| panic!("creating the keyring: {e}; log:\n{}", self.log()));
            std::fs::write(&marker, keyring).expect("write keyring id qed");
        }
        client
    }

    /// Runs `signer-cli` against this stack with its admin key; the JSON it printed, or its
    /// error. A blocking call: run it in `tokio::task::block_in_place`.
    ///
    /// # Panics
    /// If `signer-cli` is not built (`scripts/test` builds it) or prints no JSON.
    pub fn cli(&self, args: &[&str]) -> Result<serde_json::Value, serde_json::Value> {
        let binary = bin_dir().join("signer-cli");
        assert!(
            binary.exists(),
            "signer-cli is not built (scripts/test builds it)"
        );
        let pcr0 = {
            let binary = std::fs::read(&self.enclave_binary).expect("enclave binary");
            hex::encode(<sha2::Sha384 as sha2::Digest>::digest(&binary))
        };
        let dir = self.dir.path();
        let output = Command::new(binary)
            .arg(format!("--endpoint={}", self.address))
            .arg(format!("--deployment-id={}", self.deployment_id))
            .arg(format!(
                "--api-key={}",
                dir.join("admin-api-key.pem").display()
            ))
            .arg(format!("--dev-root={}", dir.join("dev-root.der").display()))
            .arg(format!("--allow-pcr0={pcr0}"))
            .args(args)
            .output()
            .expect("signer-cli runs");
        if output.status.success() {
            Ok(serde_json::from_slice(&output.stdout).expect("signer-cli prints JSON"))
        } else {
            Err(serde_json::from_slice(&output.stderr).expect("signer-cli prints JSON errors"))
        }
    }

    /// The keyring [`Stack::client`] created.
    ///
    /// # Panics
    /// Before the first [`Stack::client`].
    pub fn keyring(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyring-id"))
            .expect("Stack::client creates the keyring first")
    }

    /// A client stamping with `stamper` (or nothing), verifying the enclave as [`Stack::client`].
    pub async fn client_with(&self, stamper: Option<Stamper>) -> Client {
        self.client_at(self.address.clone(), stamper).await
    }

    /// A client of this stack's deployment and enclave that connects to `address` (a relay in
    /// the middle, say).
    pub async fn client_at(&self, address: Address, stamper: Option<Stamper>) -> Client {
        let mut config = ClientConfig::new(address, self.deployment_id.clone());
        config.retry = RetryPolicy {
            max_attempts: 40,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
        };
        config.stamper = stamper.map(std::sync::Arc::new);
        config.enclave = Some(self.attestation_policy());
        Client::connect(config).await.expect("valid address qed")
    }

    /// The development attestation policy for this stack's enclave.
    pub fn attestation_policy(&self) -> AttestationPolicy {
        let binary = std::fs::read(&self.enclave_binary).expect("enclave binary qed");
        let pcr0 = <sha2::Sha384 as sha2::Digest>::digest(&binary).to_vec();
        let root = std::fs::read(self.dir.path().join("dev-root.der")).expect("dev root qed");
        AttestationPolicy {
            root: TrustAnchor::development(root),
            allowed_pcrs: vec![std::collections::BTreeMap::from([(0, pcr0)])],
            expected_nonce: None,
            max_age: Duration::from_secs(300),
        }
    }

    /// This stack's admin API key (kept across restarts): the keyring creator, and admin of
    /// the keyring [`Stack::client`] creates.
    pub fn admin_key(&self) -> ApiKeyPair {
        admin_key_in(self.dir.path())
    }

    /// `keys`' stamps over `body` for this stack's deployment.
    pub fn stamped(&self, body: Vec<u8>, keys: &[&ApiKeyPair]) -> signer_client::pb::SignedRequest {
        signer_client::pb::SignedRequest {
            stamps: keys
                .iter()
                .map(|k| k.stamp(&self.deployment_id, &body))
                .collect(),
            body,
        }
    }

    /// A stamper over the admin key.
    pub fn admin_stamper(&self) -> Stamper {
        Stamper::new(vec![self.admin_key()])
    }

    /// A client of the enclave's own API, over the socket its host relays to (as a host, or a
    /// benchmark reading the enclave's status, talks to it).
    pub fn enclave_client(
        &self,
    ) -> signer_proto::pb::enclave_service_client::EnclaveServiceClient<tonic::transport::Channel>
    {
        let socket = Address::Unix(self.dir.path().join("enclave.sock"));
        signer_proto::pb::enclave_service_client::EnclaveServiceClient::new(
            signer_proto::transport::dial(&socket, signer_proto::transport::DialOptions::default())
                .expect("enclave socket address qed"),
        )
    }

    /// The host's (and its child enclave's) log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// Path of the SQLite key store.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("keys.sqlite3")
    }

    /// The host process's pid.
    pub fn host_pid(&self) -> u32 {
        self.host.id()
    }

    /// The pid of the host's child enclave.
    pub fn enclave_pid(&self) -> Option<u32> {
        child_of(self.host.id())
    }

    /// Kills the enclave process with SIGKILL (its RAM, and every key in it, is gone).
    pub fn kill_enclave(&self) -> u32 {
        self.signal_enclave("KILL")
    }

    /// Sends the enclave process `signal` (`KILL`, `STOP`, `CONT`); its pid.
    pub fn signal_enclave(&self, signal: &str) -> u32 {
        let pid = self.enclave_pid().expect("the host runs an enclave child");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success());
        pid
    }

    /// Stops the stack, returning its data directory for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.host.kill();
        let _ = self.host.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir qed"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The enclave exits when the host's pipe to it closes.
        let _ = self.host.kill();
        let _ = self.host.wait();
    }
}
