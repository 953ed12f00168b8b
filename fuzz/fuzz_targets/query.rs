//! `OttQuery::parse` on any UTF-8 query string: never panics; accepts only
//! a valid station id and a known action; every refusal is a 4xx.

#![no_main]

use dlsrv::request::{Action, OttQuery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    match OttQuery::parse(Some(query)) {
        Ok(q) => {
            let id = q.station.as_str();
            assert!(!id.is_empty() && id.len() <= 64, "{id:?}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id:?}"
            );
            assert!(Action::ALL.contains(&q.action));
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
});
