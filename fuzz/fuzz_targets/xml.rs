//! The XML check on any bytes: never panics; what it accepts has a root and
//! the same findings whatever root is asked for; a refusal has a reason.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| dlsrv::fuzz::xml(body));
