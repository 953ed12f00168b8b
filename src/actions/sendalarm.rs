//! `sendalarm`: an `AlarmMessage`, archived and logged at error level, so
//! `journalctl -p err` lists the alarms.

use std::io;

use super::{Delivered, Kind, Spec};

pub(crate) const SPEC: Spec = Spec {
    kind: Kind::Document {
        root: "AlarmMessage",
        after_store,
    },
};

/// How much of an alarm the log line carries.
const MAX_CHARS: usize = 4096;

fn after_store(d: &Delivered<'_>) -> io::Result<()> {
    if d.duplicate {
        return Ok(());
    }
    let station = d.station.as_str();
    let alarm = crate::logging::printable(&crate::xml::text(d.body), MAX_CHARS);
    tracing::error!(
        alarm = alarm.as_str(),
        "alarm from station {station}: {alarm}"
    );
    Ok(())
}
