//! `sendconfiguration` and `sendfirmware`: binary uploads, streamed into
//! the archive byte-exact (after undoing a `Content-Encoding`), up to
//! `max_upload_bytes`. Memory does not grow with the body.

use super::{Kind, Spec};

pub(crate) const CONFIGURATION: Spec = Spec { kind: Kind::Upload };

pub(crate) const FIRMWARE: Spec = Spec { kind: Kind::Upload };
