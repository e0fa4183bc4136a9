//! A throw-away PostgreSQL cluster for one test: `initdb` in a temporary directory, a free
//! loopback port, trust authentication for one role, stopped (immediately) when dropped.
//!
//! PostgreSQL comes from Debian's packages (`scripts/test` installs them); the binaries are
//! found under `/usr/lib/postgresql/<version>/bin`, or in `SIGNER_TEST_PG_BIN`. PostgreSQL
//! refuses to run as root: as root, the cluster runs as the `postgres` user the package creates.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A running cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
}

/// Where the PostgreSQL binaries are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIGNER_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (scripts/test installs Debian's `postgresql`)")
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

impl Postgres {
    /// Creates and starts a cluster.
    ///
    /// # Panics
    /// If PostgreSQL is missing or does not start (with its log).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir qed");
        let as_postgres = running_as_root();
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let mut cluster = Postgres {
            dir,
            bin,
            as_postgres,
            port: 0,
        };
        cluster.run_pg(&[
            "initdb",
            "--no-sync",
            "--auth=trust",
            "--username=signer",
            "--encoding=UTF8",
            "-D",
        ]);
        // A port that was free a moment ago can be taken before the server binds it: retry.
        for _ in 0..5 {
            cluster.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='{}' -c max_connections=200",
                cluster.port,
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("server.log");
            let started = cluster
                .pg_command("pg_ctl")
                .arg("-D")
                .arg(cluster.data())
                .args(["-o", &options, "-l"])
                .arg(&log)
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null())
                .status()
                .expect("pg_ctl runs");
            if started.success() {
                return cluster;
            }
        }
        panic!(
            "PostgreSQL did not start; log:\n{}",
            std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// A new, empty database of this cluster; its URL.
    pub fn database(&self, name: &str) -> String {
        let status = self
            .client("createdb")
            .arg(name)
            .status()
            .expect("createdb runs");
        assert!(status.success(), "createdb {name}");
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://signer@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `psql -c sql` against database `name`; its output (unaligned, tuples only).
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let output = self
            .client("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                name,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("psql prints UTF-8")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// A client tool (`createdb`, `psql`) aimed at this cluster as its one role.
    fn client(&self, tool: &str) -> Command {
        let mut command = self.pg_command(tool);
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "signer",
        ]);
        command
    }

    fn run_pg(&self, args: &[&str]) {
        let (tool, rest) = args.split_first().expect("a tool qed");
        let status = self
            .pg_command(tool)
            .args(rest)
            .arg(self.data())
            .stdout(Stdio::null())
            .status()
            .expect("PostgreSQL tool runs");
        assert!(status.success(), "{tool} failed");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port qed")
        .port()
}

fn run(command: &mut Command) {
    let status = command.status().expect("command runs");
    assert!(status.success(), "{command:?} failed");
}
