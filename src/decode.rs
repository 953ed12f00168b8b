//! The one decoder of request bodies: `Content-Encoding: deflate`
//! (zlib-wrapped or raw, since logger implementations differ) and `gzip`
//! (every member of a multi-member stream) are undone on the way to the
//! sink, so the archive holds the document itself. The sink bounds the
//! decoded size: a small "bomb" cannot fill memory or disk.
//!
//! Whether `deflate` is zlib-wrapped is decided here, once, from the first
//! two bytes, whether the body arrives whole or in pieces.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use crate::error::RequestError;

/// How a body was encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Deflate,
    Gzip,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value; one coding at most.
    pub(crate) fn parse(header: Option<&[u8]>) -> Result<Encoding, RequestError> {
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

    pub(crate) fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Deflate => "deflate",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Decodes what is written to it into `W`.
pub(crate) struct Decoder<W: Write> {
    state: State<W>,
    /// The first bytes of a `deflate` body, until they tell zlib from raw.
    head: Vec<u8>,
}

enum State<W: Write> {
    Identity(W),
    /// `deflate`, until two bytes tell zlib from raw.
    Sniffing(W),
    Zlib(ZlibDecoder<W>),
    Raw(DeflateDecoder<W>),
    Gzip(MultiGzDecoder<W>),
    /// Only while switching states.
    Empty,
}

impl<W: Write> Decoder<W> {
    pub(crate) fn new(encoding: Encoding, inner: W) -> Decoder<W> {
        let state = match encoding {
            Encoding::Identity => State::Identity(inner),
            Encoding::Deflate => State::Sniffing(inner),
            Encoding::Gzip => State::Gzip(MultiGzDecoder::new(inner)),
        };
        Decoder {
            state,
            head: Vec::new(),
        }
    }

    /// Decodes `data` into the sink. An error is the sink's own (it passes
    /// through unchanged) or bad encoded data.
    pub(crate) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if matches!(self.state, State::Sniffing(_)) {
            self.head.extend_from_slice(data);
            if self.head.len() < 2 {
                return Ok(());
            }
            self.decide();
            let head = std::mem::take(&mut self.head);
            return self.write_decoded(&head);
        }
        self.write_decoded(data)
    }

    /// Ends the body; returns the sink with everything decoded into it.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if matches!(self.state, State::Sniffing(_)) {
            self.decide();
            let head = std::mem::take(&mut self.head);
            self.write_decoded(&head)?;
        }
        match self.state {
            State::Identity(w) => Ok(w),
            State::Zlib(mut d) => d.try_finish().and_then(|()| d.finish()),
            State::Raw(mut d) => d.try_finish().and_then(|()| d.finish()),
            State::Gzip(mut d) => d.try_finish().and_then(|()| d.finish()),
            State::Sniffing(_) | State::Empty => Err(io::Error::other("decoder in no state")),
        }
    }

    fn decide(&mut self) {
        if let State::Sniffing(inner) = std::mem::replace(&mut self.state, State::Empty) {
            self.state = if looks_like_zlib(&self.head) {
                State::Zlib(ZlibDecoder::new(inner))
            } else {
                State::Raw(DeflateDecoder::new(inner))
            };
        }
    }

    fn write_decoded(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.state {
            State::Identity(w) => w.write_all(data),
            State::Zlib(d) => d.write_all(data),
            State::Raw(d) => d.write_all(data),
            State::Gzip(d) => d.write_all(data),
            State::Sniffing(_) | State::Empty => Err(io::Error::other("decoder in no state")),
        }
    }
}

/// RFC 1950 header: compression method 8 and a check value divisible by 31.
fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};

    fn compress<E: Write>(mut e: E, data: &[u8]) -> E {
        e.write_all(data).expect("compress");
        e
    }

    const DOC: &[u8] = b"<StationDataList unit=\"\xb0C\"/>";

    fn decode_in(encoding: Encoding, data: &[u8], piece: usize) -> io::Result<Vec<u8>> {
        let mut d = Decoder::new(encoding, Vec::new());
        for chunk in data.chunks(piece.max(1)) {
            d.write_all(chunk)?;
        }
        d.finish()
    }

    #[test]
    fn every_form_decodes_to_the_document_in_any_pieces() {
        let zlib = compress(ZlibEncoder::new(Vec::new(), Compression::default()), DOC)
            .finish()
            .expect("zlib");
        let raw = compress(DeflateEncoder::new(Vec::new(), Compression::default()), DOC)
            .finish()
            .expect("raw");
        let gzip = compress(GzEncoder::new(Vec::new(), Compression::default()), DOC)
            .finish()
            .expect("gzip");
        let mut two_members = gzip.clone();
        two_members.extend_from_slice(&gzip);
        for piece in [1, 2, 3, 1000] {
            for (enc, data, expected) in [
                (Encoding::Deflate, &zlib, DOC.to_vec()),
                (Encoding::Deflate, &raw, DOC.to_vec()),
                (Encoding::Gzip, &gzip, DOC.to_vec()),
                (Encoding::Gzip, &two_members, [DOC, DOC].concat()),
                (Encoding::Identity, &DOC.to_vec(), DOC.to_vec()),
            ] {
                assert_eq!(
                    decode_in(enc, data, piece).expect("decodes"),
                    expected,
                    "{enc:?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn garbage_fails_and_unknown_codings_are_415() {
        assert!(decode_in(Encoding::Gzip, b"not gzip", 100).is_err());
        assert!(
            decode_in(Encoding::Deflate, b"\xff\xff\xff\xff", 100).is_err(),
            "reserved block type"
        );
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
