//! Where requests go: `http://host:port[/path]`, `https://host:port[/path]` or
//! `unix:/path/to/socket`.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The URL path used when a target names none (and always for Unix sockets).
pub const DEFAULT_PATH: &str = "/ott/";

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP connection, with TLS when `tls` is set.
    Tcp { host: String, port: u16, tls: bool },
    /// A Unix domain socket (plain HTTP, no TLS).
    Unix(PathBuf),
}

/// A parsed `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    /// The URL path (and possibly a query) requests are sent to, e.g. `/ott/`.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`, `https://host[:port][/path]` or `unix:/path`.
    ///
    /// IPv6 literals go in brackets (`http://[::1]:8080/`). A URL without a path, or with
    /// just `/`, uses [`DEFAULT_PATH`].
    pub fn parse(s: &str) -> Result<Target> {
        if let Some(sock) = s.strip_prefix("unix:") {
            // Accept both `unix:/run/x.sock` and `unix:///run/x.sock`.
            let sock = sock.strip_prefix("//").unwrap_or(sock);
            if sock.is_empty() {
                bail!("target {s:?}: no socket path after 'unix:'");
            }
            return Ok(Target {
                endpoint: Endpoint::Unix(PathBuf::from(sock)),
                path: DEFAULT_PATH.to_string(),
            });
        }
        let (tls, rest, default_port) = if let Some(r) = s.strip_prefix("http://") {
            (false, r, 80)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r, 443)
        } else {
            bail!("target {s:?}: expected http://, https:// or unix:");
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            bail!("target {s:?}: put credentials in --user/--password, not in the URL");
        }
        let (host, port) = split_host_port(authority)
            .with_context(|| format!("target {s:?}: bad host or port"))?;
        let port = port.unwrap_or(default_port);
        let path = if path.is_empty() || path == "/" {
            DEFAULT_PATH.to_string()
        } else if path.starts_with('?') {
            format!("{DEFAULT_PATH}{path}")
        } else {
            path.to_string()
        };
        Ok(Target {
            endpoint: Endpoint::Tcp { host, port, tls },
            path,
        })
    }

    /// The value of the `Host` header.
    pub fn host_header(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp { host, port, tls } => {
                let h = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let default = if *tls { 443 } else { 80 };
                if *port == default {
                    h
                } else {
                    format!("{h}:{port}")
                }
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.endpoint, Endpoint::Tcp { tls: true, .. })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp { tls, .. } => {
                let scheme = if *tls { "https" } else { "http" };
                write!(f, "{scheme}://{}{}", self.host_header(), self.path)
            }
        }
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').context("unclosed '[' in IPv6 address")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => bail!("unexpected {after:?} after IPv6 address"),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("empty host");
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .with_context(|| format!("invalid port {p:?}"))?,
        ),
        None => None,
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, tls: bool) -> Endpoint {
        Endpoint::Tcp {
            host: host.to_string(),
            port,
            tls,
        }
    }

    #[test]
    fn unix_socket_uses_default_path() {
        let t = Target::parse("unix:./dlsrv.sock").expect("parse");
        assert_eq!(t.endpoint, Endpoint::Unix(PathBuf::from("./dlsrv.sock")));
        assert_eq!(t.path, "/ott/");
        assert_eq!(t.host_header(), "localhost");
        let t = Target::parse("unix:///run/dlsrv/dlsrv.sock").expect("parse");
        assert_eq!(
            t.endpoint,
            Endpoint::Unix(PathBuf::from("/run/dlsrv/dlsrv.sock"))
        );
        assert!(Target::parse("unix:").is_err());
    }

    #[test]
    fn http_and_https_with_and_without_port_and_path() {
        let t = Target::parse("http://127.0.0.1:8080").expect("parse");
        assert_eq!(t.endpoint, tcp("127.0.0.1", 8080, false));
        assert_eq!(t.path, "/ott/");
        assert_eq!(t.host_header(), "127.0.0.1:8080");

        let t = Target::parse("https://logger.example.org/").expect("parse");
        assert_eq!(t.endpoint, tcp("logger.example.org", 443, true));
        assert_eq!(t.path, "/ott/");
        assert_eq!(t.host_header(), "logger.example.org");
        assert!(t.is_tls());

        let t = Target::parse("https://localhost:8443/data/netdl").expect("parse");
        assert_eq!(t.endpoint, tcp("localhost", 8443, true));
        assert_eq!(t.path, "/data/netdl");

        let t = Target::parse("http://localhost:80/ott").expect("parse");
        assert_eq!(t.host_header(), "localhost");
        assert_eq!(t.path, "/ott");
        assert_eq!(t.to_string(), "http://localhost/ott");
    }

    #[test]
    fn ipv6_literals() {
        let t = Target::parse("http://[::1]:8080/ott/").expect("parse");
        assert_eq!(t.endpoint, tcp("::1", 8080, false));
        assert_eq!(t.host_header(), "[::1]:8080");
        let t = Target::parse("https://[::1]").expect("parse");
        assert_eq!(t.endpoint, tcp("::1", 443, true));
        assert_eq!(t.host_header(), "[::1]");
    }

    #[test]
    fn query_without_path() {
        let t = Target::parse("http://localhost:1?x=1").expect("parse");
        assert_eq!(t.path, "/ott/?x=1");
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "localhost:8080",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:port/",
            "http://[::1/",
            "http://user:pw@host/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
