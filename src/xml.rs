//! Reading OTT-ML documents just enough, in one pass: are they well-formed,
//! is the root the expected one, which `stationId` do they name, which `Ack`s
//! and `ackId`s do they carry.
//!
//! Real-world shapes pass: no XML declaration; `utf-8`, `iso-8859-1` or no
//! encoding declared; raw ISO-8859-1 bytes such as 0xB0; character
//! references such as `&#176;`; unknown attributes and elements. Nothing is
//! ever expanded from a DTD: a document with a `<!DOCTYPE` is refused, and
//! an entity other than the five predefined ones is an error.
//!
//! Cost matters here: every stored message passes, so the check is one
//! scan of the bytes that allocates nothing per element (see
//! [`inspect_with`] for why it is not quick-xml's event reader). Only the
//! values kept (station ids, acks) are decoded, per the document's declared
//! encoding, and their references resolved by quick-xml's own unescaping.

use std::borrow::Cow;

use crate::summary::{Collector, Summary, Val};

/// Bounds on the shape of a document, each refused with a clear reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Elements open at once.
    pub(crate) max_depth: usize,
    /// Attributes of one element.
    pub(crate) max_attributes: usize,
    /// `StationData`, `StationCommands`, `ChannelData` and `Ack` elements
    /// together; also the number of `ackId` attributes.
    pub(crate) max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_attributes: 64,
            // A netDL sends one StationData per message and a few commands
            // per CommandList: a thousand is a wide margin.
            max_items: 1_000,
        }
    }
}

/// What the check found in a well-formed document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Document {
    pub(crate) root: String,
    /// `stationId` of the root or of its `StationData`/`StationCommands` children.
    pub(crate) station_ids: Vec<String>,
    /// Every `ackId` attribute, on any element (commands and queries carry them).
    pub(crate) ack_ids: Vec<String>,
    /// The `Ack` elements of a Response.
    pub(crate) acks: Vec<Ack>,
    /// What the catalog keeps of a data message or an alarm.
    pub(crate) summary: Summary,
}

/// One acknowledged command: `<Ack ackId="101" status="FAIL">reason</Ack>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) ack_id: String,
    pub(crate) status: String,
    pub(crate) reason: String,
}

impl Ack {
    pub(crate) fn is_ok(&self) -> bool {
        self.status.eq_ignore_ascii_case("OK")
    }
}

/// Checks `body` is well-formed with root element `root`.
pub(crate) fn check(body: &[u8], root: &str, limits: &Limits) -> Result<Document, String> {
    let document = inspect_with(body, limits)?;
    if document.root != root {
        return Err(format!(
            "root element is <{}>, expected <{root}>",
            document.root
        ));
    }
    Ok(document)
}

/// Checks `body` is well-formed XML and summarises it, with the default limits.
pub(crate) fn inspect(body: &[u8]) -> Result<Document, String> {
    inspect_with(body, &Limits::default())
}

/// The body as text, decoded per its declaration: ISO-8859-1 when it says
/// so (or is not valid UTF-8), else UTF-8. Markup is ASCII in both, so the
/// structure checked is the structure of the bytes.
pub(crate) fn text(body: &[u8]) -> Cow<'_, str> {
    if body.is_ascii() {
        // ASCII reads the same in every encoding a logger declares.
        return Cow::Borrowed(std::str::from_utf8(body).unwrap_or_default());
    }
    if !declares_latin1(body)
        && let Ok(s) = std::str::from_utf8(body)
    {
        return Cow::Borrowed(s);
    }
    Cow::Owned(latin1(body))
}

