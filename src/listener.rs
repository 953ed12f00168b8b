//! The Unix socket NGINX connects to.
//!
//! [`listen`] takes the socket systemd passes (socket activation, see
//! [`inherited`]) or else binds its own with [`bind`]. [`bind`] refuses to
//! touch anything at the socket path that is not a stale socket, sets the
//! mode and group before `listen()` (so no connection can be accepted with
//! the wrong permissions), and returns a [`SocketFile`] guard that removes
//! the socket on shutdown, if it is still ours. An inherited socket belongs
//! to systemd, which removes it.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
    bind as bind_fd, getsockname, getsockopt, listen as listen_fd, socket, sockopt,
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

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The socket to serve: systemd's, when it passed one, else our own.
/// Returns the guard of a socket we bound ourselves. Must be called inside a
/// tokio runtime.
pub fn listen(config: &Config) -> anyhow::Result<(tokio::net::UnixListener, Option<SocketFile>)> {
    if let Some(fd) = inherited()? {
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener
            .set_nonblocking(true)
            .context("cannot make the inherited socket non-blocking")?;
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .context("cannot register the inherited socket with the runtime")?;
        tracing::info!("serving the socket passed by systemd (socket activation)");
        return Ok((listener, None));
    }
    let (listener, guard) = bind(config)?;
    Ok((listener, Some(guard)))
}

/// The listening socket systemd passed, if `LISTEN_PID` names this process
/// and `LISTEN_FDS` is set. Exactly one descriptor is accepted, and it must be
/// a listening Unix stream socket; anything else is an error, not ignored.
pub fn inherited() -> anyhow::Result<Option<OwnedFd>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None); // meant for another process (our parent, say)
    }
    let count: u32 = std::env::var("LISTEN_FDS")
        .context("LISTEN_PID is set but LISTEN_FDS is not")?
        .trim()
        .parse()
        .context("LISTEN_FDS is not a number")?;
    match count {
        0 => return Ok(None),
        1 => {}
        n => bail!("systemd passed {n} sockets; dlsrv serves exactly one (one ListenStream=)"),
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        bail!("the inherited socket was already taken");
    }
    let fd = LISTEN_FDS_START;
    let domain = getsockname::<SockaddrStorage>(fd)
        .context("descriptor 3 from systemd is not a socket")?
        .family();
    if domain != Some(AddressFamily::Unix) {
        bail!(
            "the socket systemd passed is not a Unix socket ({domain:?}); use ListenStream=/path"
        );
    }
    // SAFETY: LISTEN_PID names this process, so systemd gave us descriptor 3
    // to own, and TAKEN makes sure it is wrapped only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let kind =
        getsockopt(&owned, sockopt::SockType).context("cannot query the inherited socket")?;
    if kind != SockType::Stream {
        bail!("the socket systemd passed is not a stream socket ({kind:?})");
    }
    if !getsockopt(&owned, sockopt::AcceptConn).context("cannot query the inherited socket")? {
        bail!("the socket systemd passed is not listening");
    }
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("cannot set close-on-exec on the inherited socket")?;
    Ok(Some(owned))
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
    listen_fd(&fd, backlog).with_context(|| format!("cannot listen on {}", path.display()))?;

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
