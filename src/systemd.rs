//! The service manager protocol: `sd_notify` messages (`READY=1`,
//! `STOPPING=1`, `WATCHDOG=1`) sent to `$NOTIFY_SOCKET`. Without systemd
//! every call is a no-op.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends one notification; `Ok(false)` when not started by systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.as_bytes();
    let addr = match target.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(target))?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// Logs instead of failing: a lost notification must not stop the service.
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if it is meant
/// for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval while the service can still
/// do file-system work: each ping passes through the blocking pool every
/// store uses and looks at `data_dir` and `state_dir`. A hung disk (or a
/// pool stuck on one) stops the pings, and systemd restarts the service.
pub async fn watchdog(interval: Duration, state: std::sync::Arc<crate::state::AppState>) {
    watchdog_with(interval, state, || notify_or_log("WATCHDOG=1")).await;
}

async fn watchdog_with(
    interval: Duration,
    state: std::sync::Arc<crate::state::AppState>,
    ping: impl Fn(),
) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        let state = state.clone();
        let probe = tokio::task::spawn_blocking(move || {
            std::fs::metadata(state.data_dir()).and_then(|_| std::fs::metadata(state.state_dir()))
        });
        match tokio::time::timeout(interval / 2, probe).await {
            Ok(Ok(Ok(_))) => ping(),
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "watchdog: cannot stat data_dir or state_dir; not pinging")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "watchdog: probe failed; not pinging"),
            Err(_) => tracing::error!(
                "watchdog: the file-system thread pool did not answer within {} ms; not pinging",
                (interval / 2).as_millis()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_watchdog_pings_only_while_the_file_system_pool_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::config::Config {
            data_dir: dir.path().join("data"),
            state_dir: dir.path().join("state"),
            ..crate::config::Config::default()
        };
        let state = Arc::new(crate::state::AppState::new(config).expect("state"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let pings = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            let counted = pings.clone();
            tokio::spawn(watchdog_with(
                Duration::from_millis(100),
                state,
                move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                },
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(pings.load(Ordering::SeqCst) >= 2, "pings while healthy");
            // A hung disk: the pool's only thread is stuck.
            let hung =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(700)));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = pings.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(
                pings.load(Ordering::SeqCst),
                before,
                "no ping while the pool is stuck"
            );
            hung.await.expect("join");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(pings.load(Ordering::SeqCst) > before, "pings again");
        });
    }

    #[test]
    fn sends_to_the_named_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        // SAFETY of set_var: this test module is the only user of NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        let sent = notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(sent.expect("sent"));
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify("READY=1").expect("no socket is fine"));
    }
}