/// ISO-8859-1 to UTF-8: ASCII blocks are copied whole (the usual message
/// has a handful of other bytes), each other byte becomes its code point.
fn latin1(body: &[u8]) -> String {
    let mut out = Vec::with_capacity(body.len() + 64);
    for block in body.chunks(64) {
        if block.is_ascii() {
            out.extend_from_slice(block);
            continue;
        }
        for &b in block {
            if b.is_ascii() {
                out.push(b);
            } else {
                out.extend_from_slice(&[0xC0 | (b >> 6), 0x80 | (b & 0x3F)]);
            }
        }
    }
    // Valid by construction; the lossy path is never taken.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// True when the XML declaration names ISO-8859-1 (or its aliases).
fn declares_latin1(body: &[u8]) -> bool {
    let Some(head) = body.strip_prefix(b"<?xml") else {
        return false;
    };
    let head = &head[..head.len().min(200)];
    let Some(end) = head.windows(2).position(|w| w == b"?>") else {
        return false;
    };
    let decl = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let Some(at) = decl.find("encoding") else {
        return false;
    };
    let value = decl[at + 8..]
        .trim_start_matches([' ', '=', '"', '\''])
        .split(['"', '\''])
        .next()
        .unwrap_or("");
    matches!(
        value.trim(),
        "iso-8859-1"
            | "iso8859-1"
            | "latin1"
            | "latin-1"
            | "l1"
            | "iso_8859-1"
            | "windows-1252"
            | "cp1252"
    )
}

/// Checks well-formedness and collects the [`Document`], in one pass over
/// the bytes.
///
/// A scanner of its own rather than quick-xml's event reader: quick-xml
/// validates UTF-8 per event and parses every attribute through an
/// iterator, about 100 µs for a 44 KB message (a quarter of a store's CPU);
/// this does the same checks on the bytes in a fraction of that, and
/// ISO-8859-1 needs no conversion (markup is ASCII). What it keeps is
/// unescaped by quick-xml ([`quick_xml::escape::unescape`]). Tests check it
/// against quick-xml, document by document (`oracle`).
fn inspect_with(body: &[u8], limits: &Limits) -> Result<Document, String> {
    // The encoding is the document's: ISO-8859-1 when declared so or when
    // the bytes are not UTF-8 (a quick look when they are ASCII).
    let latin1 = !body.is_ascii() && (declares_latin1(body) || std::str::from_utf8(body).is_err());
    let mut s = Scanner {
        b: body,
        pos: 0,
        latin1,
    };
    let mut doc = Document::default();
    let mut open: Vec<(usize, usize)> = Vec::with_capacity(16); // name ranges of the open elements
    let mut items = 0usize;
    let mut in_ack: Option<(usize, Ack, Vec<u8>)> = None; // depth, ack, raw reason
    let mut collector = Collector::default();
    // A UTF-8 byte-order mark may lead.
    if s.b.starts_with(b"\xef\xbb\xbf") {
        s.pos = 3;
    }
    let start = s.pos;
    loop {
        // Text up to the next markup; its references checked on the way.
        let mut next = None;
        let mut at = s.pos;
        while let Some(i) = memchr::memchr2(b'<', b'&', &s.b[at..]) {
            if s.b[at + i] == b'<' {
                next = Some(at + i);
                break;
            }
            at = s.check_reference(at + i)?;
        }
        let end = next.unwrap_or(s.b.len());
        let text = &s.b[s.pos..end];
        if open.is_empty() {
            // White space in Unicode's sense, as the service always took it.
            if !text.iter().all(|&c| is_space(c))
                && !s.decode_plain(text).chars().all(char::is_whitespace)
            {
                return Err(s.error_at(s.pos, "text outside the root element"));
            }
        } else {
            if let Some((_, _, reason)) = &mut in_ack {
                reason.extend_from_slice(text);
            }
            if collector.wants_text() && !text.is_empty() {
                let blank = text.iter().all(|&c| is_space(c));
                collector.text(Val::Raw(s.pos, end), blank, &|v| s.decode_val(v))?;
            }
        }
        let Some(lt) = next else { break };
        s.pos = lt;
        let rest = &s.b[lt..];
        if rest.starts_with(b"<?") {
            let close = s
                .find(lt + 2, b"?>")
                .ok_or_else(|| s.error_at(lt, "a processing instruction is not closed"))?;
            let target_end = s.b[lt + 2..close]
                .iter()
                .position(|&c| is_space(c))
                .map_or(close, |i| lt + 2 + i);
            if &s.b[lt + 2..target_end] == b"xml" && lt != start {
                return Err(s.error_at(lt, "XML declaration not at the start"));
            }
            s.pos = close + 2;
        } else if rest.starts_with(b"<!--") {
            let close = s
                .find(lt + 4, b"-->")
                .ok_or_else(|| s.error_at(lt, "a comment is not closed"))?;
            if s.find_in(lt + 4, close, b"--").is_some() || s.b[lt + 4..close].ends_with(b"-") {
                return Err(s.error_at(lt, "a comment contains \"--\""));
            }
            s.pos = close + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            if open.is_empty() {
                return Err(s.error_at(lt, "CDATA outside the root element"));
            }
            let close = s
                .find(lt + 9, b"]]>")
                .ok_or_else(|| s.error_at(lt, "a CDATA section is not closed"))?;
            if collector.wants_text() {
                // Literal: no references to resolve.
                let cdata = s.decode_plain(&s.b[lt + 9..close]).into_owned();
                let cdata = collector.own(cdata);
                collector.text(cdata, false, &|v| s.decode_val(v))?;
            }
            if let Some((_, _, reason)) = &mut in_ack {
                // CDATA is literal: escape what unescaping would change.
                for &c in &s.b[lt + 9..close] {
                    match c {
                        b'&' => reason.extend_from_slice(b"&amp;"),
                        _ => reason.push(c),
                    }
                }
            }
            s.pos = close + 3;
        } else if rest.starts_with(b"<!DOCTYPE") {
            return Err(s.error_at(lt, "a DOCTYPE is not accepted (no DTDs, no entities)"));
        } else if rest.starts_with(b"<!") {
            return Err(s.error_at(lt, "unknown markup <!"));
        } else if rest.starts_with(b"</") {
            let name_start = lt + 2;
            let name_end = s.name_end(name_start);
            let Some(&(open_start, open_len)) = open.last() else {
                return Err(s.error_at(
                    lt,
                    &format!("unexpected </{}>", s.str_of(name_start, name_end)),
                ));
            };
            if s.b[name_start..name_end] != s.b[open_start..open_start + open_len] {
                return Err(s.error_at(
                    lt,
                    &format!(
                        "</{}> closes <{}>",
                        s.str_of(name_start, name_end),
                        s.str_of(open_start, open_start + open_len)
                    ),
                ));
            }
            let mut p = s.skip_space(name_end);
            if s.b.get(p) != Some(&b'>') {
                return Err(s.error_at(p, "bad end tag"));
            }
            p += 1;
            let depth = open.len();
            open.pop();
            collector.end(depth);
            if in_ack.as_ref().is_some_and(|(d, _, _)| *d == depth)
                && let Some((_, mut ack, reason)) = in_ack.take()
            {
                ack.reason = s.decode(&reason)?.trim().to_owned();
                doc.acks.push(ack);
            }
            s.pos = p;
        } else {
            // A start tag or an empty element.
            let name_start = lt + 1;
            let name_end = s.name_end(name_start);
            if name_end == name_start {
                return Err(s.error_at(lt, "a '<' that starts no tag"));
            }
            if open.is_empty() && !doc.root.is_empty() {
                return Err(s.error_at(
                    lt,
                    &format!("a second root element <{}>", s.str_of(name_start, name_end)),
                ));
            }
            let depth = open.len() + 1;
            if depth > limits.max_depth {
                return Err(s.error_at(
                    lt,
                    &format!("elements nested deeper than {} levels", limits.max_depth),
                ));
            }
            let tag = &s.b[name_start..name_end];
            if depth == 1 {
                doc.root = s.decode_plain(tag).into_owned();
            }
            let is_ack = tag == b"Ack";
            let names_item = matches!(tag, b"StationData" | b"StationCommands");
            if is_ack || names_item || tag == b"ChannelData" {
                items += 1;
                if items > limits.max_items {
                    return Err(s.error_at(
                        lt,
                        &format!(
                            "more than {} StationData, StationCommands, ChannelData and Ack elements",
                            limits.max_items
                        ),
                    ));
                }
            }
            // The attributes the summary wants of this element, as ranges:
            // (which of `wanted`, from, to).
            // A data value (hundreds per message) takes a short path: its
            // `t` is noted as present, its `errorcode` kept as a range.
            let value = collector.takes_value(depth, tag);
            let (mut has_t, mut code) = (false, None);
            let wanted = if value {
                &[]
            } else {
                collector.wanted(depth, tag)
            };
            let mut captured: [(usize, usize, usize); 9] = [(0, 0, 0); 9];
            let mut n_captured = 0usize;
            let mut keys: [(usize, usize); 8] = [(0, 0); 8];
            let mut more_keys: Vec<(usize, usize)> = Vec::new();
            let mut count = 0usize;
            let (mut station, mut ack_id, mut status) = (None, None, None);
            let mut p = name_end;
            // quick-xml (and so the service before) accepts attributes not
            // parted by white space after a quoted value; so does this.
            let mut after_value = false;
            let empty = loop {
                let after_space = s.skip_space(p);
                match s.b.get(after_space) {
                    Some(b'>') => {
                        p = after_space + 1;
                        break false;
                    }
                    Some(b'/') if s.b.get(after_space + 1) == Some(&b'>') => {
                        p = after_space + 2;
                        break true;
                    }
                    None => {
                        return Err(s.error_at(
                            lt,
                            &format!("<{}> is not closed", s.str_of(name_start, name_end)),
                        ));
                    }
                    Some(_) if after_space == p && !after_value => {
                        return Err(s.error_at(
                            p,
                            &format!("bad attribute in <{}>", s.str_of(name_start, name_end)),
                        ));
                    }
                    Some(_) => {}
                }
                // name = "value" or 'value'
                let key_start = after_space;
                let key_end = s.name_end(key_start);
                let bad = |s: &Scanner<'_>, at| {
                    s.error_at(
                        at,
                        &format!("bad attribute in <{}>", s.str_of(name_start, name_end)),
                    )
                };
                if key_end == key_start {
                    return Err(bad(&s, key_start));
                }
                let eq = s.skip_space(key_end);
                if s.b.get(eq) != Some(&b'=') {
                    return Err(bad(&s, eq));
                }
                let q = s.skip_space(eq + 1);
                let quote = match s.b.get(q) {
                    Some(&c @ (b'"' | b'\'')) => c,
                    _ => return Err(bad(&s, q)),
                };
                let mut has_reference = false;
                let mut from = q + 1;
                let value_end = loop {
                    match memchr::memchr3(quote, b'<', b'&', &s.b[from..]).map(|i| from + i) {
                        Some(i) if s.b[i] == quote => break i,
                        Some(i) if s.b[i] == b'&' => {
                            has_reference = true;
                            from = i + 1;
                        }
                        _ => return Err(bad(&s, q)),
                    }
                };
                if has_reference {
                    s.check_references(q + 1, value_end)?;
                }
                count += 1;
                if count > limits.max_attributes {
                    return Err(s.error_at(
                        key_start,
                        &format!(
                            "<{}> has more than {} attributes",
                            s.str_of(name_start, name_end),
                            limits.max_attributes
                        ),
                    ));
                }
                let key = (key_start, key_end - key_start);
                if count == keys.len() + 1 {
                    more_keys.extend_from_slice(&keys);
                }
                let earlier: &[(usize, usize)] = if count <= keys.len() {
                    &keys[..count - 1]
                } else {
                    &more_keys
                };
                if earlier
                    .iter()
                    .any(|&(st, len)| s.b[st..st + len] == s.b[key_start..key_end])
                {
                    return Err(s.error_at(
                        key_start,
                        &format!(
                            "bad attribute in <{}>: {} given twice",
                            s.str_of(name_start, name_end),
                            s.str_of(key_start, key_end)
                        ),
                    ));
                }
                if count <= keys.len() {
                    keys[count - 1] = key;
                } else {
                    more_keys.push(key);
                }
                let slot = match &s.b[key_start..key_end] {
                    b"stationId" => Some(&mut station),
                    b"ackId" => Some(&mut ack_id),
                    b"status" => Some(&mut status),
                    _ => None,
                };
                if let Some(slot) = slot {
                    *slot = Some(s.decode(&s.b[q + 1..value_end])?);
                }
                if value {
                    match &s.b[key_start..key_end] {
                        b"t" => has_t = true,
                        b"errorcode" => code = Some((q + 1, value_end)),
                        _ => {}
                    }
                } else if !wanted.is_empty()
                    && let Some(which) = wanted.iter().position(|w| *w == &s.b[key_start..key_end])
                    && n_captured < captured.len()
                {
                    captured[n_captured] = (which, q + 1, value_end);
                    n_captured += 1;
                }
                p = value_end + 1;
                after_value = true;
            };
            if let (true, Some(station)) = (depth == 1 || names_item, station) {
                doc.station_ids.push(station);
            }
            if let Some(id) = &ack_id {
                doc.ack_ids.push(id.clone());
                if doc.ack_ids.len() > limits.max_items {
                    return Err(s.error_at(
                        lt,
                        &format!("more than {} ackId attributes", limits.max_items),
                    ));
                }
            }
            if value {
                // The element's place only, read again at the end if the
                // value is kept; the error code now (rare).
                collector.scanned_value(depth, lt, has_t, code, empty, &|v| s.decode_val(v))?;
            } else if collector.follows(depth, tag) {
                let decode = |v: &Val| s.decode_val(v);
                {
                    let attrs_iter = captured[..n_captured]
                        .iter()
                        .map(|&(which, from, to)| (wanted[which], Val::Raw(from, to)));
                    let mut attrs: Vec<(&'static [u8], Val)> = attrs_iter.collect();
                    collector.start(depth, tag, &mut attrs, empty, &decode)?;
                }
            }
            if is_ack {
                let ack = Ack {
                    ack_id: ack_id.unwrap_or_default(),
                    status: status.unwrap_or_default(),
                    reason: String::new(),
                };
                if empty {
                    doc.acks.push(ack);
                } else {
                    in_ack = Some((depth, ack, Vec::new()));
                }
            }
            if !empty {
                open.push((name_start, name_end - name_start));
            }
            s.pos = p;
        }
    }
    if let Some(&(st, len)) = open.last() {
        return Err(format!("<{}> is not closed", s.str_of(st, st + len)));
    }
    if doc.root.is_empty() {
        return Err("no root element".into());
    }
    doc.summary = collector.finish(&|v| s.decode_val(v))?;
    Ok(doc)
}

/// XML white space.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Ends a name: white space or markup.
fn ends_name(c: u8) -> bool {
    is_space(c)
        || matches!(
            c,
            b'>' | b'/' | b'=' | b'<' | b'"' | b'\'' | b'&' | b'?' | b'!'
        )
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    /// The document is ISO-8859-1 (else UTF-8).
    latin1: bool,
}

impl Scanner<'_> {
    fn error_at(&self, at: usize, what: &str) -> String {
        format!("{what} (near byte {at})")
    }

    fn name_end(&self, from: usize) -> usize {
        self.b[from..]
            .iter()
            .position(|&c| ends_name(c))
            .map_or(self.b.len(), |i| from + i)
    }

    fn skip_space(&self, from: usize) -> usize {
        self.b[from..]
            .iter()
            .position(|&c| !is_space(c))
            .map_or(self.b.len(), |i| from + i)
    }

    fn find(&self, from: usize, needle: &[u8]) -> Option<usize> {
        memchr::memmem::find(&self.b[from..], needle).map(|i| from + i)
    }

    fn find_in(&self, from: usize, to: usize, needle: &[u8]) -> Option<usize> {
        memchr::memmem::find(&self.b[from..to], needle).map(|i| from + i)
    }

    /// A name for a message, readable whatever its bytes.
    fn str_of(&self, from: usize, to: usize) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.b[from..to.min(from + 64)])
    }

    /// Every `&` in `from..to` starts a reference (see [`Scanner::check_reference`]).
    fn check_references(&self, from: usize, to: usize) -> Result<(), String> {
        let mut at = from;
        while let Some(i) = memchr::memchr(b'&', &self.b[at..to]) {
            at = self.check_reference(at + i)?;
            if at > to {
                return Err(self.error_at(at, "a reference runs past its value"));
            }
        }
        Ok(())
    }

    /// The `&` at `amp` starts a character reference or one of the five
    /// predefined entities, ended by `;`. Returns the position after it.
    fn check_reference(&self, amp: usize) -> Result<usize, String> {
        {
            let semi = self.b[amp..self.b.len().min(amp + 40)]
                .iter()
                .position(|&c| c == b';')
                .map(|j| amp + j)
                .ok_or_else(|| self.error_at(amp, "an '&' that starts no reference"))?;
            let name = &self.b[amp + 1..semi];
            match name {
                b"lt" | b"gt" | b"amp" | b"apos" | b"quot" => {}
                [b'#', rest @ ..] => {
                    let (digits, radix) = match rest {
                        [b'x', hex @ ..] => (hex, 16),
                        decimal => (decimal, 10),
                    };
                    char_ref(digits, radix).ok_or_else(|| {
                        self.error_at(
                            amp,
                            &format!(
                                "invalid character reference &{};",
                                self.str_of(amp + 1, semi)
                            ),
                        )
                    })?;
                }
                _ => {
                    return Err(self.error_at(
                        amp,
                        &format!("undefined entity &{};", self.str_of(amp + 1, semi)),
                    ));
                }
            }
            Ok(semi + 1)
        }
    }

    /// Raw bytes as text, per the declared encoding (ISO-8859-1, or UTF-8
    /// when valid, else ISO-8859-1).
    fn decode_plain<'b>(&self, raw: &'b [u8]) -> Cow<'b, str> {
        // Values are ASCII in almost every message, whatever its encoding.
        if raw.is_ascii() {
            return Cow::Borrowed(std::str::from_utf8(raw).unwrap_or_default());
        }
        match (self.latin1, std::str::from_utf8(raw)) {
            (false, Ok(s)) => Cow::Borrowed(s),
            _ => Cow::Owned(latin1(raw)),
        }
    }

    /// Raw bytes of a value as text (per the declared encoding) with its
    /// references resolved by quick-xml.
    fn decode(&self, raw: &[u8]) -> Result<String, String> {
        self.decode_cow(raw).map(Cow::into_owned)
    }

    /// [`Scanner::decode`], borrowing when nothing needs to change.
    fn decode_cow<'b>(&self, raw: &'b [u8]) -> Result<Cow<'b, str>, String> {
        match self.decode_plain(raw) {
            Cow::Borrowed(text) => {
                quick_xml::escape::unescape(text).map_err(|e| format!("bad reference: {e}"))
            }
            Cow::Owned(text) => quick_xml::escape::unescape(&text)
                .map(|t| Cow::Owned(t.into_owned()))
                .map_err(|e| format!("bad reference: {e}")),
        }
    }

    /// A value the summary kept, as text.
    fn decode_val(&self, v: &Val) -> Result<String, String> {
        match v {
            Val::Raw(from, to) => self.b.get(*from..*to).map_or(Ok(String::new()), |raw| {
                self.decode_cow(raw).map(Cow::into_owned)
            }),
            // The collector's own: not the parser's to decode.
            Val::Owned(_) => Err("no text of the document".into()),
            Val::TimeOf(at) => self.value_time(*at),
            Val::TextOf(at) => self.value_text(*at),
        }
    }

    /// Walks the attributes of the (checked) start tag at `at`: calls
    /// `each(name, value range)`, and returns where its `>` is and whether
    /// it is an empty element (`/>`). A value may hold `>`: quotes are followed.
    fn walk_start_tag(
        &self,
        at: usize,
        mut each: impl FnMut(&[u8], usize, usize),
    ) -> (usize, bool) {
        let mut p = self.name_end(at + 1);
        loop {
            p = self.skip_space(p);
            match self.b.get(p) {
                Some(b'>') => return (p, false),
                Some(b'/') => return (p + 1, true),
                None => return (self.b.len(), true),
                Some(_) => {}
            }
            let key_end = self.name_end(p);
            let q = self.skip_space(self.skip_space(key_end) + 1);
            let Some(&quote) = self.b.get(q) else {
                return (self.b.len(), true);
            };
            let end = memchr::memchr(quote, &self.b[q + 1..]).map_or(self.b.len(), |i| q + 1 + i);
            each(&self.b[p..key_end], q + 1, end);
            p = end + 1;
        }
    }

    /// The `t` attribute of the (checked) start tag at `at`, or "".
    fn value_time(&self, at: usize) -> Result<String, String> {
        let mut t = None;
        self.walk_start_tag(at, |key, from, to| {
            if key == b"t" {
                t = Some((from, to));
            }
        });
        t.map_or(Ok(String::new()), |(from, to)| {
            self.decode(&self.b[from..to])
        })
    }

    /// The text of the (checked) element whose start tag is at `at`, as
    /// the check collects it: white-space-only pieces left out, references
    /// resolved, CDATA literal, comments skipped, text of nested elements
    /// included; pieces after the first joined while under 256 bytes.
    fn value_text(&self, at: usize) -> Result<String, String> {
        let (gt, empty) = self.walk_start_tag(at, |_, _, _| {});
        if empty {
            return Ok(String::new());
        }
        let mut out: Option<String> = None;
        let join = |piece: &str, out: &mut Option<String>| match out {
            None => *out = Some(piece.to_owned()),
            Some(text) if text.len() < 256 => text.push_str(piece),
            Some(_) => {}
        };
        let (mut p, mut depth) = (gt + 1, 1usize);
        while p < self.b.len() {
            let lt = memchr::memchr(b'<', &self.b[p..]).map_or(self.b.len(), |i| p + i);
            let piece = &self.b[p..lt];
            if !piece.iter().all(|&c| is_space(c)) {
                join(&self.decode(piece)?, &mut out);
            }
            let rest = &self.b[lt..];
            if rest.starts_with(b"<!--") {
                p = self.find(lt + 4, b"-->").map_or(self.b.len(), |c| c + 3);
            } else if rest.starts_with(b"<![CDATA[") {
                let close = self.find(lt + 9, b"]]>").unwrap_or(self.b.len());
                join(&self.decode_plain(&self.b[lt + 9..close]), &mut out);
                p = close + 3;
            } else if rest.starts_with(b"<?") {
                p = self.find(lt + 2, b"?>").map_or(self.b.len(), |c| c + 2);
            } else if rest.starts_with(b"</") {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                p = memchr::memchr(b'>', &self.b[lt..]).map_or(self.b.len(), |i| lt + i + 1);
            } else if lt < self.b.len() {
                let (close, empty) = self.walk_start_tag(lt, |_, _, _| {});
                if !empty {
                    depth += 1;
                }
                p = close + 1;
            } else {
                break;
            }
        }
        Ok(out.unwrap_or_default())
    }
}

