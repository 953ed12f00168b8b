//! `Content-Encoding` of request bodies: `deflate` (zlib-wrapped or raw, since
//! logger implementations differ) and `gzip` are decoded before anything else,
//! so the archive holds the document itself. The decoded size is bounded: a
//! small "bomb" cannot fill memory or disk.

use std::io::Read;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use crate::error::RequestError;

/// How a body was encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Deflate,
    Gzip,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value; one coding at most.
    pub fn parse(header: Option<&[u8]>) -> Result<Encoding, RequestError> {
        let Some(raw) = header else {
            return Ok(Encoding::Identity);
        };
        let value = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        match value.as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "deflate" => Ok(Encoding::Deflate),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            _ => Err(RequestError::UnsupportedEncoding(value)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Deflate => "deflate",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Decodes `body`, refusing output larger than `limit` bytes (413) and
/// data that is not what the header claims (400).
pub fn decode(encoding: Encoding, body: Bytes, limit: u64) -> Result<Bytes, RequestError> {
    match encoding {
        Encoding::Identity => Ok(body),
        Encoding::Gzip => read_limited(MultiGzDecoder::new(&body[..]), limit, "gzip"),
        Encoding::Deflate if looks_like_zlib(&body) => {
            read_limited(ZlibDecoder::new(&body[..]), limit, "deflate (zlib)")
        }
        Encoding::Deflate => read_limited(DeflateDecoder::new(&body[..]), limit, "deflate"),
    }
}

/// RFC 1950 header: compression method 8 and a check value divisible by 31.
pub fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn read_limited(reader: impl Read, limit: u64, what: &str) -> Result<Bytes, RequestError> {
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| RequestError::BadEncoding(format!("body is not valid {what} data: {e}")))?;
    if out.len() as u64 > limit {
        return Err(RequestError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use std::io::Write;

    fn compress<W: Write>(mut w: W, data: &[u8]) -> W {
        w.write_all(data).expect("compress");
        w
    }

    const DOC: &[u8] = b"<StationDataList unit=\"\xb0C\"/>";

    #[test]
    fn all_three_forms_decode_to_the_document() {
        let zlib = compress(ZlibEncoder::new(Vec::new(), Compression::default()), DOC)
            .finish()
            .expect("zlib");
        let raw = compress(DeflateEncoder::new(Vec::new(), Compression::default()), DOC)
            .finish()
            .expect("raw");
        let gzip = compress(GzEncoder::new(Vec::new(), Compression::default()), DOC)
            .finish()
            .expect("gzip");
        for (enc, data) in [
            (Encoding::Deflate, zlib),
            (Encoding::Deflate, raw),
            (Encoding::Gzip, gzip),
        ] {
            assert_eq!(
                &decode(enc, Bytes::from(data), 1000).expect("decodes")[..],
                DOC
            );
        }
        assert_eq!(
            &decode(Encoding::Identity, Bytes::from_static(DOC), 1).expect("as is")[..],
            DOC
        );
    }

    #[test]
    fn a_bomb_is_cut_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let bomb = compress(ZlibEncoder::new(Vec::new(), Compression::best()), &zeros)
            .finish()
            .expect("bomb");
        assert!(bomb.len() < 20 * 1024, "{}", bomb.len());
        let err = decode(Encoding::Deflate, Bytes::from(bomb), 1024 * 1024).expect_err("too large");
        assert!(matches!(err, RequestError::BodyTooLarge { .. }));
    }

    #[test]
    fn garbage_is_a_client_error_and_unknown_codings_are_415() {
        let err = decode(Encoding::Gzip, Bytes::from_static(b"not gzip"), 100).expect_err("bad");
        assert_eq!(err.status(), hyper::StatusCode::BAD_REQUEST);
        for bad in [&b"br"[..], b"compress", b"gzip, deflate"] {
            let err = Encoding::parse(Some(bad)).expect_err("unsupported");
            assert_eq!(err.status(), hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        assert_eq!(
            Encoding::parse(Some(b" Deflate ")).expect("ok"),
            Encoding::Deflate
        );
        assert_eq!(Encoding::parse(None).expect("ok"), Encoding::Identity);
    }
}
