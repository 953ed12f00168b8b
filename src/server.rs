//! The accept loop: one task per connection, HTTP/1.0 and 1.1 with
//! keep-alive and a header-read timeout, and a bounded graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;
use tokio::task::JoinSet;

use crate::state::AppState;

/// Serves `listener` until `shutdown` completes, then stops accepting and
/// gives in-flight requests `shutdown_grace_secs` to finish.
pub async fn run(listener: UnixListener, shutdown: impl Future<Output = ()>, state: Arc<AppState>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout())
        // Reads in pieces of at most 64 KiB: a 44 KB message still arrives in
        // one, and a large upload never sits in memory in big chunks.
        .max_buf_size(64 * 1024)
        // A client that shuts down its sending side after a complete request
        // still gets its answer: the body may already be stored.
        .half_close(true)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let service = service_fn(move |req| crate::routes::handle(req, state.clone()));
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            log_connection_error(&e);
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off, keep serving.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    drop(listener);
    let grace = state.config.shutdown_grace();
    tracing::info!(
        connections = graceful.count(),
        grace_secs = grace.as_secs(),
        "stopped accepting; draining"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "grace period over; closing the remaining connections"
        );
    }
    connections.shutdown().await;
}

/// A connection's error is the client's business and no other connection's.
/// Malformed requests (hyper answered them 400 or 431) are refusals and get
/// a warning; hang-ups and timeouts (idle keep-alive connections from NGINX's
/// pool end that way every `header_read_timeout_secs`) are routine.
fn log_connection_error(e: &hyper::Error) {
    if e.is_parse() || e.is_parse_too_large() {
        tracing::warn!(error = %e, "refused a malformed request");
    } else {
        tracing::debug!(error = %e, "connection closed");
    }
}