/// A character reference's digits: a valid code point other than 0.
fn char_ref(digits: &[u8], radix: u32) -> Option<()> {
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(|c| (*c as char).is_digit(radix))
    {
        return None;
    }
    let code = u32::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()?;
    (code != 0 && char::from_u32(code).is_some()).then_some(())
}

/// The check as quick-xml does it, event by event: the reference the
/// scanner above is tested against (same documents accepted, same refused).
#[cfg(test)]
pub(crate) mod oracle {
    use super::*;
    use quick_xml::Reader;
    use quick_xml::events::{BytesStart, Event};

    pub(crate) fn inspect_with(body: &[u8], limits: &Limits) -> Result<Document, String> {
        let text = text(body);
        let mut reader = Reader::from_str(&text);
        reader.config_mut().check_comments = true;
        // Whitespace between elements is most of a message's text events:
        // trimmed, it makes none. Text inside an Ack is its reason, read whole.
        reader.config_mut().trim_text(true);
        let mut doc = Document::default();
        let mut depth = 0usize;
        let mut items = 0usize;
        let mut first = true;
        // The Ack being read and the depth it was opened at.
        let mut in_ack: Option<(usize, Ack)> = None;
        let mut collector = Collector::default();
        loop {
            let event = reader
                .read_event()
                .map_err(|e| format!("{e} (near byte {})", reader.error_position()))?;
            let is_first = std::mem::replace(&mut first, false);
            match event {
                Event::Decl(_) if !is_first => {
                    return Err("XML declaration not at the start".into());
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::DocType(_) => {
                    return Err("a DOCTYPE is not accepted (no DTDs, no entities)".into());
                }
                Event::Start(e) | Event::Empty(e) if depth == 0 && !doc.root.is_empty() => {
                    return Err(format!("a second root element <{}>", e.name().as_ref()));
                }
                Event::Start(e) => {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(format!(
                            "elements nested deeper than {} levels",
                            limits.max_depth
                        ));
                    }
                    if let Some(ack) = element(&e, depth, &mut doc, &mut items, limits)? {
                        in_ack = Some((depth, ack));
                    }
                    collect(&mut collector, &e, depth, false)?;
                    // Text that is kept is read whole, white space and all.
                    reader
                        .config_mut()
                        .trim_text(in_ack.is_none() && !collector.wants_text());
                }
                Event::Empty(e) => {
                    if depth + 1 > limits.max_depth {
                        return Err(format!(
                            "elements nested deeper than {} levels",
                            limits.max_depth
                        ));
                    }
                    if let Some(ack) = element(&e, depth + 1, &mut doc, &mut items, limits)? {
                        doc.acks.push(ack);
                    }
                    collect(&mut collector, &e, depth + 1, true)?;
                }
                Event::End(e) => {
                    if depth == 0 {
                        return Err(format!("unexpected </{}>", e.name().as_ref()));
                    }
                    if in_ack.as_ref().is_some_and(|(d, _)| *d == depth)
                        && let Some((_, mut ack)) = in_ack.take()
                    {
                        ack.reason = ack.reason.trim().to_owned();
                        doc.acks.push(ack);
                    }
                    collector.end(depth);
                    reader
                        .config_mut()
                        .trim_text(in_ack.is_none() && !collector.wants_text());
                    depth -= 1;
                }
                Event::Text(t) => {
                    if depth == 0 && !t.chars().all(char::is_whitespace) {
                        return Err("text outside the root element".into());
                    }
                    if let Some((_, ack)) = &mut in_ack {
                        ack.reason.push_str(&t);
                    }
                    if collector.wants_text() {
                        let blank = t.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
                        let t = collector.own(t.to_string());
                        collector.text(t, blank, &owned)?;
                    }
                }
                Event::CData(c) => {
                    if depth == 0 {
                        return Err("CDATA outside the root element".into());
                    }
                    if let Some((_, ack)) = &mut in_ack {
                        ack.reason.push_str(&c);
                    }
                    if collector.wants_text() {
                        let c = collector.own(c.to_string());
                        collector.text(c, false, &owned)?;
                    }
                }
                Event::GeneralRef(r) => {
                    if depth == 0 {
                        return Err("a reference outside the root element".into());
                    }
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => quick_xml::escape::resolve_xml_entity(&r)
                            .ok_or_else(|| format!("undefined entity &{};", &*r))?
                            .to_owned(),
                        Err(_) => return Err(format!("invalid character reference &{};", &*r)),
                    };
                    if let Some((_, ack)) = &mut in_ack {
                        ack.reason.push_str(&resolved);
                    }
                    if collector.wants_text() {
                        let resolved = collector.own(resolved);
                        collector.text(resolved, false, &owned)?;
                    }
                }
                Event::Eof => break,
            }
        }
        if depth > 0 {
            return Err("an element is not closed".into());
        }
        if doc.root.is_empty() {
            return Err("no root element".into());
        }
        doc.summary = collector.finish(&owned)?;
        Ok(doc)
    }

    /// The oracle's values are decoded already: the collector holds them.
    fn owned(_: &Val) -> Result<String, String> {
        Err("the oracle keeps no ranges".into())
    }

    /// Tells the collector of an element, with the attributes it wants.
    fn collect(
        collector: &mut Collector,
        e: &BytesStart<'_>,
        depth: usize,
        empty: bool,
    ) -> Result<(), String> {
        let name = e.name();
        let tag = name.as_ref().as_bytes();
        let wanted = collector.wanted(depth, tag);
        let mut values: Vec<(&'static [u8], Val)> = Vec::new();
        let mut attributes = e.attributes();
        attributes.with_checks(false);
        for attr in attributes.flatten() {
            let key = attr.key.0.as_bytes();
            if let Some(w) = wanted.iter().find(|w| **w == key) {
                let text = collector.own(value(&attr.value)?.into_owned());
                values.push((w, text));
            }
        }
        if collector.follows(depth, tag) {
            collector.start(depth, tag, &mut values, empty, &owned)?;
        }
        Ok(())
    }

    /// Records what a start tag tells; returns the `Ack` it opens, if it is one.
    fn element(
        e: &BytesStart<'_>,
        depth: usize,
        doc: &mut Document,
        items: &mut usize,
        limits: &Limits,
    ) -> Result<Option<Ack>, String> {
        let name = e.name();
        let tag = name.as_ref();
        if depth == 1 {
            doc.root = tag.to_owned();
        }
        let is_ack = tag == "Ack";
        let names_station = depth == 1 || matches!(tag, "StationData" | "StationCommands");
        if is_ack || matches!(tag, "StationData" | "StationCommands" | "ChannelData") {
            *items += 1;
            if *items > limits.max_items {
                return Err(format!(
                    "more than {} StationData, StationCommands, ChannelData and Ack elements",
                    limits.max_items
                ));
            }
        }
        let mut station = None;
        let mut ack_id = None;
        let mut status = None;
        // quick-xml's own duplicate check allocates per element; the keys are
        // compared here instead, within the attribute limit.
        let mut keys: [&str; 8] = [""; 8];
        let mut seen: Vec<&str> = Vec::new();
        let mut count = 0usize;
        let mut attributes = e.attributes();
        attributes.with_checks(false);
        for attr in attributes {
            let attr = attr.map_err(|err| format!("bad attribute in <{tag}>: {err}"))?;
            let key = attr.key.0;
            count += 1;
            if count > limits.max_attributes {
                return Err(format!(
                    "<{tag}> has more than {} attributes",
                    limits.max_attributes
                ));
            }
            if count == keys.len() + 1 {
                seen.extend_from_slice(&keys);
            }
            let earlier: &[&str] = if count <= keys.len() {
                &keys[..count - 1]
            } else {
                &seen
            };
            if earlier.contains(&key) {
                return Err(format!("bad attribute in <{tag}>: {key} given twice"));
            }
            if count <= keys.len() {
                keys[count - 1] = key;
            } else {
                seen.push(key);
            }
            let wanted = match key {
                "stationId" => Some(&mut station),
                "ackId" => Some(&mut ack_id),
                "status" => Some(&mut status),
                _ => None,
            };
            match wanted {
                Some(slot) => *slot = Some(value(&attr.value)?.into_owned()),
                // Still checked: an undefined entity anywhere is malformed.
                None if attr.value.contains('&') => {
                    value(&attr.value)?;
                }
                None => {}
            }
        }
        if let (true, Some(station)) = (names_station, station) {
            doc.station_ids.push(station);
        }
        if let Some(id) = &ack_id {
            doc.ack_ids.push(id.clone());
            if doc.ack_ids.len() > limits.max_items {
                return Err(format!("more than {} ackId attributes", limits.max_items));
            }
        }
        if is_ack {
            return Ok(Some(Ack {
                ack_id: ack_id.unwrap_or_default(),
                status: status.unwrap_or_default(),
                reason: String::new(),
            }));
        }
        Ok(None)
    }

    /// An attribute value with its references resolved by quick-xml (the five
    /// predefined entities and character references; `&#0;` is refused).
    fn value(raw: &str) -> Result<Cow<'_, str>, String> {
        quick_xml::escape::unescape(raw).map_err(|e| match e {
            quick_xml::escape::EscapeError::UnrecognizedEntity(_, name) => {
                format!("undefined entity &{name};")
            }
            quick_xml::escape::EscapeError::InvalidCharRef(_) => {
                "invalid character reference in an attribute".to_owned()
            }
            other => format!("bad reference in an attribute: {other}"),
        })
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
            b"<StationDataList a1=\"1\" a2=\"2\" a3=\"3\" a4=\"4\" a5=\"5\" a6=\"6\" a7=\"7\" a8=\"8\" a9=\"9\" a10=\"10\"/>",
        ];
        for doc in cases {
            let s = check(doc, "StationDataList", &Limits::default())
                .unwrap_or_else(|e| panic!("{e}: {}", text(doc)));
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
            (b"<StationDataList></StationDataList><StationDataList/>", "second root"),
            (b"<StationDataList a=\"1\" a=\"2\"/>", "attribute"),
            (b"<StationDataList a1=\"1\" a2=\"2\" a3=\"3\" a4=\"4\" a5=\"5\" a6=\"6\" a7=\"7\" a8=\"8\" a9=\"9\" a3=\"x\"/>", "twice"),
            (b"<StationDataList a=1/>", "attribute"),
            (b"<StationDataList>&bomb;</StationDataList>", "undefined entity"),
            (b"<StationDataList a=\"&bomb;\"/>", "undefined entity"),
            (b"<StationDataList stationId=\"&bomb;\"/>", "undefined entity"),
            (b"<StationDataList>&#0;</StationDataList>", "invalid character reference"),
            (b"<StationDataList a=\"&#0;\"/>", "invalid character reference"),
            (b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><StationDataList>&a;</StationDataList>", "DOCTYPE"),
            (b"<StationDataList/>trailing", "outside the root"),
            (b"<StationDataList><!-- a -- b --></StationDataList>", ""),
            (b"<a><?xml version=\"1.0\"?></a>", ""),
        ];
        for (doc, why) in cases {
            let err = inspect(doc).expect_err(&text(doc));
            assert!(err.contains(why), "{:?}: {err}", text(doc));
        }
    }

    #[test]
    fn limits_are_clear_refusals() {
        let limits = Limits {
            max_depth: 3,
            max_attributes: 2,
            max_items: 2,
        };
        let deep = check(b"<R><a><b><c/></b></a></R>", "R", &limits).expect_err("deep");
        assert!(deep.contains("deeper than 3"), "{deep}");
        let wide = check(b"<R a=\"1\" b=\"2\" c=\"3\"/>", "R", &limits).expect_err("wide");
        assert!(wide.contains("more than 2 attributes"), "{wide}");
        let many = check(b"<R><Ack/><Ack/><Ack/></R>", "R", &limits).expect_err("many");
        assert!(many.contains("more than 2"), "{many}");
        assert!(check(b"<R><a><b/></a><Ack/><Ack/></R>", "R", &limits).is_ok());
        let ids = check(
            b"<R><a ackId=\"1\"/><b ackId=\"2\"/><c ackId=\"3\"/></R>",
            "R",
            &limits,
        )
        .expect_err("many ackIds");
        assert!(ids.contains("more than 2 ackId attributes"), "{ids}");
        for (name, doc) in [
            (
                "scanner",
                inspect_with(
                    b"<R><a ackId=\"1\"/><b ackId=\"2\"/><c ackId=\"3\"/></R>",
                    &limits,
                ),
            ),
            (
                "oracle",
                oracle::inspect_with(
                    b"<R><a ackId=\"1\"/><b ackId=\"2\"/><c ackId=\"3\"/></R>",
                    &limits,
                ),
            ),
        ] {
            assert!(doc.is_err(), "{name}");
        }
    }

    #[test]
    fn wrong_root_is_named() {
        let err = check(b"<AlarmMessage/>", "StationDataList", &Limits::default())
            .expect_err("wrong root");
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
        let data = inspect(b"<StationDataList><StationData stationId=\"A\"/><StationData stationId=\"B&amp;C\"/></StationDataList>").expect("valid");
        assert_eq!(data.station_ids, vec!["A", "B&C"]);
        let cmd = inspect(b"<CommandList><StationCommands stationId=\"S\"><Logging ackId=\"7\"/></StationCommands></CommandList>").expect("valid");
        assert_eq!(
            (cmd.station_ids, cmd.ack_ids),
            (vec!["S".to_owned()], vec!["7".to_owned()])
        );
    }

    #[test]
    fn text_follows_the_declaration() {
        // Valid UTF-8 that is really ISO-8859-1 (Ã¼ as two bytes): the declaration decides.
        let latin = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\xc3\xbc</a>";
        assert_eq!(
            text(latin),
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\u{c3}\u{bc}</a>"
        );
        let utf8 = "<?xml version=\"1.0\" encoding=\"utf-8\"?><a>\u{fc}</a>";
        assert_eq!(text(utf8.as_bytes()), utf8);
        assert_eq!(
            text(b"<a>\xb0</a>"),
            "<a>\u{b0}</a>",
            "not UTF-8: ISO-8859-1"
        );
        assert!(matches!(text(b"<a/>"), Cow::Borrowed(_)));
    }

    /// Well-formed documents of the shapes loggers send, and their odd corners.
    fn document() -> impl Strategy<Value = String> {
        let name = proptest::sample::select(vec![
            "StationDataList",
            "StationData",
            "Ack",
            "VT",
            "a",
            "b:c",
            "StationCommands",
            "Response",
            "StationInfo",
            "ChannelData",
            "Values",
            "AlarmMessage",
        ]);
        let value = proptest::sample::select(vec![
            "1",
            "0000452891",
            "OK",
            "FAIL",
            "&amp;&#176;",
            "\u{b0}C",
            "a b",
            "&#x41;",
            "",
            "05",
            "+01:00",
        ]);
        let attrs = proptest::sample::subsequence(
            vec![
                "stationId",
                "ackId",
                "status",
                "t",
                "x",
                "unit",
                "errorcode",
                "channelId",
                "name",
                "timezone",
                "batteryVoltage",
                "type",
            ],
            0..4,
        )
        .prop_flat_map(move |keys| {
            let n = keys.len();
            (
                Just(keys),
                proptest::collection::vec((value.clone(), any::<bool>()), n),
            )
        })
        .prop_map(|(keys, values)| {
            keys.iter()
                .zip(values)
                .map(|(k, (v, single))| {
                    if single {
                        format!(" {k}='{v}'")
                    } else {
                        format!(" {k} = \"{v}\"")
                    }
                })
                .collect::<String>()
        });
        let leaf = prop_oneof![
            proptest::sample::select(vec![
                "142.3",
                " text ",
                "a &lt; b",
                "&#176;C",
                "\n   ",
                "<!-- note -->",
                "<![CDATA[x<y&z]]>",
                "<?pi data?>",
                "&quot;"
            ])
            .prop_map(str::to_owned),
            (name.clone(), attrs.clone()).prop_map(|(n, a)| format!("<{n}{a}/>")),
        ];
        let tree = leaf.prop_recursive(4, 24, 5, move |inner| {
            (
                name.clone(),
                attrs.clone(),
                proptest::collection::vec(inner, 0..5),
            )
                .prop_map(|(n, a, kids)| format!("<{n}{a}>{}</{n}>", kids.concat()))
        });
        (
            any::<bool>(),
            proptest::sample::select(vec!["", "\n", "<!-- c -->\n"]),
            tree,
        )
            .prop_map(|(decl, pre, t)| {
                let decl = if decl {
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
                } else {
                    ""
                };
                let root = if t.starts_with('<') && !t.starts_with("<!") && !t.starts_with("<?") {
                    t
                } else {
                    format!("<r>{t}</r>")
                };
                format!("{decl}{pre}{root}\n")
            })
    }

    /// Accepted by one exactly when accepted by the other, with the same findings.
    fn agrees_with_quick_xml(body: &[u8]) -> Result<(), TestCaseError> {
        let ours = inspect(body);
        let theirs = oracle::inspect_with(body, &Limits::default());
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text(body)),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(
                false,
                "{:?}: scanner {:?}, quick-xml {:?}",
                text(body),
                ours,
                theirs
            ),
        }
        Ok(())
    }

    /// What the scanner accepts, quick-xml accepts too, with the same
    /// findings. (The scanner is stricter on some malformed input quick-xml
    /// let through: a name holding `=` or a quote, a `<` in an attribute value.)
    fn no_more_than_quick_xml(body: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(ours) = inspect(body) {
            let theirs = oracle::inspect_with(body, &Limits::default());
            prop_assert_eq!(Ok(ours), theirs, "{}", text(body));
        }
        Ok(())
    }

    #[test]
    fn agrees_with_quick_xml_on_the_samples_and_the_cases_above() {
        for name in [
            "senddata.xml",
            "senddata-nodecl.xml",
            "senddata-utf8.xml",
            "sendalarm.xml",
            "acknowledge.xml",
            "command.xml",
            "query.xml",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("transmission_test/samples")
                .join(name);
            let body = std::fs::read(&path).expect("sample");
            assert!(inspect(&body).is_ok(), "{name}: {:?}", inspect(&body));
            agrees_with_quick_xml(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    proptest! {
        #[test]
        fn agrees_with_quick_xml_on_xml_like_bytes(
            body in "(<\\?xml version=\"1.0\"\\?>)?(\\s|<[A-Za-z]{1,3}( [a-z]{1,2}=(\"[^\"<]{0,4}\"|'[a-z&;#0-9]{0,5}'))*/?>|</[A-Za-z]{1,3}>|&[a-z#x0-9]{0,4};?|<!--[a-z -]{0,4}-->|<!\\[CDATA\\[[a-z<&]{0,3}\\]\\]>|<\\?[a-z]{1,3} [a-z]{0,3}\\?>|[a-z \u{b0}]{0,5}){0,14}"
        ) {
            no_more_than_quick_xml(body.as_bytes())?;
        }

        #[test]
        fn agrees_with_quick_xml_on_documents_and_their_mutations(
            doc in document(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..3),
        ) {
            let mut body = doc.into_bytes();
            agrees_with_quick_xml(&body)?;
            prop_assert!(inspect(&body).is_ok(), "well-formed by construction: {}", text(&body));
            for (at, byte, kind) in edits {
                let at = at % (body.len() + 1);
                match kind {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ if at < body.len() => {
                        body.remove(at);
                    }
                    _ => {}
                }
                no_more_than_quick_xml(&body)?;
            }
        }

        #[test]
        fn agrees_with_quick_xml_on_mutated_samples(cut in 0usize..3000, byte in any::<u8>(), pos in 0usize..3000) {
            let sample = include_bytes!("../transmission_test/samples/acknowledge.xml");
            let mut body = sample.to_vec();
            let at = pos % body.len();
            body[at] = byte;
            body.truncate(body.len() - cut % body.len());
            no_more_than_quick_xml(&body)?;
        }

        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = inspect(&body);
        }

        #[test]
        fn never_panics_on_xml_like_text(body in "(<[A-Za-z]{1,3}( [a-z]=\"[^\"]{0,4}\")?/?>|</[A-Za-z]{1,3}>|&[a-z#0-9]{0,4};?|[a-z \u{b0}]{0,5}){0,12}") {
            let _ = inspect(body.as_bytes());
        }

        #[test]
        fn latin1_decoding_matches_the_char_map(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let expected: String = body.iter().map(|&b| char::from(b)).collect();
            prop_assert_eq!(latin1(&body), expected);
        }
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use crate::summary::{Channel, StationInfo};

    #[test]
    fn the_sample_data_message_is_summarised_in_the_check() {
        let body = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("transmission_test/samples/senddata.xml"),
        )
        .expect("sample");
        let s = check(&body, "StationDataList", &Limits::default())
            .expect("valid")
            .summary;
        assert_eq!(s.station_name.as_deref(), Some("Pegel Mühlbach Brücke"));
        assert_eq!(s.timezone.as_deref(), Some("+01:00"));
        let info = s.info.expect("StationInfo");
        assert_eq!(info.battery_voltage.as_deref(), Some("12.7"));
        assert_eq!(info.transmission_cycle.as_deref(), Some("60"));
        assert_eq!(info.device_type.as_deref(), Some("netDL1000"));
        let level = &s.channels[0];
        assert_eq!(
            (level.channel_id.as_str(), level.unit.as_deref()),
            ("0010", Some("cm"))
        );
        assert_eq!((level.values, level.errors), (5, 1));
        assert_eq!(level.first_t.as_deref(), Some("2020-10-22T00:00:00"));
        assert_eq!(level.last_value.as_deref(), Some("145.6"));
    }

    #[test]
    fn shapes_loggers_send() {
        let body = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<StationDataList><StationData stationId=\"7\" timezone=\"-03:30\"  >\n\
            <ChannelData channelId=\"0020\" unit=\"&#176;C\" name=\"Temp\"><Values>\
            <VT t=\"2026-01-01T00:00:00\">1,5</VT><VT t=\"2026-01-01T01:00:00\" errorcode=\"05\">0</VT></Values><VInst t=\"x\">9</VInst></ChannelData>\
            <ChannelData channelId=\"0050\" name=\"Batteriespannung\" unit=\"V\"><Values><VT t=\"2026-01-01T01:00:00\"> 12.4 </VT></Values></ChannelData>\
            <ChannelData channelId=\"WSAV\"><Values/></ChannelData>\
            </StationData><StationData stationId=\"8\" name=\"second\"/></StationDataList>";
        let s = check(body.as_bytes(), "StationDataList", &Limits::default())
            .expect("valid")
            .summary;
        assert_eq!(s.info, None::<StationInfo>, "no StationInfo");
        assert_eq!(s.station_name, None, "the first StationData only");
        assert_eq!(s.channels.len(), 3);
        assert_eq!(s.channels[0].unit.as_deref(), Some("°C"));
        assert_eq!(
            (
                s.channels[0].values,
                s.channels[0].errors,
                s.channels[0].last_value.as_deref()
            ),
            (2, 1, Some("1,5")),
            "the failed value is no last value"
        );
        assert_eq!(s.channels[0].last_t.as_deref(), Some("2026-01-01T01:00:00"));
        assert!(crate::summary::is_battery(&s.channels[1]));
        assert_eq!(s.channels[1].last_value.as_deref(), Some("12.4"));
        assert_eq!(
            s.channels[2],
            Channel {
                channel_id: "WSAV".into(),
                ..Channel::default()
            }
        );
        assert_eq!(
            oracle::inspect_with(body.as_bytes(), &Limits::default()).map(|d| d.summary),
            Ok(s)
        );
    }

    #[test]
    fn an_alarm_is_summarised() {
        let body = b"<AlarmMessage stationId=\"0000452891\" channelId=\"0010\" t=\"2026-01-01T00:00:00\" type=\"limit\">\n  Level above 150 cm &amp; rising<!-- x --> fast\n</AlarmMessage>";
        let s = check(body, "AlarmMessage", &Limits::default())
            .expect("valid")
            .summary;
        let alarm = s.alarm.clone().expect("alarm");
        assert_eq!(alarm.kind.as_deref(), Some("limit"));
        assert_eq!(alarm.channel_id.as_deref(), Some("0010"));
        assert_eq!(alarm.text, "Level above 150 cm & rising fast");
        assert_eq!(
            oracle::inspect_with(body, &Limits::default()).map(|d| d.summary),
            Ok(s)
        );
    }
}

#[cfg(test)]
mod summary_proptests {
    use super::*;
    use proptest::prelude::*;

    /// A value element with odd corners: `>` in attributes, references,
    /// comments, CDATA, nested elements, white space, empty.
    fn value() -> impl Strategy<Value = String> {
        let t = proptest::sample::select(vec![
            " t=\"2026-01-01T00:00:00\"",
            " t='2026-01-01T01:00:00'",
            " t=\"a&gt;b\" x=\"1>2\"",
            "",
            " t=\"\"",
        ]);
        let code = proptest::sample::select(vec![
            "",
            " errorcode=\"05\"",
            " errorcode=\"0\"",
            " errorcode='01'",
        ]);
        let text = proptest::sample::select(vec![
            "12.5",
            "  7 ",
            "",
            "\n  ",
            "1<!-- c -->2",
            "<![CDATA[3&4]]>",
            "a &amp; b",
            "&#176;C",
            "<i>5</i>6",
            "x<?pi y?>z",
        ]);
        (t, code, text, any::<bool>()).prop_map(|(t, code, text, empty)| {
            if empty {
                format!("<VT{t}{code}/>")
            } else {
                format!("<VT{t}{code}>{text}</VT>")
            }
        })
    }

    fn message() -> impl Strategy<Value = String> {
        let channel = (
            proptest::sample::select(vec!["0010", "WSAV"]),
            proptest::collection::vec(value(), 0..6),
            any::<bool>(),
        )
            .prop_map(|(id, values, wrap)| {
                if wrap {
                    format!("<ChannelData channelId=\"{id}\" unit=\"&#176;C\"><Values>{}</Values></ChannelData>", values.concat())
                } else {
                    format!("<ChannelData channelId=\"{id}\"><Values/><VInst t=\"x\">9</VInst></ChannelData>")
                }
            });
        (
            proptest::collection::vec(channel, 0..4),
            any::<bool>(),
            proptest::sample::select(vec!["+01:00", "-03:30", "00:00"]),
        )
            .prop_map(|(channels, info, tz)| {
                let info = if info {
                    "<StationInfo batteryVoltage=\"12.5\" transmissionCycle=\"900\" time=\"2026-01-01T00:00:00\"/>"
                } else {
                    ""
                };
                format!(
                    "<StationDataList><StationData stationId=\"1\" name=\"n &amp; m\" timezone=\"{tz}\">{info}{}</StationData></StationDataList>",
                    channels.concat()
                )
            })
    }

    proptest! {
        #[test]
        fn summaries_agree_with_quick_xml(doc in message()) {
            let ours = inspect(doc.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {doc}")))?;
            let theirs = oracle::inspect_with(doc.as_bytes(), &Limits::default())
                .map_err(|e| TestCaseError::fail(format!("{e}: {doc}")))?;
            prop_assert_eq!(ours.summary, theirs.summary, "{}", doc);
        }
    }
}
