//! `senddata`: a `StationDataList` of measurements, archived.
//!
//! A document may name other stations than the query (`StationData
//! stationId=`): it is stored under the query's station, and one warning
//! names the others (their count and the first few).

use std::io;

use super::{Delivered, Kind, Spec};

pub(crate) const SPEC: Spec = Spec {
    kind: Kind::Document {
        root: "StationDataList",
        after_store,
    },
};

/// How many foreign station ids one warning names.
const NAMED: usize = 5;

fn after_store(d: &Delivered<'_>) -> io::Result<()> {
    if d.duplicate {
        return Ok(());
    }
    let station = d.station.as_str();
    let mut others: Vec<&str> = d
        .document
        .station_ids
        .iter()
        .map(String::as_str)
        .filter(|s| *s != station)
        .collect();
    others.sort_unstable();
    others.dedup();
    if let Some(first) = others.first() {
        let named: Vec<String> = others
            .iter()
            .take(NAMED)
            .map(|s| crate::logging::printable(s, 64))
            .collect();
        tracing::warn!(
            document_station_id = crate::logging::printable(first, 64).as_str(),
            foreign_station_ids = others.len(),
            "document names {} other station(s) than the query's {station} ({}{}); stored under {station}",
            others.len(),
            named.join(", "),
            if others.len() > NAMED { ", …" } else { "" }
        );
    }
    Ok(())
}
