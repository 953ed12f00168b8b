//! A throwaway PostgreSQL cluster for the tests that load into one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// PostgreSQL's programs: on PATH, or where Debian puts them.
fn pg_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// A throwaway PostgreSQL cluster in a temporary directory, stopped on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    port: u16,
}

impl Cluster {
    /// Runs a PostgreSQL program, as the `postgres` user when we are root
    /// (PostgreSQL refuses to run as root).
    fn run(program: &Path, args: &[&str]) -> Output {
        let mut cmd = if super::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).output().expect("run a PostgreSQL program")
    }

    pub fn start() -> Option<Cluster> {
        let (Some(initdb), Some(pg_ctl)) = (pg_bin("initdb"), pg_bin("pg_ctl")) else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "PostgreSQL is missing and CI=true: .ci/test installs it; a skip must not pass in CI"
            );
            eprintln!("SKIPPED PostgreSQL: initdb/pg_ctl not found");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        if super::is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .expect("passwd")
                .expect("the postgres user (Debian's postgresql package makes it)");
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).expect("chown");
        }
        let data = dir.path().join("pg");
        let data_s = data.to_str().expect("path");
        let init = Self::run(
            &initdb,
            &["-D", data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(init.status.success(), "initdb: {}", text(&init.stderr));
        // A free port: bind one, let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=''",
            dir.path().display()
        );
        let log = dir.path().join("log");
        let start = Self::run(
            &pg_ctl,
            &[
                "-D",
                data_s,
                "-l",
                log.to_str().expect("path"),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        assert!(
            start.status.success(),
            "pg_ctl start: {} {:?}",
            text(&start.stderr),
            fs::read_to_string(&log)
        );
        Some(Cluster { dir, pg_ctl, port })
    }

    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// The same database as a `postgresql://` URL (the socket directory
    /// percent-encoded as the host), as `catalog_url` takes it.
    pub fn postgresql_url(&self) -> String {
        format!(
            "postgresql://postgres@{}:{}/postgres",
            self.dir.path().display().to_string().replace('/', "%2F"),
            self.port
        )
    }

    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }
}

impl Cluster {
    /// Stops the server (fast: sessions are cut), keeping its data.
    pub fn stop(&self) {
        let data = self.dir.path().join("pg");
        let out = Self::run(
            &self.pg_ctl,
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out.stderr));
    }

    /// Starts it again, on the same port.
    pub fn restart(&self) {
        let data = self.dir.path().join("pg");
        let options = format!(
            "-p {} -k {} -c listen_addresses=''",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let out = Self::run(
            &self.pg_ctl,
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-l",
                log.to_str().unwrap_or(""),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        assert!(out.status.success(), "pg_ctl start: {}", text(&out.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("pg");
        let _ = Self::run(
            &self.pg_ctl,
            &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
        );
    }
}
