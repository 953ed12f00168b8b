//! The actions of the logger protocol, one file each, behind one dispatch
//! ([`Action::spec`]). Adding an action means a variant here, its arm in
//! `spec`, and its file.
//!
//! | action | file | what it does |
//! | --- | --- | --- |
//! | `senddata` | [`senddata`] | XML `StationDataList`, archived |
//! | `sendalarm` | [`sendalarm`] | XML `AlarmMessage`, archived, logged at error |
//! | `acknowledge` | [`acknowledge`] | XML `Response`, archived, `Ack`s recorded in the queue |
//! | `sendconfiguration`, `sendfirmware` | [`upload`] | binary, streamed to the archive |
//! | `requestcommand` | [`requestcommand`] | GET: the next queued document |
//! | `getconfiguration`, `getfirmware` | [`download`] | GET: a published file |

pub(crate) mod acknowledge;
pub(crate) mod download;
pub(crate) mod requestcommand;
pub(crate) mod sendalarm;
pub(crate) mod senddata;
pub(crate) mod upload;

use std::fmt;
use std::io;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::RequestError;
use crate::request::StationId;
use crate::state::AppState;
use crate::xml::Document;

/// What a request asks for. Its name is also the archive's top directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    SendData,
    SendAlarm,
    RequestCommand,
    Acknowledge,
    SendConfiguration,
    SendFirmware,
    GetConfiguration,
    GetFirmware,
}

/// Everything that tells one action from another.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

/// How an action is served.
#[derive(Debug)]
pub(crate) enum Kind {
    /// POST of an XML document with this root element: checked, archived
    /// (at most `max_body_bytes`), then `after_store`.
    Document {
        root: &'static str,
        after_store: AfterStore,
    },
    /// POST of a binary upload, streamed to the archive (at most `max_upload_bytes`).
    Upload,
    /// GET: the next queued command document.
    Command,
    /// GET: a file published under `downloads_dir`.
    Download,
}

/// What a document action does once its body is archived (or found to be
/// a duplicate). An error answers 503: the logger sends the body again.
pub(crate) type AfterStore = fn(&Delivered<'_>) -> io::Result<()>;

/// A document just archived, as the action's `after_store` sees it.
pub(crate) struct Delivered<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) station: &'a StationId,
    pub(crate) document: &'a Document,
    pub(crate) body: &'a [u8],
    pub(crate) received: DateTime<Utc>,
    /// An identical body was stored before; this one was not stored again.
    pub(crate) duplicate: bool,
}

impl Action {
    pub(crate) const ALL: [Action; 8] = [
        Action::SendData,
        Action::SendAlarm,
        Action::RequestCommand,
        Action::Acknowledge,
        Action::SendConfiguration,
        Action::SendFirmware,
        Action::GetConfiguration,
        Action::GetFirmware,
    ];

    /// The one place that says what each action is.
    pub(crate) fn spec(self) -> &'static Spec {
        match self {
            Action::SendData => &senddata::SPEC,
            Action::SendAlarm => &sendalarm::SPEC,
            Action::Acknowledge => &acknowledge::SPEC,
            Action::SendConfiguration => &upload::CONFIGURATION,
            Action::SendFirmware => &upload::FIRMWARE,
            Action::RequestCommand => &requestcommand::SPEC,
            Action::GetConfiguration => &download::CONFIGURATION,
            Action::GetFirmware => &download::FIRMWARE,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.spec().name
    }

    pub(crate) fn parse(raw: &[u8]) -> Result<Action, RequestError> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(raw))
            .ok_or_else(|| RequestError::UnknownAction(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The method a logger uses for this action.
    pub(crate) fn method(self) -> hyper::Method {
        match self.spec().kind {
            Kind::Document { .. } | Kind::Upload => hyper::Method::POST,
            Kind::Command | Kind::Download => hyper::Method::GET,
        }
    }

    /// The largest body accepted, decoded.
    pub(crate) fn body_limit(self, config: &Config) -> u64 {
        match self.spec().kind {
            Kind::Upload => config.max_upload_bytes,
            _ => config.max_body_bytes,
        }
    }

    /// The names of the actions whose bodies the archive holds.
    pub(crate) fn archived() -> Vec<&'static str> {
        Action::ALL
            .into_iter()
            .filter(|a| a.method() == hyper::Method::POST)
            .map(Action::name)
            .collect()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Control characters of what a client sent, escaped for a log line.
pub(crate) fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for c in text.chars().take(max_chars) {
        if c.is_control() && c != ' ' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_case_insensitively_and_methods_fit() {
        for a in Action::ALL {
            assert_eq!(
                Action::parse(a.name().to_uppercase().as_bytes()).expect("parses"),
                a
            );
        }
        assert_eq!(
            Action::archived(),
            [
                "senddata",
                "sendalarm",
                "acknowledge",
                "sendconfiguration",
                "sendfirmware"
            ]
        );
        assert_eq!(Action::RequestCommand.method(), hyper::Method::GET);
        assert!(Action::parse(b"../senddata").is_err());
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
    }
}
