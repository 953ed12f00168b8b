//! A corpus of malformed and malicious requests, generated from parameter
//! positions × tricks, each sent on its own connection to the real service.
//! Every one must be refused with a 4xx (never a 2xx, never a 5xx), except a
//! small documented allow-list whose connections hyper may close without an
//! answer. The service stays up throughout, nothing is written outside the
//! data and state directories, and nothing reaches the archive: the data
//! directory stays empty, refused bodies are kept under `state_dir/rejected/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{TestServer, doc, files_under};
use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const STATION: &str = "0000452891";
const SENDDATA: &str = "/ott/?stationid=0000452891&action=senddata";
const MIB: usize = 1024 * 1024;

/// The only cases whose connection may be closed without any HTTP answer,
/// and why. Every other case must get a 4xx. (Allowed, not required: hyper
/// may still answer them, and then the answer must be a 4xx too.)
const MAY_CLOSE_WITHOUT_ANSWER: &[(&str, &str)] = &[
    (
        "headers: one 1 MiB header value",
        "larger than hyper's read buffer (about 400 KiB): hyper answers 431 and closes \
         while the client is still writing, so the client may see only the reset",
    ),
    (
        "framing: only a request line, then EOF",
        "the client went away in the middle of the head: there is no request to answer",
    ),
    (
        "framing: HTTP/2 prior-knowledge preface",
        "hyper recognises the HTTP/2 preface on its HTTP/1-only connection and closes it \
         without an HTTP/1 answer (there is no HTTP/1 status it could send)",
    ),
];

/// One hostile request.
struct Case {
    name: String,
    request: Vec<u8>,
    /// Shut down the write side after sending (a client that lied and left).
    half_close: bool,
    /// The exact final status when it is the service's own decision.
    expect: Option<u16>,
}

fn case(name: impl Into<String>, request: Vec<u8>, expect: Option<u16>) -> Case {
    Case {
        name: name.into(),
        request,
        half_close: false,
        expect,
    }
}

/// `METHOD target HTTP/1.1` with `headers`, a Content-Length and `Connection: close`.
fn request(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn post(target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    request("POST", target, headers, body)
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A POST whose head is given whole (for framing tricks), then `body`.
fn raw(head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = head.as_bytes().to_vec();
    r.extend_from_slice(body);
    r
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).expect("compress");
    e.finish().expect("finish")
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).expect("compress");
    e.finish().expect("finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).expect("compress");
    e.finish().expect("finish")
}

/// The three bombs: ~64 MiB of one byte as raw deflate, zlib and gzip. The
/// raw stream is compressed once and wrapped, which is much faster than
/// compressing 64 MiB three times in a debug build.
struct Bombs {
    raw: Vec<u8>,
    zlib: Vec<u8>,
    gzip: Vec<u8>,
}

fn bombs() -> Bombs {
    const LEN: usize = 64 * MIB;
    let chunk = vec![b'<'; MIB];
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
    let mut crc = flate2::Crc::new();
    for _ in 0..LEN / MIB {
        encoder.write_all(&chunk).expect("compress");
        crc.update(&chunk);
    }
    let raw = encoder.finish().expect("finish");
    // zlib: CMF/FLG for deflate with a 32 KiB window, best compression,
    // then the stream and the Adler-32 of LEN copies of one byte c:
    // A = 1 + LEN·c, B = LEN + c·LEN·(LEN+1)/2 (mod 65521).
    let (n, c, m) = (LEN as u64, u64::from(b'<'), 65521u64);
    let a = (1 + n * c) % m;
    let b = (n + c * (n * (n + 1) / 2 % m)) % m;
    let mut zlib = vec![0x78, 0xda];
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&((b << 16 | a) as u32).to_be_bytes());
    let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    gzip.extend_from_slice(&raw);
    gzip.extend_from_slice(&crc.sum().to_le_bytes());
    gzip.extend_from_slice(&(LEN as u32).to_le_bytes());
    Bombs { raw, zlib, gzip }
}

