//! The Unix socket NGINX connects to.
//!
//! [`bind`] refuses to touch anything at the socket path that is not a stale
//! socket, sets the mode and group before `listen()` (so no connection can be
//! accepted with the wrong permissions), and returns a [`SocketFile`] guard
//! that removes the socket on shutdown, if it is still ours.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind as bind_fd, listen, socket,
};

use crate::config::{Config, MAX_SOCKET_PATH, resolve_group};

/// Removes the socket file when dropped, unless something else replaced it.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove socket");
                }
            }
            _ => {} // gone, or replaced by another instance: not ours to remove
        }
    }
}

/// Binds the configured socket and starts listening. Must be called inside
/// a tokio runtime.
pub fn bind(config: &Config) -> anyhow::Result<(tokio::net::UnixListener, SocketFile)> {
    let path = config.socket.as_path();
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
            path.display()
        );
    }
    clear_stale_socket(path)?;

    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("cannot create a Unix socket")?;
    let addr =
        UnixAddr::new(path).with_context(|| format!("bad socket path {}", path.display()))?;
    bind_fd(fd.as_raw_fd(), &addr).with_context(|| format!("cannot bind {}", path.display()))?;
    let meta = fs::symlink_metadata(path)
        .with_context(|| format!("cannot stat the new socket {}", path.display()))?;
    // From here on the file is ours: the guard removes it on any error below.
    let guard = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };

    fs::set_permissions(path, fs::Permissions::from_mode(config.socket_mode.0)).with_context(
        || {
            format!(
                "cannot set mode {} on {}",
                config.socket_mode,
                path.display()
            )
        },
    )?;
    if let Some(group) = &config.socket_group {
        let gid = resolve_group(group).with_context(|| format!("socket_group {group:?}"))?;
        nix::unistd::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
    }

    let backlog = i32::try_from(config.listen_backlog)
        .unwrap_or(i32::MAX)
        .min(Backlog::MAXCONN.into());
    let backlog = Backlog::new(backlog).context("invalid listen_backlog")?;
    listen(&fd, backlog).with_context(|| format!("cannot listen on {}", path.display()))?;

    let listener = tokio::net::UnixListener::from_std(fd.into())
        .context("cannot register the socket with the runtime")?;
    Ok((listener, guard))
}

/// Leaves the path free for `bind`: nothing there, or a socket nobody listens
/// on (left by a crash), which is removed. Anything else is an error.
fn clear_stale_socket(path: &Path) -> anyhow::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it (remove it or choose another socket path)",
            path.display()
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!("{} is in use by a running server", path.display()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            tracing::info!(socket = %path.display(), "replaced a stale socket");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot check socket {}", path.display())),
    }
}
