//! The accept loop: one task per connection, HTTP/1.0 and 1.1 with
//! keep-alive and a header-read timeout, and a bounded graceful drain.
//!
//! At most `max_connections` are served at once: a connection beyond gets
//! a canned 503 (with `Retry-After`) written straight into its socket
//! buffer, without a task, and is closed; a warning says so at most once
//! a minute, with the count.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let max_connections = state.config.max_connections;
    let full = full_response(state.config.retry_after_secs);
    let mut refused = Refused::default();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "connection task failed");
                }
                state.metrics.connections(connections.len());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() >= max_connections => {
                    // Whatever fits in the socket buffer now; then closed.
                    let _ = stream.try_write(&full);
                    drop(stream);
                    state.metrics.connection_refused();
                    refused.note(max_connections);
                }
                Ok((stream, _)) => {
                    let served = state.clone();
                    let service = service_fn(move |req| crate::routes::handle(req, served.clone()));
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            log_connection_error(&e);
                        }
                    });
                    state.metrics.connections(connections.len());
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

/// The answer of a connection beyond `max_connections`.
fn full_response(retry_after_secs: u64) -> Vec<u8> {
    let body = "the service is busy, retry later (max_connections)\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: {retry_after_secs}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connections refused since the last warning.
#[derive(Default)]
struct Refused {
    count: u64,
    warned: Option<Instant>,
}

impl Refused {
    fn note(&mut self, max: usize) {
        self.count += 1;
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                refused = self.count,
                "{} connection(s) refused with 503: max_connections ({max}) are open",
                self.count
            );
            self.warned = Some(Instant::now());
            self.count = 0;
        }
    }
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
