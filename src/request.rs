//! The query string of a logger's request: `stationid` and `action`,
//! percent-decoded and validated before anything touches the disk.
//! The action names and what each does are in [`crate::actions`].

use std::fmt;

use crate::error::RequestError;

/// What a request asks for. Its name is also the archive's top directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    SendData,
    SendAlarm,
    RequestCommand,
    Acknowledge,
    SendConfiguration,
    SendFirmware,
    GetConfiguration,
    GetFirmware,
}

impl Action {
    pub(crate) const ALL: [Action; 8] = [
        Action::SendData,
        Action::SendAlarm,
        Action::RequestCommand,
        Action::Acknowledge,
        Action::SendConfiguration,
        Action::SendFirmware,
        Action::GetConfiguration,
        Action::GetFirmware,
    ];

    /// Its name in the query and in the archive (what it does is in
    /// [`crate::actions`]).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::SendData => "senddata",
            Action::SendAlarm => "sendalarm",
            Action::RequestCommand => "requestcommand",
            Action::Acknowledge => "acknowledge",
            Action::SendConfiguration => "sendconfiguration",
            Action::SendFirmware => "sendfirmware",
            Action::GetConfiguration => "getconfiguration",
            Action::GetFirmware => "getfirmware",
        }
    }

    pub(crate) fn parse(raw: &[u8]) -> Result<Action, RequestError> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(raw))
            .ok_or_else(|| RequestError::UnknownAction(String::from_utf8_lossy(raw).into_owned()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A station id safe to use as part of a file name and in XML:
/// 1 to 64 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StationId(String);

impl StationId {
    pub(crate) const MAX_LEN: usize = 64;

    pub(crate) fn parse(raw: &[u8]) -> Result<StationId, RequestError> {
        if raw.is_empty() {
            return Err(RequestError::BadStationId("empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(RequestError::BadStationId("longer than 64 characters"));
        }
        if !raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            return Err(RequestError::BadStationId(
                "only A-Z, a-z, 0-9, '_' and '-' are allowed",
            ));
        }
        // All bytes are ASCII, so this conversion cannot fail.
        Ok(StationId(String::from_utf8_lossy(raw).into_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The validated parameters of an `/ott` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OttQuery {
    pub(crate) station: StationId,
    pub(crate) action: Action,
}

impl OttQuery {
    /// Parses `stationid=…&action=…` (form-urlencoded, by `form_urlencoded`).
    /// Names match case-insensitively; other parameters are ignored; a
    /// missing or repeated one is an error.
    pub(crate) fn parse(query: Option<&str>) -> Result<OttQuery, RequestError> {
        let mut station = None;
        let mut action = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = if name.eq_ignore_ascii_case("stationid") {
                &mut station
            } else if name.eq_ignore_ascii_case("action") {
                &mut action
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(RequestError::BadQuery(format!(
                    "parameter {} given more than once",
                    name.to_ascii_lowercase()
                )));
            }
            *slot = Some(value);
        }
        let station = station.ok_or_else(|| missing("stationid"))?;
        let action = action.ok_or_else(|| missing("action"))?;
        Ok(OttQuery {
            station: StationId::parse(station.as_bytes())?,
            action: Action::parse(action.as_bytes())?,
        })
    }
}

fn missing(name: &str) -> RequestError {
    RequestError::BadQuery(format!("parameter {name} is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(q: &str) -> Result<OttQuery, RequestError> {
        OttQuery::parse(Some(q))
    }

    #[test]
    fn the_loggers_query() {
        let q = parse("stationid=0000452891&action=senddata").expect("valid");
        assert_eq!(q.station.as_str(), "0000452891");
        assert_eq!(q.action, Action::SendData);
        let q = parse("action=SendAlarm&StationID=ab_C-9&extra=1").expect("valid");
        assert_eq!(q.action, Action::SendAlarm);
        assert_eq!(q.station.as_str(), "ab_C-9");
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        let q = parse("stationid=%30%30%31&action=send%64ata").expect("valid");
        assert_eq!(q.station.as_str(), "001");
        assert_eq!(q.action, Action::SendData);
    }

    #[test]
    fn hostile_station_ids_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "%2e%2e%2fetc",
            "/etc/passwd",
            "a/b",
            "a%00b",
            "%22%3E%3Cx%3E",
            "a b",
            "a+b",
            "\u{e9}",
            "a.b",
            "a%2Fb",
            "~root",
        ] {
            let q = format!("stationid={bad}&action=senddata");
            assert!(
                matches!(parse(&q), Err(RequestError::BadStationId(_))),
                "{bad:?} must be refused"
            );
        }
        let long = format!("stationid={}&action=senddata", "1".repeat(65));
        assert!(matches!(parse(&long), Err(RequestError::BadStationId(_))));
        let max = format!("stationid={}&action=senddata", "1".repeat(64));
        assert!(parse(&max).is_ok());
    }

    #[test]
    fn missing_repeated_and_unknown() {
        assert!(matches!(
            OttQuery::parse(None),
            Err(RequestError::BadQuery(_))
        ));
        assert!(matches!(
            parse("action=senddata"),
            Err(RequestError::BadQuery(_))
        ));
        assert!(matches!(
            parse("stationid=1"),
            Err(RequestError::BadQuery(_))
        ));
        assert!(matches!(
            parse("stationid=1&stationid=2&action=senddata"),
            Err(RequestError::BadQuery(_))
        ));
        assert!(matches!(
            parse("stationid=1&action=senddata&action=sendalarm"),
            Err(RequestError::BadQuery(_))
        ));
        assert!(matches!(
            parse("stationid=1&action=../../etc"),
            Err(RequestError::UnknownAction(_))
        ));
        assert!(matches!(
            parse("stationid=1&action="),
            Err(RequestError::UnknownAction(_))
        ));
    }

    #[test]
    fn invalid_percent_encoding_is_refused_not_guessed() {
        // A stray '%' stays a '%', which no station id may hold; "%+A" is
        // no escape (the hand-written decoder read it as a newline).
        for bad in [
            "stationid=%zz&action=senddata",
            "stationid=1%&action=senddata",
            "stationid=%+A&action=senddata",
            "stationid=%4&action=senddata",
        ] {
            assert!(
                matches!(parse(bad), Err(RequestError::BadStationId(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("stationid=%4"),
            Err(RequestError::BadQuery(_))
        ));
    }

    proptest! {
        #[test]
        fn any_query_parses_or_is_a_client_error(q in ".{0,200}") {
            match OttQuery::parse(Some(&q)) {
                Ok(ok) => {
                    let s = ok.station.as_str();
                    prop_assert!(!s.is_empty() && s.len() <= 64);
                    prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
                }
                Err(e) => prop_assert!(e.status().is_client_error()),
            }
        }

        #[test]
        fn valid_ids_round_trip_through_encoding(id in "[A-Za-z0-9_-]{1,64}") {
            let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
            let q = OttQuery::parse(Some(&format!("action=senddata&stationid={encoded}")))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(q.station.as_str(), id.as_str());
        }
    }
}
