//! Who may speak for which station (`station_access`):
//!
//! - `"any"`: every login for every station (the service before; the
//!   default only when no configuration file is given);
//! - `"login"`: the basic-auth login must equal the `stationid`;
//! - `"map"`: `logins_file` says which stations each login speaks for.
//!
//! The login is NGINX's `$remote_user`, passed as `X-Remote-User`. A
//! refusal is a 403 that changes nothing: nothing stored, no command
//! handed out, no acknowledgement recorded, no file served.
//!
//! The logins file (TOML):
//!
//! ```toml
//! [logins]
//! dl001 = ["0000452891", "0000452892"]
//! dl002 = ["0077*"]          # a trailing * matches every station id with that prefix
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::config::StationAccess;
use crate::request::StationId;

/// One station a login may speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, station: &str) -> bool {
        match self {
            Pattern::Exact(id) => id == station,
            Pattern::Prefix(prefix) => station.starts_with(prefix.as_str()),
        }
    }
}

/// The policy in force: checked for every request of the logger protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Policy {
    Any,
    Login,
    Map(BTreeMap<String, Vec<Pattern>>),
}

/// Why a request may not speak for its station (the 403's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

impl Policy {
    /// The policy of `access`, reading `logins_file` for `"map"`.
    pub(crate) fn load(
        access: StationAccess,
        logins_file: Option<&Path>,
    ) -> anyhow::Result<Policy> {
        Ok(match access {
            StationAccess::Any => Policy::Any,
            StationAccess::Login => Policy::Login,
            StationAccess::Map => {
                let file = logins_file.context("station_access = \"map\" needs logins_file")?;
                Policy::Map(read_logins(file)?)
            }
        })
    }

    /// May `login` (NGINX's `$remote_user`; empty means none) speak for `station`?
    pub(crate) fn check(&self, login: Option<&str>, station: &StationId) -> Result<(), Refused> {
        let login = login.filter(|l| !l.is_empty());
        let station = station.as_str();
        match (self, login) {
            (Policy::Any, _) => Ok(()),
            (_, None) => Err(Refused(format!(
                "no login (X-Remote-User) for station {station}: every request needs one here"
            ))),
            (Policy::Login, Some(login)) if login == station => Ok(()),
            (Policy::Login, Some(login)) => Err(Refused(format!(
                "login {} may speak only for station {0}, not {station}",
                crate::logging::printable(login, 64)
            ))),
            (Policy::Map(map), Some(login)) => match map.get(login) {
                Some(patterns) if patterns.iter().any(|p| p.matches(station)) => Ok(()),
                Some(_) => Err(Refused(format!(
                    "login {} may not speak for station {station}",
                    crate::logging::printable(login, 64)
                ))),
                None => Err(Refused(format!(
                    "login {} is not in the logins file, so it may not speak for station {station}",
                    crate::logging::printable(login, 64)
                ))),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginsFile {
    logins: toml::Spanned<BTreeMap<String, toml::Spanned<Vec<toml::Spanned<String>>>>>,
}

/// Reads and checks a logins file; every error names its line.
pub(crate) fn read_logins(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<Pattern>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read logins_file {}", path.display()))?;
    parse_logins(&text).map_err(|e| anyhow::anyhow!("logins_file {}: {e}", path.display()))
}

fn parse_logins(text: &str) -> Result<BTreeMap<String, Vec<Pattern>>, String> {
    let line = |span: Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
    let file: LoginsFile = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => format!("line {}: {}", line(span), e.message()),
        None => e.message().to_owned(),
    })?;
    let mut map = BTreeMap::new();
    for (login, stations) in file.logins.into_inner() {
        let at = line(stations.span());
        if login.is_empty() || login.len() > 256 || login.chars().any(char::is_control) {
            return Err(format!(
                "line {at}: login {login:?} is empty, too long or has control characters"
            ));
        }
        let stations = stations.into_inner();
        if stations.is_empty() {
            return Err(format!("line {at}: login {login:?} has no station"));
        }
        let mut patterns = Vec::new();
        for station in stations {
            let at = line(station.span());
            let text = station.into_inner();
            let (id, prefix) = match text.strip_suffix('*') {
                Some(id) => (id, true),
                None => (text.as_str(), false),
            };
            let valid = if prefix && id.is_empty() {
                true // "*": every station
            } else {
                StationId::parse(id.as_bytes()).is_ok()
            };
            if !valid {
                return Err(format!(
                    "line {at}: {text:?} for login {login:?} is not a station id (1-64 of A-Z a-z 0-9 _ -, optionally ending in *)"
                ));
            }
            patterns.push(if prefix {
                Pattern::Prefix(id.to_owned())
            } else {
                Pattern::Exact(id.to_owned())
            });
        }
        map.insert(login, patterns);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn station(id: &str) -> StationId {
        StationId::parse(id.as_bytes()).expect("valid")
    }

    #[test]
    fn the_three_policies() {
        let map = Policy::Map(
            parse_logins(
                "[logins]\ndl001 = [\"0000452891\", \"0000452892\"]\ndl002 = [\"0077*\"]\n",
            )
            .expect("parses"),
        );
        assert!(map.check(Some("dl001"), &station("0000452892")).is_ok());
        assert!(map.check(Some("dl002"), &station("0077123")).is_ok());
        for (login, id) in [
            (Some("dl001"), "0000452893"),
            (Some("dl002"), "0078"),
            (Some("dl003"), "0000452891"),
            (None, "0000452891"),
            (Some(""), "0000452891"),
        ] {
            let refused = map.check(login, &station(id)).expect_err("refused");
            assert!(!refused.0.contains('\n'), "{refused:?}");
        }
        assert!(Policy::Login.check(Some("A1"), &station("A1")).is_ok());
        assert!(Policy::Login.check(Some("A1"), &station("A2")).is_err());
        assert!(Policy::Login.check(None, &station("A1")).is_err());
        assert!(Policy::Any.check(None, &station("A1")).is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, what) in [
            ("[logins]\na = [\"1\"]\nb = []\n", "line 3", "no station"),
            (
                "[logins]\na = [\"1\",\n  \"../x\"]\n",
                "line 3",
                "not a station id",
            ),
            (
                "[logins]\na = [\"1\"]\n[extra]\nx = 1\n",
                "line 3",
                "unknown field",
            ),
            ("[logins]\na = \"1\"\n", "line 2", "sequence"),
            ("[logins\n", "line 1", ""),
        ] {
            let err = parse_logins(text).expect_err(text);
            assert!(
                err.starts_with(line) && err.contains(what),
                "{text:?}: {err}"
            );
        }
        assert_eq!(
            parse_logins("[logins]\nall = [\"*\"]\n").expect("star"),
            BTreeMap::from([("all".to_owned(), vec![Pattern::Prefix(String::new())])])
        );
    }
}
