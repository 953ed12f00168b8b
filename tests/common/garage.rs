//! A throwaway Garage (a real S3-compatible object store) on loopback for
//! the replica's tests: one node, a layout, a key, buckets `archive` and
//! `lake`. The binary is `$GARAGE_BIN`, else `../shared/bin/garage` beside
//! the checkout (a prebuilt Garage 2.5.0), else `garage` on PATH; `.ci/test`
//! provides one (`cargo install garage --locked` where none is prebuilt).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub struct Garage {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub s3_port: u16,
    pub key_id: String,
    pub secret: String,
}

/// A runtime of the test's own for the S3 client (the tests are not async).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return Some(PathBuf::from(bin));
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bin/garage");
    if shared.is_file() {
        return Some(shared);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
}

impl Garage {
    /// Starts Garage, or says SKIPPED and returns `None` without one (a
    /// failure in CI, where `.ci/test` provides it).
    pub fn start() -> Option<Garage> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "Garage is missing and CI=true: .ci/test provides it; a skip must not pass in CI"
            );
            eprintln!(
                "SKIPPED object storage: no garage binary (GARAGE_BIN, ../shared/bin/garage)"
            );
            return None;
        };
        // In memory where there is /dev/shm: the store stands for another
        // machine, whose writes do not share this disk's flushes.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let (rpc, s3) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + std::process::id() as usize) % 256))
            .collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .expect("garage config");
        let mut garage = Garage {
            dir,
            bin,
            config,
            child: None,
            s3_port: s3,
            key_id: String::new(),
            secret: String::new(),
        };
        garage.run_server();
        let node = garage.cli_retrying(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().expect("node id").to_owned();
        // `node id` reads the key the server wrote at start, which can be
        // before the server listens for RPC: the first call over RPC waits.
        garage.cli_retrying(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        let key = garage.cli(&["key", "create", "dlsrv-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("{name} in {key}"))
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        for bucket in ["archive", "lake"] {
            garage.cli(&["bucket", "create", bucket]);
            garage.cli(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                bucket,
                "--key",
                "dlsrv-test",
            ]);
        }
        garage.wait_serving();
        Some(garage)
    }

    fn run_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log");
        // Niced: it stands for a store on another machine, not for a load
        // on this one's two cores.
        let child = Command::new("nice")
            .args(["-n", "10"])
            .arg(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        self.child = Some(child);
    }

    /// The CLI: its output, or what it said when it failed.
    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("garage cli");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("garage {args:?}: {e}"))
    }

    /// The CLI, until the server answers it.
    fn cli_retrying(&self, args: &[&str]) -> String {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_cli(args) {
                Ok(out) => return out,
                Err(e) => assert!(Instant::now() < until, "garage did not answer: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Until a bucket listing succeeds (the layout is in force).
    fn wait_serving(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        let runtime = runtime();
        let client = self.client();
        loop {
            let ok = runtime.block_on(client.list_objects_v2().bucket("archive").send());
            match ok {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < until,
                    "garage does not serve S3: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (kill -9: as a crash or a lost network would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.run_server();
        self.wait_serving();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A credentials file (mode 0600) at `path`.
    pub fn write_credentials(&self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            path,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                self.key_id, self.secret
            ),
        )
        .expect("credentials");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// The `[replica]` table for `s3://archive/<prefix>` (credentials written beside).
    pub fn replica_toml(&self, prefix: &str, dir: &Path, extra: &str) -> String {
        let credentials = dir.join("s3-credentials");
        self.write_credentials(&credentials);
        format!(
            "[replica]\nurl = \"s3://archive/{prefix}\"\nendpoint = \"{}\"\nregion = \"garage\"\n\
             path_style = true\ncredentials_file = \"{}\"\n{extra}",
            self.endpoint(),
            credentials.display()
        )
    }

    /// A client of the test's own, to look at and tamper with the bucket.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("garage"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.key_id,
                &self.secret,
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Every key of `bucket` with its size.
    pub fn keys(&self, bucket: &str) -> Vec<(String, i64)> {
        let runtime = runtime();
        let client = self.client();
        runtime.block_on(async {
            let mut out = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.expect("list");
                for o in page.contents() {
                    out.push((
                        o.key().unwrap_or_default().to_owned(),
                        o.size().unwrap_or(0),
                    ));
                }
            }
            out
        })
    }

    /// An object's bytes and its stored SHA-256 checksum.
    pub fn get(&self, bucket: &str, key: &str) -> (Vec<u8>, Option<String>) {
        let runtime = runtime();
        let client = self.client();
        runtime.block_on(async {
            let out = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!("GET {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e))
                });
            let checksum = out.checksum_sha256().map(str::to_owned);
            let body = out
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec();
            (body, checksum)
        })
    }

    /// Overwrites an object with other bytes (as a careless tool would).
    pub fn overwrite(&self, bucket: &str, key: &str, body: &[u8]) {
        let runtime = runtime();
        let client = self.client();
        runtime
            .block_on(
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body.to_vec().into())
                    .send(),
            )
            .expect("overwrite");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
