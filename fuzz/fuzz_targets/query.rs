//! `OttQuery::parse` on any UTF-8 query string: never panics; accepts only
//! a valid station id and a known action; every refusal is a 4xx.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| dlsrv::fuzz::query(query));