/// Path, parameter and encoding tricks, used in every position.
fn tricks() -> Vec<String> {
    let mut t: Vec<String> = [
        "../",
        "..%2F",
        "..%2f",
        "%2e%2e%2f",
        "%2E%2E/",
        "%2e%2e",
        "..%5C",
        "..\\",
        "\\..\\..\\",
        "....//",
        "..;/",
        "%252e%252e%252f",
        "%c0%ae%c0%ae%c0%af",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "/../../../../../../etc/passwd",
        "%00",
        "x%00y",
        "%",
        "%z1",
        "%%",
        "%4",
        "%%32%65",
        "%ff%fe",
        "%C3%A9",
        "é",
        "\u{202e}",
        "%0d%0aX-Injected:%201",
        "'\"<>",
        "$(id)",
        "`id`",
        "*",
        "~root",
        ".",
        "+",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    t.push("A".repeat(65));
    t.push("../".repeat(3000));
    t
}

fn corpus(bombs: &Bombs) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut n = 0usize;
    // A valid document, distinct per case: wherever the service wrongly
    // accepted a hostile query, it would store it and answer 200.
    let mut valid = || {
        n += 1;
        doc(&format!("hostile {n}"))
    };

    // 1. Every trick in every position of the query and the path.
    for (i, t) in tricks().iter().enumerate() {
        let short: String = t.chars().take(24).collect();
        let positions = [
            (
                "stationid value",
                post(
                    &format!("/ott/?stationid={t}&action=senddata"),
                    "",
                    &valid(),
                ),
            ),
            (
                "stationid suffix",
                post(
                    &format!("/ott/?stationid={STATION}{t}&action=senddata"),
                    "",
                    &valid(),
                ),
            ),
            (
                "action value",
                post(
                    &format!("/ott/?stationid={STATION}&action={t}"),
                    "",
                    &valid(),
                ),
            ),
            (
                "action suffix",
                post(
                    &format!("/ott/?stationid={STATION}&action=senddata{t}"),
                    "",
                    &valid(),
                ),
            ),
            (
                "parameter name",
                post(
                    &format!("/ott/?stationid{t}={STATION}&action=senddata"),
                    "",
                    &valid(),
                ),
            ),
            (
                "path after /ott/",
                post(
                    &format!("/ott/{t}?stationid={STATION}&action=senddata"),
                    "",
                    &valid(),
                ),
            ),
            (
                "path before ott",
                post(
                    &format!("/{t}ott/?stationid={STATION}&action=senddata"),
                    "",
                    &valid(),
                ),
            ),
            (
                "download path",
                get(&format!(
                    "/fw/{t}netdl.bin?stationid={STATION}&action=getfirmware"
                )),
            ),
            (
                "download path to a file outside",
                get(&format!(
                    "/fw/{t}{t}secret?stationid={STATION}&action=getconfiguration"
                )),
            ),
        ];
        for (position, request) in positions {
            cases.push(case(
                format!("trick {i} {short:?} in {position}"),
                request,
                None,
            ));
        }
    }
    for target in [
        "/../secret",
        "/fw/../../secret",
        "/%2e%2e/secret",
        "/fw/%2e%2e/%2e%2e/secret",
        "/link",
        "/fw/",
        "/fw",
        "//secret",
        "/fw/netdl.bin%00",
        "/fw/netdl.bin/..",
        "/ott/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/ott/%2e%2e/%2e%2e/etc/passwd",
    ] {
        for action in ["getfirmware", "getconfiguration"] {
            cases.push(case(
                format!("download {target} {action}"),
                get(&format!("{target}?stationid={STATION}&action={action}")),
                None,
            ));
        }
    }
    cases.push(case(
        "path: /ott/../../etc/passwd with a valid query",
        post(
            "/ott/../../etc/passwd?stationid=1&action=senddata",
            "",
            &valid(),
        ),
        Some(404),
    ));
    cases.push(case(
        "path: /%2e%2e/ with a valid query",
        post("/%2e%2e/?stationid=1&action=senddata", "", &valid()),
        Some(404),
    ));

    // 2. Query structure: missing, repeated, unknown, empty.
    for (name, target, expect) in [
        ("no query", "/ott/", 400),
        ("empty query", "/ott/?", 400),
        ("only separators", "/ott/?&&&", 400),
        ("only '='", "/ott/?=", 400),
        ("bare stationid", "/ott/?stationid", 400),
        ("empty stationid", "/ott/?stationid=&action=senddata", 400),
        ("empty action", "/ott/?stationid=1&action=", 400),
        ("missing stationid", "/ott/?action=senddata", 400),
        ("missing action", "/ott/?stationid=1", 400),
        (
            "repeated stationid",
            "/ott/?stationid=1&stationid=1&action=senddata",
            400,
        ),
        (
            "repeated stationid, other case",
            "/ott/?StationID=1&stationid=2&action=senddata",
            400,
        ),
        (
            "repeated action",
            "/ott/?stationid=1&action=senddata&action=senddata",
            400,
        ),
        (
            "repeated action, one empty",
            "/ott/?stationid=1&action=senddata&action=",
            400,
        ),
        ("unknown action", "/ott/?stationid=1&action=frobnicate", 400),
        (
            "action with a space",
            "/ott/?stationid=1&action=send+data",
            400,
        ),
        (
            "action with trailing space",
            "/ott/?stationid=1&action=senddata%20",
            400,
        ),
        ("numeric action", "/ott/?stationid=1&action=1", 400),
        (
            "semicolon separator",
            "/ott/?stationid=1;action=senddata",
            400,
        ),
        ("array name", "/ott/?stationid[]=1&action=senddata", 400),
        (
            "65-character station",
            "/ott/?stationid=00000000000000000000000000000000000000000000000000000000000000000&action=senddata",
            400,
        ),
        (
            "POST requestcommand",
            "/ott/?stationid=1&action=requestcommand",
            405,
        ),
        (
            "POST getfirmware",
            "/ott/?stationid=1&action=getfirmware",
            405,
        ),
        (
            "POST getconfiguration",
            "/ott/?stationid=1&action=getconfiguration",
            405,
        ),
        ("POST to /ping", "/ping", 405),
        ("POST to /", "/", 404),
        ("POST to /ott/x", "/ott/x?stationid=1&action=senddata", 404),
        ("POST to /OTT/", "/OTT/?stationid=1&action=senddata", 404),
        ("POST to /ott//", "/ott//?stationid=1&action=senddata", 404),
    ] {
        cases.push(case(
            format!("query: {name}"),
            post(target, "", &valid()),
            Some(expect),
        ));
    }
    for target in [
        "/ott/?stationid=1&action=senddata",
        "/ott/?stationid=1&action=sendalarm",
    ] {
        cases.push(case(
            format!("query: GET of a POST action {target}"),
            get(target),
            Some(405),
        ));
    }
    for action in [
        "senddata",
        "sendalarm",
        "acknowledge",
        "sendconfiguration",
        "sendfirmware",
    ] {
        cases.push(case(
            format!("empty body to {action}"),
            post(&format!("/ott/?stationid=1&action={action}"), "", b""),
            Some(400),
        ));
        cases.push(case(
            format!("empty chunked body to {action}"),
            raw(
                &format!(
                    "POST /ott/?stationid=1&action={action} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                ),
                b"0\r\n\r\n",
            ),
            Some(400),
        ));
    }

    // 3. Wrong methods on every path.
    let paths = [
        "/ott/?stationid=1&action=senddata",
        "/ott?stationid=1&action=sendalarm",
        "/ott/?stationid=1&action=acknowledge",
        "/ott/?stationid=1&action=sendfirmware",
        "/ott/?stationid=1&action=requestcommand",
        "/fw/netdl.bin?stationid=1&action=getfirmware",
        "/ping",
        "/nowhere",
    ];
    for method in [
        "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "post", "get", "FROB",
    ] {
        for path in paths {
            cases.push(case(
                format!("method {method} {path}"),
                request(method, path, "", &valid()),
                None,
            ));
        }
    }
    cases.push(case(
        "method: CONNECT authority-form",
        request("CONNECT", "localhost:80", "", b""),
        None,
    ));
    cases.push(case(
        "method: OPTIONS *",
        request("OPTIONS", "*", "", b""),
        None,
    ));

    // 4. XML attacks on each XML action: 400, the body kept under rejected/.
    for (action, root, other) in [
        ("senddata", "StationDataList", "AlarmMessage"),
        ("sendalarm", "AlarmMessage", "Response"),
        ("acknowledge", "Response", "StationDataList"),
    ] {
        let mut nested = format!("<{root}>");
        nested.push_str(&"<a>".repeat(100_000));
        let attacks: Vec<(&str, String)> = vec![
            (
                "billion laughs",
                format!(
                    "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n{}]>\n<{root}>&lol9;</{root}>",
                    (1..10)
                        .map(|i| format!(
                            " <!ENTITY lol{i} \"{}\">\n",
                            format!(
                                "&lol{};",
                                if i == 1 {
                                    String::new()
                                } else {
                                    (i - 1).to_string()
                                }
                            )
                            .repeat(10)
                        ))
                        .collect::<String>()
                ),
            ),
            (
                "external entity",
                format!(
                    "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><{root}>&e;</{root}>"
                ),
            ),
            (
                "external parameter entity",
                format!("<!DOCTYPE x [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><{root}/>"),
            ),
            (
                "external DTD",
                format!("<!DOCTYPE {root} SYSTEM \"file:///etc/passwd\"><{root}/>"),
            ),
            ("undefined entity", format!("<{root}>&e;</{root}>")),
            (
                "undefined entity in an attribute",
                format!("<{root} a=\"&e;\"/>"),
            ),
            ("NUL character reference", format!("<{root}>&#0;</{root}>")),
            (
                "surrogate character reference",
                format!("<{root}>&#xD800;</{root}>"),
            ),
            ("unclosed tag", format!("<{root}><a>")),
            ("unclosed root", format!("<{root}>")),
            ("mismatched end tag", format!("<{root}></Other>")),
            ("wrong root", "<Wrong/>".to_owned()),
            ("another action's root", format!("<{other}/>")),
            (
                "root in lower case",
                format!("<{}/>", root.to_ascii_lowercase()),
            ),
            ("prefixed root", format!("<x:{root} xmlns:x=\"urn:x\"/>")),
            ("second root", format!("<{root}/><{root}/>")),
            ("text after the root", format!("<{root}/>trailing")),
            ("CDATA outside the root", format!("<{root}/><![CDATA[x]]>")),
            (
                "late XML declaration",
                format!("<{root}/><?xml version=\"1.0\"?>"),
            ),
            (
                "double hyphen in a comment",
                format!("<{root}><!-- a -- b --></{root}>"),
            ),
            ("duplicate attribute", format!("<{root} a=\"1\" a=\"2\"/>")),
            ("unquoted attribute", format!("<{root} a=1/>")),
            ("NUL in a tag", format!("<{root}\0/>")),
            ("whitespace only", " \r\n\t ".to_owned()),
            ("not XML at all", "hello".to_owned()),
            ("100000 unclosed elements", nested),
        ];
        for (attack, body) in attacks {
            cases.push(case(
                format!("xml: {attack} to {action}"),
                post(
                    &format!("/ott/?stationid={STATION}&action={action}"),
                    "",
                    body.as_bytes(),
                ),
                Some(400),
            ));
        }
    }

    // 5. Content-Encoding: bombs, garbage, unknown codings.
    let sendfw = "/ott/?stationid=1&action=sendfirmware";
    let sendconf = "/ott/?stationid=1&action=sendconfiguration";
    for (name, target, coding, body, expect) in [
        ("zlib bomb", SENDDATA, "deflate", &bombs.zlib, 413),
        ("raw deflate bomb", SENDDATA, "deflate", &bombs.raw, 413),
        ("gzip bomb", SENDDATA, "gzip", &bombs.gzip, 413),
        ("x-gzip bomb", SENDDATA, "x-gzip", &bombs.gzip, 413),
        (
            "gzip bomb to sendfirmware",
            sendfw,
            "gzip",
            &bombs.gzip,
            413,
        ),
        (
            "zlib bomb to sendconfiguration",
            sendconf,
            "deflate",
            &bombs.zlib,
            413,
        ),
    ] {
        cases.push(case(
            format!("encoding: {name}"),
            post(target, &format!("Content-Encoding: {coding}\r\n"), body),
            Some(expect),
        ));
    }
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let good_gzip = gzip(&doc("gzip"));
    let mut bad_zlib = zlib(&doc("zlib"));
    let middle = bad_zlib.len() / 2;
    bad_zlib[middle] ^= 0xff;
    let mut wrong_adler = zlib(&doc("adler"));
    let last = wrong_adler.len() - 1;
    wrong_adler[last] ^= 0x01;
    let mut wrong_crc = gzip(&doc("crc"));
    let crc_at = wrong_crc.len() - 8;
    wrong_crc[crc_at] ^= 0x01;
    for (name, target, coding, body) in [
        ("garbage as deflate", SENDDATA, "deflate", garbage.clone()),
        ("garbage as gzip", SENDDATA, "gzip", garbage.clone()),
        ("garbage as gzip to sendfirmware", sendfw, "gzip", garbage.clone()),
        ("plain XML claimed as gzip", SENDDATA, "gzip", valid()),
        ("plain XML claimed as deflate", SENDDATA, "deflate", valid()),
        (
            "truncated gzip",
            SENDDATA,
            "gzip",
            good_gzip[..good_gzip.len() / 2].to_vec(),
        ),
        ("corrupt zlib", SENDDATA, "deflate", bad_zlib),
        ("zlib with a wrong Adler-32", SENDDATA, "deflate", wrong_adler),
        ("gzip with a wrong CRC", SENDDATA, "gzip", wrong_crc),
        ("gzip of malformed XML", SENDDATA, "gzip", gzip(b"<StationDataList>")),
        ("zlib of nothing", SENDDATA, "deflate", zlib(b"")),
        ("gzip of nothing to sendfirmware", sendfw, "gzip", gzip(b"")),
        (
            "raw deflate of a DOCTYPE",
            SENDDATA,
            "deflate",
            deflate(b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><StationDataList>&e;</StationDataList>"),
        ),
    ] {
        cases.push(case(
            format!("encoding: {name}"),
            post(target, &format!("Content-Encoding: {coding}\r\n"), &body),
            Some(400),
        ));
    }
    for coding in [
        "br",
        "compress",
        "x-compress",
        "zstd",
        "gzip, deflate",
        "identity, gzip",
        "gzip, gzip",
        "deflate;q=1",
        "*",
        "gzip\t,",
        "../../etc/passwd",
    ] {
        cases.push(case(
            format!("encoding: unknown {coding:?}"),
            post(
                SENDDATA,
                &format!("Content-Encoding: {coding}\r\n"),
                &valid(),
            ),
            Some(415),
        ));
        cases.push(case(
            format!("encoding: unknown {coding:?} to sendfirmware"),
            post(
                sendfw,
                &format!("Content-Encoding: {coding}\r\n"),
                b"firmware",
            ),
            Some(415),
        ));
    }
    cases.push(case(
        "encoding: two Content-Encoding headers",
        post(
            SENDDATA,
            "Content-Encoding: gzip\r\nContent-Encoding: deflate\r\n",
            &valid(),
        ),
        None,
    ));

    // 6. Headers: huge, numerous, malformed.
    cases.push(case(
        "headers: one 1 MiB header value",
        post(
            SENDDATA,
            &format!("X-Big: {}\r\n", "a".repeat(MIB)),
            &valid(),
        ),
        None,
    ));
    cases.push(case(
        "headers: 500 headers",
        post(
            SENDDATA,
            &(0..500).fold(String::new(), |mut s, i| {
                let _ = write!(s, "X-H{i}: {i}\r\n");
                s
            }),
            &valid(),
        ),
        Some(431),
    ));
    cases.push(case(
        "headers: a request line of 100 KB",
        post(
            &format!("{SENDDATA}&pad={}", "p".repeat(100 * 1024)),
            "",
            &valid(),
        ),
        Some(414),
    ));
    cases.push(case(
        "headers: a 100 KB path",
        get(&format!("/{}", "p/".repeat(50 * 1024))),
        Some(414),
    ));
    for (name, header) in [
        ("name with a space", "Bad Header: x\r\n"),
        ("no colon", "NoColon\r\n"),
        ("NUL in a value", "X-A: a\0b\r\n"),
        ("NUL in a name", "X\0A: b\r\n"),
        ("empty name", ": value\r\n"),
        ("obs-fold continuation", "X-A: a\r\n folded\r\n"),
        ("bare CR in a value", "X-A: a\rb\r\n"),
        ("DEL in a name", "X\x7fA: b\r\n"),
    ] {
        // The body is malformed too: were the header tolerated, still a 400.
        cases.push(case(
            format!("headers: {name}"),
            post(SENDDATA, header, b"<StationDataList>"),
            Some(400),
        ));
    }
    cases.push(case(
        "headers: Expect 100-continue with a malformed body",
        post(SENDDATA, "Expect: 100-continue\r\n", b"<StationDataList>"),
        Some(400),
    ));
    cases.push(case(
        "headers: bare LF line endings with a malformed body",
        raw(
            &format!(
                "POST {SENDDATA} HTTP/1.1\nHost: x\nContent-Length: 17\nConnection: close\n\n"
            ),
            b"<StationDataList>",
        ),
        Some(400),
    ));

    // 7. Framing: lying lengths, chunked tricks, broken request lines.
    let chunked_head = format!(
        "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut c = case(
        "framing: Content-Length larger than the body, then EOF",
        raw(
            &format!(
                "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
            ),
            &valid(),
        ),
        Some(400),
    );
    c.half_close = true;
    cases.push(c);
    cases.push(case(
        "framing: Content-Length larger than the body, then silence",
        raw(
            &format!(
                "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
            ),
            &valid(),
        ),
        Some(408),
    ));
    let c = case(
        "framing: Content-Length over the limit, body not sent",
        raw(
            &format!(
                "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                2 * MIB
            ),
            &valid(),
        ),
        Some(413),
    );
    cases.push(c);
    cases.push(case(
        "framing: Content-Length smaller than the body, garbage follows",
        raw(
            &format!("POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n"),
            b"<StationDataList></StationDataList>\r\nGARBAGE \x01\x02 /x HTTP/1.1\r\n\r\n",
        ),
        None,
    ));
    for (name, lengths) in [
        (
            "two different Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 17\r\n",
        ),
        (
            "two equal Content-Lengths",
            "Content-Length: 17\r\nContent-Length: 17\r\n",
        ),
        ("a Content-Length list", "Content-Length: 17, 5\r\n"),
        ("negative Content-Length", "Content-Length: -1\r\n"),
        ("Content-Length with a plus", "Content-Length: +17\r\n"),
        ("hexadecimal Content-Length", "Content-Length: 0x11\r\n"),
        ("Content-Length in words", "Content-Length: seventeen\r\n"),
        ("Content-Length 1e3", "Content-Length: 1e3\r\n"),
        (
            "Content-Length beyond u64",
            "Content-Length: 99999999999999999999999999\r\n",
        ),
        (
            "Content-Length u64::MAX",
            "Content-Length: 18446744073709551615\r\n",
        ),
        ("empty Content-Length", "Content-Length: \r\n"),
        (
            "Content-Length and Transfer-Encoding",
            "Content-Length: 17\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "Transfer-Encoding and Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        ),
    ] {
        // A body that is malformed XML however it is framed.
        cases.push(case(
            format!("framing: {name}"),
            raw(
                &format!(
                    "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\n{lengths}Connection: close\r\n\r\n"
                ),
                b"11\r\n<StationDataList>\r\n0\r\n\r\n",
            ),
            None,
        ));
    }
    for (name, body, half_close, expect) in [
        (
            "invalid chunk size",
            &b"zz\r\n<StationDataList/>\r\n0\r\n\r\n"[..],
            false,
            Some(400),
        ),
        (
            "negative chunk size",
            b"-5\r\nabcde\r\n0\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "chunk size with a plus",
            b"+5\r\nabcde\r\n0\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "chunk size beyond u64",
            b"fffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "chunk data longer than its size",
            b"2\r\nabcdef\r\n0\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "chunk without CRLF",
            b"5\r\nabcde0\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "unterminated chunk extension",
            b"5;ext=\"open\r\nabcde\r\n0\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "truncated chunk, then EOF",
            b"40\r\n<StationDataList>",
            true,
            Some(400),
        ),
        (
            "no last chunk, then EOF",
            b"11\r\n<StationDataList>\r\n",
            true,
            Some(400),
        ),
        (
            "malformed trailer",
            b"11\r\n<StationDataList>\r\n0\r\nBad Trailer\r\n\r\n",
            false,
            Some(400),
        ),
        (
            "chunked over the limit",
            &{
                let mut b = Vec::new();
                for _ in 0..3 {
                    b.extend_from_slice(format!("{:x}\r\n", MIB / 2).as_bytes());
                    b.extend_from_slice(&vec![b'x'; MIB / 2]);
                    b.extend_from_slice(b"\r\n");
                }
                b.extend_from_slice(b"0\r\n\r\n");
                b
            }[..],
            false,
            Some(413),
        ),
        (
            "ten thousand one-byte chunks of malformed XML",
            &{
                let mut b = Vec::new();
                for byte in b"<StationDataList>".iter().cycle().take(10_000) {
                    b.extend_from_slice(b"1\r\n");
                    b.push(*byte);
                    b.extend_from_slice(b"\r\n");
                }
                b.extend_from_slice(b"0\r\n\r\n");
                b
            }[..],
            false,
            Some(400),
        ),
    ] {
        let mut c = case(format!("chunked: {name}"), raw(&chunked_head, body), expect);
        c.half_close = half_close;
        cases.push(c);
    }
    cases.push(case(
        "chunked: a chunk that stalls",
        raw(&chunked_head, b"40\r\n<StationDataList>"),
        Some(408),
    ));
    for (name, coding) in [
        ("Transfer-Encoding gzip, chunked", "gzip, chunked"),
        ("Transfer-Encoding chunked, gzip", "chunked, gzip"),
        ("Transfer-Encoding identity", "identity"),
        ("Transfer-Encoding chunked twice", "chunked, chunked"),
        ("Transfer-Encoding unknown", "frobnicate"),
    ] {
        let c = case(
            format!("framing: {name}"),
            raw(
                &format!(
                    "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\nConnection: close\r\n\r\n"
                ),
                b"11\r\n<StationDataList>\r\n0\r\n\r\n",
            ),
            None,
        );
        cases.push(c);
    }
    cases.push(case(
        "framing: chunked in HTTP/1.0",
        raw(
            &format!("POST {SENDDATA} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            b"11\r\n<StationDataList>\r\n0\r\n\r\n",
        ),
        None,
    ));
    for (name, line) in [
        (
            "NUL in the path",
            "POST /ott/\0?stationid=1&action=senddata HTTP/1.1",
        ),
        (
            "NUL in the query",
            "POST /ott/?stationid=1\0&action=senddata HTTP/1.1",
        ),
        (
            "NUL in the method",
            "PO\0ST /ott/?stationid=1&action=senddata HTTP/1.1",
        ),
        (
            "NUL in the version",
            "POST /ott/?stationid=1&action=senddata HTTP/1.1\0",
        ),
        (
            "space in the query",
            "POST /ott/?stationid=a b&action=senddata HTTP/1.1",
        ),
        (
            "two spaces",
            "POST  /ott/?stationid=1&action=senddata HTTP/1.1",
        ),
        (
            "tab separators",
            "POST\t/ott/?stationid=1&action=senddata\tHTTP/1.1",
        ),
        ("no target", "POST HTTP/1.1"),
        ("no version", "POST /ott/?stationid=1&action=senddata"),
        (
            "HTTP/2.0",
            "POST /ott/?stationid=1&action=senddata HTTP/2.0",
        ),
        (
            "HTTP/1.2",
            "POST /ott/?stationid=1&action=senddata HTTP/1.2",
        ),
        ("HTTP/3", "POST /ott/?stationid=1&action=senddata HTTP/3"),
        (
            "lower-case version",
            "POST /ott/?stationid=1&action=senddata http/1.1",
        ),
        (
            "fragment",
            "POST /ott/?stationid=1&action=senddata#x HTTP/1.1",
        ),
        (
            "raw non-ASCII",
            "POST /ott/?stationid=\u{e9}&action=senddata HTTP/1.1",
        ),
        (
            "empty method",
            " /ott/?stationid=1&action=senddata HTTP/1.1",
        ),
        (
            "absolute-form to a file URL",
            "GET file:///etc/passwd HTTP/1.1",
        ),
        (
            "absolute-form with dot segments",
            "GET http://localhost/../../etc/passwd?stationid=1&action=getfirmware HTTP/1.1",
        ),
        ("HTTP/0.9 request", "GET /ping"),
    ] {
        cases.push(case(
            format!("request line: {name}"),
            raw(
                &format!("{line}\r\nHost: x\r\nContent-Length: 17\r\nConnection: close\r\n\r\n"),
                b"<StationDataList>",
            ),
            None,
        ));
    }
    for (name, bytes) in [
        (
            "not HTTP at all",
            &b"\x00\x01\x02 not http at all\r\n\r\n"[..],
        ),
        (
            "TLS client hello",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03\r\n\r\n",
        ),
        (
            "HTTP/2 prior-knowledge preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
        (
            "only a request line, then EOF",
            b"POST /ott/?stationid=1&action=senddata HTTP/1.1\r\n",
        ),
    ] {
        let mut c = case(format!("framing: {name}"), bytes.to_vec(), None);
        c.half_close = name.ends_with("then EOF");
        cases.push(c);
    }
    cases
}

/// Sends one case on a fresh connection; returns everything the server sent
/// until it closed (a reset after data counts as closed).
async fn exchange(socket: &Path, case: &Case) -> Vec<u8> {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let send = async {
        // The server may stop reading and close: a failed write is fine.
        if write.write_all(&case.request).await.is_ok() && case.half_close {
            let _ = write.shutdown().await;
        }
    };
    let receive = async {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        answer
    };
    let ((), answer) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(send, receive)
    })
    .await
    .unwrap_or_else(|_| panic!("{}: neither answered nor closed within 20 s", case.name));
    drop(write);
    answer
}

/// The final statuses of the HTTP/1 responses in `answer` (1xx left out).
fn statuses(answer: &[u8]) -> Result<Vec<u16>, String> {
    let mut rest = answer;
    let mut found = Vec::new();
    while !rest.is_empty() {
        if !rest.starts_with(b"HTTP/1.") {
            return Err(format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(rest)
            ));
        }
        let end = common::find(rest, b"\r\n\r\n").ok_or("a response head without its end")?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        let length = if (100..200).contains(&status) {
            0
        } else {
            length.unwrap_or(rest.len() - end - 4)
        };
        let next = (end + 4 + length).min(rest.len());
        rest = &rest[next..];
        if !(100..200).contains(&status) {
            found.push(status);
        }
    }
    Ok(found)
}

/// Every entry below `dir` but `skip`: kind, size and mtime.
fn snapshot(dir: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, (bool, u64, Option<SystemTime>)> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if skip.contains(&path.as_path()) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            entries.insert(path, (meta.is_dir(), meta.len(), meta.modified().ok()));
        }
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_hostile_requests_is_refused_with_4xx_and_writes_nothing_outside() {
    let bombs = tokio::task::spawn_blocking(bombs);
    let server = TestServer::start_with(|c| {
        c.max_body_bytes = MIB as u64;
        c.max_upload_bytes = 2 * MIB as u64;
        c.header_read_timeout_secs = 5;
        c.body_read_timeout_secs = 2;
        let dir = c.socket.parent().expect("socket in the tempdir");
        c.downloads_dir = dir.join("downloads");
    })
    .await;
    // A published file, a secret beside the downloads, a link pointing at it.
    let root = server.dir.path();
    std::fs::create_dir_all(root.join("downloads/fw")).expect("mkdir");
    std::fs::write(root.join("downloads/fw/netdl.bin"), b"image").expect("write");
    std::fs::write(root.join("secret"), b"outside").expect("write");
    std::os::unix::fs::symlink(root.join("secret"), root.join("downloads/link")).expect("link");
    assert_eq!(
        server
            .get(&format!(
                "/fw/netdl.bin?stationid={STATION}&action=getfirmware"
            ))
            .await
            .status,
        200,
        "the published file itself is served"
    );

    let corpus = corpus(&bombs.await.expect("bombs"));
    let names: BTreeSet<&str> = corpus.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), corpus.len(), "case names are unique");
    for (name, _) in MAY_CLOSE_WITHOUT_ANSWER {
        assert!(names.contains(name), "allow-listed case {name:?} exists");
    }
    let before = snapshot(root, &[&server.data, &server.state_dir]);

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut closed = Vec::new();
    let mut failures = Vec::new();
    for case in &corpus {
        let answer = exchange(&server.socket, case).await;
        match statuses(&answer) {
            Ok(found) if found.is_empty() => {
                if MAY_CLOSE_WITHOUT_ANSWER
                    .iter()
                    .any(|(n, _)| *n == case.name)
                {
                    closed.push(case.name.as_str());
                } else {
                    failures.push(format!("{}: closed without an answer", case.name));
                }
            }
            Ok(found) => {
                for status in &found {
                    *by_status.entry(*status).or_default() += 1;
                }
                let head = String::from_utf8_lossy(&answer[..answer.len().min(300)]).into_owned();
                if !found.iter().all(|s| (400..500).contains(s)) {
                    failures.push(format!("{}: answered {found:?}: {head:?}", case.name));
                } else if let Some(expect) = case.expect
                    && found.first() != Some(&expect)
                {
                    failures.push(format!(
                        "{}: answered {found:?}, expected {expect}: {head:?}",
                        case.name
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
        let ping = server.get("/ping").await;
        assert_eq!(ping.status, 200, "service up after {}", case.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases misbehaved:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );

    let after = snapshot(root, &[&server.data, &server.state_dir]);
    assert_eq!(
        after, before,
        "nothing written outside the data and state directories"
    );
    let stray: Vec<PathBuf> = files_under(&server.data);
    assert!(stray.is_empty(), "archived although hostile: {stray:?}");
    let kept = files_under(&server.state_dir.join(dlsrv::layout::REJECTED))
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "reason"))
        .count();
    println!(
        "hostile corpus: {} requests, answers {by_status:?}, closed without an answer {} ({closed:?}), \
         rejected bodies kept {kept}, nothing archived, nothing written outside data/ and state/, service up throughout",
        corpus.len(),
        closed.len()
    );
    assert!(corpus.len() >= 200, "corpus of {} requests", corpus.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_are_cut_at_the_header_timeout_without_delaying_anyone() {
    let server = Arc::new(TestServer::start_with(|c| c.header_read_timeout_secs = 1).await);
    let slow = UnixStream::connect(&server.socket).await.expect("connect");
    let started = Instant::now();
    let slow_task = tokio::spawn(async move {
        let (mut read, mut write) = slow.into_split();
        let header = format!(
            "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "p".repeat(100)
        );
        let trickle = async {
            for byte in header.bytes() {
                if write.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let closed = async {
            let mut buf = [0u8; 256];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {} // whatever it says, we wait for the close
                }
            }
        };
        tokio::select! {
            () = closed => {}
            () = trickle => {}
        }
        started.elapsed()
    });

    let mut times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let reply = server.post(SENDDATA, &doc(&format!("fast {i}"))).await;
        let took = t.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.text());
        times.push(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slowest = times.iter().max().copied().unwrap_or_default();
    let cut_after = tokio::time::timeout(Duration::from_secs(10), slow_task)
        .await
        .expect("the slow connection is cut")
        .expect("slow task");
    println!("byte-a-time header cut after {cut_after:?}; 20 POSTs meanwhile, slowest {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "every POST within 500 ms: {times:?}"
    );
    assert!(
        cut_after < Duration::from_millis(2500),
        "cut within ~2.5 s of its start, took {cut_after:?}"
    );
    assert_eq!(server.stored_files().len(), 20);
}
