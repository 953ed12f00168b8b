//! `StationId::parse` on any bytes: accepts exactly 1-64 characters of
//! `A-Z a-z 0-9 _ -` and keeps them as given; every refusal is a 4xx.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| dlsrv::fuzz::station_id(raw));
