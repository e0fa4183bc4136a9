//! A throw-away PostgreSQL cluster for one test: `initdb` in a temporary directory (or on a small
//! volume of its own, to be filled), a free loopback port, trust authentication for one role,
//! stopped (immediately) when dropped.
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
    /// For a cluster on its own volume: the postmaster's pid (its mount namespace holds the
    /// volume).
    postmaster: Option<u32>,
}

/// Inside the volume's mount namespace, as PostgreSQL's user: `initdb` on the volume (`$0`),
/// then start the server (binaries in `$1`, server options `$2`, log file `$3`) and print the
/// postmaster's pid. WAL segments of 1 MiB keep the cluster small.
const ON_VOLUME: &str = r#""$1/initdb" --no-sync --auth=trust --username=signer --encoding=UTF8 \
  --wal-segsize=1 -D "$0/data" > /dev/null \
  && "$1/pg_ctl" -D "$0/data" -o "$2" -l "$3" -w -t 60 start > /dev/null \
  && head -n 1 "$0/data/postmaster.pid""#;

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
    id("-u") == "0"
}

/// `id FLAG`: this process's user or group id.
fn id(flag: &str) -> String {
    Command::new("id")
        .arg(flag)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Postgres {
    /// Creates and starts a cluster.
    ///
    /// # Panics
    /// If PostgreSQL is missing or does not start (with its log).
    pub fn start() -> Postgres {
        let cluster = Postgres::unstarted();
        cluster.run_pg(&[
            "initdb",
            "--no-sync",
            "--auth=trust",
            "--username=signer",
            "--encoding=UTF8",
            "-D",
        ]);
        cluster.on_a_free_port(|cluster| {
            cluster
                .pg_command("pg_ctl")
                .arg("-D")
                .arg(cluster.data())
                .args(["-o", &cluster.options(), "-l"])
                .arg(cluster.log())
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null())
                .status()
                .expect("pg_ctl runs")
                .success()
        })
    }

    /// Creates and starts a cluster whose data directory is alone on a tmpfs of `bytes`, mounted
    /// in a mount namespace of its own (`unshare`; without root, inside a user namespace, where
    /// PostgreSQL runs as a mapped unprivileged user). [`Postgres::volume`] reaches it.
    ///
    /// # Panics
    /// If PostgreSQL is missing or does not start (with its log).
    pub fn start_on_volume(bytes: u64) -> Postgres {
        let cluster = Postgres::unstarted();
        let mount = cluster.dir.path().join("volume");
        std::fs::create_dir(&mount).expect("volume mount point qed");
        let mount_it = format!("mount -t tmpfs -o size={bytes} signer-pg \"$0\"");
        let (unshare, script): (&[&str], String) = if cluster.as_postgres {
            let script = format!(
                "{mount_it} && chown postgres:postgres \"$0\" \
                 && exec runuser -u postgres -- sh -c \"$4\" \"$0\" \"$1\" \"$2\" \"$3\""
            );
            (&["--mount", "--propagation", "private"], script)
        } else {
            // Root in a first user namespace mounts; a second one maps this user back, as
            // PostgreSQL refuses to run as root.
            let script = format!(
                "{mount_it} && exec unshare --user --map-user={} --map-group={} \
                 sh -c \"$4\" \"$0\" \"$1\" \"$2\" \"$3\"",
                id("-u"),
                id("-g")
            );
            (&["--user", "--map-root-user", "--mount"], script)
        };
        cluster.on_a_free_port(|cluster| {
            let output = Command::new("unshare")
                .args(unshare)
                .args(["sh", "-c", &script])
                .arg(&mount)
                .arg(&cluster.bin)
                .args([cluster.options(), cluster.log().display().to_string()])
                .arg(ON_VOLUME)
                .stderr(Stdio::inherit())
                .output()
                .expect("unshare runs");
            cluster.postmaster = String::from_utf8_lossy(&output.stdout).trim().parse().ok();
            output.status.success() && cluster.postmaster.is_some()
        })
    }

    /// A cluster not yet made: its directory (PostgreSQL's user's, as root) and binaries.
    fn unstarted() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir qed");
        let as_postgres = running_as_root();
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        Postgres {
            dir,
            bin: bin_dir(),
            as_postgres,
            port: 0,
            postmaster: None,
        }
    }

    /// Runs `start` on a free port until it succeeds: a port that was free a moment ago can be
    /// taken before the server binds it.
    ///
    /// # Panics
    /// After five failures, with the server's log.
    fn on_a_free_port(mut self, start: impl Fn(&mut Postgres) -> bool) -> Postgres {
        for _ in 0..5 {
            self.port = free_port();
            if start(&mut self) {
                return self;
            }
        }
        panic!(
            "PostgreSQL did not start; log:\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// The volume of a cluster made by [`Postgres::start_on_volume`], as this process sees it
    /// (through the postmaster's mount namespace).
    ///
    /// # Panics
    /// For a cluster without a volume of its own.
    pub fn volume(&self) -> PathBuf {
        let pid = self.postmaster.expect("a cluster on its own volume");
        let mount = self.dir.path().join("volume");
        PathBuf::from(format!("/proc/{pid}/root")).join(
            mount
                .strip_prefix("/")
                .expect("temporary directories are absolute"),
        )
    }

    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='{}' -c max_connections=200",
            self.port,
            self.dir.path().display()
        )
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
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
        if let Some(pid) = self.postmaster {
            // Its data directory exists only in its namespace: an immediate shutdown by signal.
            let _ = Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
            return;
        }
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
