//! `layout::file_name` for any station id that parses and any time that
//! `i64` microseconds give: a single path component that parses back to the
//! station and the exact time.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i64, &[u8])| dlsrv::fuzz::file_name(input.0, input.1));
