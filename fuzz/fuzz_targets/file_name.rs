//! `archive::file_name` for any station id that parses and any time that
//! `i64` microseconds give: a single path component that parses back to the
//! station and the exact time.

#![no_main]

use chrono::{DateTime, NaiveDateTime, Utc};
use dlsrv::archive::{day_path, file_name};
use dlsrv::request::StationId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i64, &[u8])| {
    let (micros, raw) = input;
    let Ok(station) = StationId::parse(raw) else {
        return;
    };
    let Some(time) = DateTime::<Utc>::from_timestamp_micros(micros) else {
        return; // outside chrono's range of years
    };
    let name = file_name(station.as_str(), time);
    assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
    assert!(!name.contains(['/', '\0', ':']), "{name:?}");
    // A station id may contain '_', the time part never does: split at the
    // last '_' and parse both halves back.
    let (prefix, stamp) = name
        .rsplit_once('_')
        .expect("a '_' separates station and time");
    assert_eq!(prefix, station.as_str(), "{name:?}");
    let parsed = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H+%M+%S%.6f")
        .unwrap_or_else(|e| panic!("{name:?} does not parse back: {e}"))
        .and_utc();
    assert_eq!(parsed, time, "{name:?}");
    // The day directory is three plain components below the action.
    let day = day_path("senddata", time);
    let parts: Vec<_> = day.components().collect();
    assert_eq!(parts.len(), 4, "{day:?}");
    assert!(
        parts
            .iter()
            .all(|c| matches!(c, std::path::Component::Normal(_))),
        "{day:?}"
    );
});
