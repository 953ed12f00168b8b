//! Reading OTT-ML documents just enough: are they well-formed, is the root
//! the expected one, which `stationId` do they name, which `Ack`s and
//! `ackId`s do they carry.
//!
//! Real-world shapes pass: no XML declaration; `utf-8`, `iso-8859-1` or no
//! encoding declared; raw ISO-8859-1 bytes such as 0xB0; character
//! references such as `&#176;`; unknown attributes and elements. Nothing is
//! ever expanded from a DTD: a document with a `<!DOCTYPE` is refused, and
//! an entity other than the five predefined ones is an error.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// What the checks found in a well-formed document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub root: String,
    /// `stationId` of the root or of its `StationData`/`StationCommands` children.
    pub station_ids: Vec<String>,
    /// Every `ackId` attribute, on any element (commands and queries carry them).
    pub ack_ids: Vec<String>,
    /// The `Ack` elements of a Response.
    pub acks: Vec<Ack>,
}

/// One acknowledged command: `<Ack ackId="101" status="FAIL">reason</Ack>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub ack_id: String,
    pub status: String,
    pub reason: String,
}

impl Ack {
    pub fn is_ok(&self) -> bool {
        self.status.eq_ignore_ascii_case("OK")
    }
}

/// Checks `body` is well-formed with root element `root`.
pub fn check(body: &[u8], root: &str) -> Result<Summary, String> {
    let summary = inspect(body)?;
    if summary.root != root {
        return Err(format!(
            "root element is <{}>, expected <{root}>",
            summary.root
        ));
    }
    Ok(summary)
}

/// Checks `body` is well-formed XML and summarises it.
///
/// The parser reads text: a body that is not UTF-8 is read as ISO-8859-1,
/// byte for byte. Markup is ASCII in both, so the structure checked is the
/// structure of the bytes; whatever the declaration says, raw ISO-8859-1
/// bytes never make a document malformed.
pub fn inspect(body: &[u8]) -> Result<Summary, String> {
    let body = text(body);
    let mut reader = Reader::from_str(&body);
    reader.config_mut().check_comments = true;
    let mut summary = Summary::default();
    let mut open: Vec<String> = Vec::new();
    let mut first = true;
    let mut in_ack: Option<Ack> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} (near byte {})", reader.error_position()))?;
        let is_first = std::mem::replace(&mut first, false);
        match event {
            Event::Decl(_) if !is_first => return Err("XML declaration not at the start".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::DocType(_) => {
                return Err("a DOCTYPE is not accepted (no DTDs, no entities)".into());
            }
            Event::Start(e) | Event::Empty(e) if open.is_empty() && !summary.root.is_empty() => {
                return Err(format!("a second root element <{}>", name(&e)));
            }
            Event::Start(e) => {
                let ack = element(&e, &open, &mut summary)?;
                if ack.is_some() {
                    in_ack = ack;
                }
                open.push(name(&e));
            }
            Event::Empty(e) => {
                if let Some(ack) = element(&e, &open, &mut summary)? {
                    summary.acks.push(ack);
                }
            }
            Event::End(e) => {
                let closed = open.pop();
                if closed.as_deref() == Some("Ack")
                    && let Some(mut ack) = in_ack.take()
                {
                    ack.reason = ack.reason.trim().to_owned();
                    summary.acks.push(ack);
                }
                if closed.is_none() {
                    return Err(format!("unexpected </{}>", e.name().as_ref()));
                }
            }
            Event::Text(t) => {
                if open.is_empty() && !t.chars().all(char::is_whitespace) {
                    return Err("text outside the root element".into());
                }
                if let Some(ack) = &mut in_ack {
                    ack.reason.push_str(&t);
                }
            }
            Event::CData(c) => {
                if open.is_empty() {
                    return Err("CDATA outside the root element".into());
                }
                if let Some(ack) = &mut in_ack {
                    ack.reason.push_str(&c);
                }
            }
            Event::GeneralRef(r) => {
                if open.is_empty() {
                    return Err("a reference outside the root element".into());
                }
                let resolved = resolve(&r)?;
                if let Some(ack) = &mut in_ack {
                    ack.reason.push(resolved);
                }
            }
            Event::Eof => break,
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(format!("<{unclosed}> is not closed"));
    }
    if summary.root.is_empty() {
        return Err("no root element".into());
    }
    Ok(summary)
}

/// Records what a start tag tells; returns the `Ack` it opens, if it is one.
fn element(
    e: &BytesStart<'_>,
    open: &[String],
    summary: &mut Summary,
) -> Result<Option<Ack>, String> {
    let tag = name(e);
    if open.is_empty() {
        summary.root = tag.clone();
    }
    let mut station = None;
    let mut ack_id = None;
    let mut status = None;
    let mut attributes = e.attributes();
    attributes.with_checks(true);
    for attr in attributes {
        let attr = attr.map_err(|err| format!("bad attribute in <{tag}>: {err}"))?;
        let value = attribute_value(&attr.value)?;
        match attr.key.as_ref() {
            "stationId" => station = Some(value),
            "ackId" => ack_id = Some(value),
            "status" => status = Some(value),
            _ => {}
        }
    }
    let names_station =
        open.is_empty() || matches!(tag.as_str(), "StationData" | "StationCommands");
    if let (true, Some(station)) = (names_station, station) {
        summary.station_ids.push(station);
    }
    if let Some(id) = &ack_id {
        summary.ack_ids.push(id.clone());
    }
    if tag == "Ack" {
        return Ok(Some(Ack {
            ack_id: ack_id.unwrap_or_default(),
            status: status.unwrap_or_default(),
            reason: String::new(),
        }));
    }
    Ok(None)
}

