//! The actions of the logger protocol, one file each, behind one dispatch
//! ([`Action::spec`]). Adding an action means its variant and name in
//! [`crate::request::Action`], its arm in `spec`, and its file.
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

use std::io;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::request::{Action, StationId};
use crate::state::AppState;
use crate::xml::Document;

/// Everything that tells one action from another.
#[derive(Debug)]
pub(crate) struct Spec {
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

// The action itself (its name, parsing it) is in `request`, below every
// module that names one; what each action does is here.
impl Action {
    /// The one place that says what each action does.
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
    }
}
