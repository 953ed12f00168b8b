//! `encoding::decode` on any bytes, for each encoding, with a small limit:
//! never panics, never returns more than the limit after decoding (the
//! identity coding returns the body unchanged: its size is checked while it
//! is read), and every refusal is a 4xx. `Encoding::parse` never panics.

#![no_main]

use bytes::Bytes;
use dlsrv::encoding::{self, Encoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (which, limit, data) = input;
    let limit = u64::from(limit % 4097);
    let coding = [Encoding::Identity, Encoding::Deflate, Encoding::Gzip][usize::from(which % 3)];
    match encoding::decode(coding, Bytes::copy_from_slice(data), limit) {
        Ok(out) => match coding {
            Encoding::Identity => assert_eq!(&out[..], data),
            _ => assert!(out.len() as u64 <= limit, "{} > {limit}", out.len()),
        },
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
    if let Ok(coding) = Encoding::parse(Some(data)) {
        let name = String::from_utf8_lossy(data).trim().to_ascii_lowercase();
        assert!(
            ["", "identity", "deflate", "gzip", "x-gzip"].contains(&name.as_str()),
            "{name:?} parsed as {coding:?}"
        );
    }
});