fn name(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_owned()
}

/// Text as the log shows it: UTF-8 if it is, ISO-8859-1 otherwise.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// An attribute value with its references resolved; only the predefined
/// entities and character references exist.
fn attribute_value(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after
            .find(';')
            .ok_or("an '&' without ';' in an attribute")?;
        out.push(resolve(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str) -> Result<char, String> {
    let number = |digits: &str, radix| {
        u32::from_str_radix(digits, radix)
            .ok()
            .and_then(char::from_u32)
            .filter(|c| *c != '\0')
            .ok_or_else(|| format!("invalid character reference &{reference};"))
    };
    match reference {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        r if r.starts_with("#x") => number(&r[2..], 16),
        r if r.starts_with('#') => number(&r[1..], 10),
        _ => Err(format!("undefined entity &{reference};")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn real_world_shapes_pass() {
        let cases: &[&[u8]] = &[
            b"<StationDataList><StationData stationId=\"1\"/></StationDataList>",
            b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<StationDataList><StationData stationId=\"1\"><ChannelData unit=\"\xb0C\" name=\"Temp \xb0\">12 \xb0C</ChannelData></StationData></StationDataList>",
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?><StationDataList><StationData stationId=\"1\" name=\"&#176;C &#xB0;\">a &amp; b &#176;</StationData></StationDataList>\n",
            b"<?xml version=\"1.0\"?>\r\n<StationDataList   extra = \"x\" ><Unknown><Deeper a='1'/></Unknown><StationData\n stationId=\"1\"\n/></StationDataList  >",
            b"<!-- before --><StationDataList/><!-- after -->\n",
        ];
        for doc in cases {
            let s = check(doc, "StationDataList").unwrap_or_else(|e| panic!("{e}: {}", text(doc)));
            assert_eq!(s.root, "StationDataList");
        }
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "no root"),
            (b"   \n", "no root"),
            (b"not xml at all", "outside the root"),
            (b"<StationDataList>", "not closed"),
            (b"<StationDataList><A></B></StationDataList>", ""),
            (
                b"<StationDataList></StationDataList><StationDataList/>",
                "second root",
            ),
            (b"<StationDataList a=\"1\" a=\"2\"/>", "attribute"),
            (b"<StationDataList a=1/>", "attribute"),
            (
                b"<StationDataList>&bomb;</StationDataList>",
                "undefined entity",
            ),
            (b"<StationDataList a=\"&bomb;\"/>", "undefined entity"),
            (
                b"<StationDataList>&#0;</StationDataList>",
                "invalid character reference",
            ),
            (
                b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><StationDataList>&a;</StationDataList>",
                "DOCTYPE",
            ),
            (b"<StationDataList/>trailing", "outside the root"),
            (b"<StationDataList><!-- a -- b --></StationDataList>", ""),
        ];
        for (doc, why) in cases {
            let err = inspect(doc).expect_err(&text(doc));
            assert!(err.contains(why), "{:?}: {err}", text(doc));
        }
    }

    #[test]
    fn wrong_root_is_named() {
        let err = check(b"<AlarmMessage/>", "StationDataList").expect_err("wrong root");
        assert_eq!(
            err,
            "root element is <AlarmMessage>, expected <StationDataList>"
        );
    }

    #[test]
    fn station_ids_and_acks_are_read() {
        let s = inspect(b"<Response stationId=\"0000452891\"><Ack ackId=\"101\" status=\"OK\"/><Ack ackId=\"102\" status=\"FAIL\"> sensor \xb0 &lt;missing&gt; </Ack></Response>")
            .expect("valid");
        assert_eq!(s.station_ids, vec!["0000452891"]);
        assert_eq!(s.acks.len(), 2);
        assert!(s.acks[0].is_ok());
        assert_eq!(s.acks[1].ack_id, "102");
        assert!(!s.acks[1].is_ok());
        assert_eq!(s.acks[1].reason, "sensor \u{b0} <missing>");
        let data = inspect(b"<StationDataList><StationData stationId=\"A\"/><StationData stationId=\"B\"/></StationDataList>").expect("valid");
        assert_eq!(data.station_ids, vec!["A", "B"]);
        let cmd = inspect(b"<CommandList><StationCommands stationId=\"S\"><Logging ackId=\"7\"/></StationCommands></CommandList>").expect("valid");
        assert_eq!(
            (cmd.station_ids, cmd.ack_ids),
            (vec!["S".to_owned()], vec!["7".to_owned()])
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = inspect(&body);
        }

        #[test]
        fn never_panics_on_xml_like_text(body in "(<[A-Za-z]{1,3}( [a-z]=\"[^\"]{0,4}\")?/?>|</[A-Za-z]{1,3}>|&[a-z#0-9]{0,4};?|[a-z \u{b0}]{0,5}){0,12}") {
            let _ = inspect(body.as_bytes());
        }
    }
}
