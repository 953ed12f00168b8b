//! `xml::inspect` and `xml::check` on any bytes: never panic; a document
//! that passes has a root element, and `check` agrees with `inspect`.

#![no_main]

use dlsrv::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let inspected = xml::inspect(body);
    if let Ok(summary) = &inspected {
        assert!(!summary.root.is_empty());
    }
    for root in ["StationDataList", "AlarmMessage", "Response"] {
        match xml::check(body, root) {
            Ok(summary) => {
                assert_eq!(summary.root, root);
                assert_eq!(inspected.as_ref().ok(), Some(&summary));
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
});
