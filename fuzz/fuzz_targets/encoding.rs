//! The `Content-Encoding` decoder on any bytes, for each coding, fed in
//! pieces, into a sink with a small limit: never panics, never more than
//! the limit out; `Encoding::parse` accepts only the codings it names.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u16, u8, &[u8])| {
    let (which, limit, piece, data) = input;
    dlsrv::fuzz::decode(which, limit, piece, data)
});
