//! `StationId::parse` on any bytes: accepted exactly when the bytes are 1 to
//! 64 of `A-Z a-z 0-9 _ -`, and then kept unchanged.

#![no_main]

use dlsrv::request::StationId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let valid = (1..=StationId::MAX_LEN).contains(&raw.len())
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    match StationId::parse(raw) {
        Ok(id) => {
            assert!(valid, "accepted {raw:?}");
            assert_eq!(id.as_str().as_bytes(), raw);
            assert_eq!(id.to_string(), id.as_str());
        }
        Err(e) => {
            assert!(!valid, "refused {raw:?}: {e}");
            assert!(e.status().is_client_error());
        }
    }
});
