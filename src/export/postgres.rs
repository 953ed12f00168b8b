//! `dlsrv export --format postgres --database URL`: the rows loaded with
//! `COPY` into `ott_values` (or `ott_events`), created when missing, keyed
//! by station, channel and time, so that running an export again never
//! doubles a row: each run copies into a temporary table, then inserts what
//! is new and replaces a row only with a more recently received copy, in
//! one transaction. The tables are in docs/export.md.

use std::io::Write;

use anyhow::Context;

use super::Sourced;
use super::text::{event_fields, utc_text, value_fields};
use crate::export::rows::{EventRow, ValueRow};

pub(super) const VALUES_TABLE: &str = "
CREATE TABLE IF NOT EXISTS ott_values (
    station_id   text             NOT NULL,
    station_name text             NOT NULL,
    channel_id   text             NOT NULL,
    channel_name text             NOT NULL,
    unit         text             NOT NULL,
    time_utc     timestamptz      NOT NULL,
    time_local   text             NOT NULL,
    utc_offset   text             NOT NULL,
    value        double precision,
    errorcode    text,
    errortext    text,
    received_utc timestamptz      NOT NULL,
    source       text             NOT NULL,
    PRIMARY KEY (station_id, channel_id, time_utc)
)";

pub(super) const EVENTS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS ott_events (
    station_id   text        NOT NULL,
    channel_id   text        NOT NULL,  -- '' for a station event
    time_utc     timestamptz NOT NULL,
    type         text        NOT NULL,
    code         text        NOT NULL,
    text         text,
    value        text,
    value2       text,
    received_utc timestamptz NOT NULL,
    source       text        NOT NULL,
    PRIMARY KEY (station_id, channel_id, time_utc, type, code)
)";

const VALUE_COLUMNS: &str = "station_id, station_name, channel_id, channel_name, unit, time_utc, \
     time_local, utc_offset, value, errorcode, errortext, received_utc, source";
const EVENT_COLUMNS: &str =
    "station_id, channel_id, time_utc, type, code, text, value, value2, received_utc, source";

/// A connection with a load in progress.
pub(super) struct Load {
    client: postgres::Client,
    events: bool,
}

impl Load {
    pub(super) fn open(url: &str, events: bool) -> anyhow::Result<Load> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)
            .context("cannot connect to the database")?;
        let (table, name, columns) = if events {
            (EVENTS_TABLE, "ott_events", EVENT_COLUMNS)
        } else {
            (VALUES_TABLE, "ott_values", VALUE_COLUMNS)
        };
        client
            .batch_execute(&format!(
                "{table};
                 BEGIN;
                 CREATE TEMPORARY TABLE dlsrv_load ON COMMIT DROP AS
                   SELECT {columns} FROM {name} WITH NO DATA;"
            ))
            .with_context(|| format!("cannot prepare {name}"))?;
        Ok(Load { client, events })
    }

    /// Copies one station's rows (as made by [`values`] or [`events`]).
    pub(super) fn copy(&mut self, csv: &[u8]) -> anyhow::Result<()> {
        if csv.is_empty() {
            return Ok(());
        }
        // Key columns are never NULL: empty there is ''.
        let (columns, options) = if self.events {
            (EVENT_COLUMNS, ", FORCE_NOT_NULL (channel_id, type, code)")
        } else {
            (
                VALUE_COLUMNS,
                ", FORCE_NOT_NULL (station_name, channel_name, unit, time_local, utc_offset)",
            )
        };
        let mut w = self
            .client
            .copy_in(&format!(
                "COPY dlsrv_load ({columns}) FROM STDIN (FORMAT csv{options})"
            ))
            .context("COPY")?;
        w.write_all(csv).context("COPY")?;
        w.finish().context("COPY")?;
        Ok(())
    }

    /// Inserts what is new, replaces what a later copy changed, commits.
    /// Returns the rows inserted or replaced.
    pub(super) fn finish(mut self) -> anyhow::Result<u64> {
        let (name, key, columns) = if self.events {
            (
                "ott_events",
                "station_id, channel_id, time_utc, type, code",
                EVENT_COLUMNS,
            )
        } else {
            (
                "ott_values",
                "station_id, channel_id, time_utc",
                VALUE_COLUMNS,
            )
        };
        let sets: Vec<String> = columns
            .split(", ")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let changed = self
            .client
            .execute(
                &format!(
                    "INSERT INTO {name} ({columns})
                     SELECT DISTINCT ON ({key}) {columns} FROM dlsrv_load
                     ORDER BY {key}, received_utc DESC
                     ON CONFLICT ({key}) DO UPDATE SET {}
                     WHERE excluded.received_utc > {name}.received_utc",
                    sets.join(", ")
                ),
                &[],
            )
            .with_context(|| format!("cannot insert into {name}"))?;
        self.client.batch_execute("COMMIT").context("COMMIT")?;
        Ok(changed)
    }
}

/// A station's values as `COPY` reads them; a row without a UTC time has
/// no key: counted in `left_out`.
pub(super) fn values<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<ValueRow>>,
    left_out: &mut u64,
) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new().from_writer(out);
    for r in rows {
        let v = &r.row;
        let Some(time_utc) = utc_text(v.utc) else {
            *left_out += 1;
            continue;
        };
        // Not a number: missing (the text is in the archive).
        let value = v
            .value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f.to_string())
            .unwrap_or_default();
        // The CSV's fields, in the table's order, with the number as PostgreSQL reads it.
        let time_utc = Some(time_utc);
        let mut fields = value_fields(r, &time_utc);
        fields[8] = &value;
        w.write_record(fields)?;
    }
    w.flush()?;
    Ok(())
}

/// A station's events as `COPY` reads them.
pub(super) fn events<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<EventRow>>,
    left_out: &mut u64,
) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new().from_writer(out);
    for r in rows {
        let e = &r.row;
        let Some(time_utc) = utc_text(e.utc) else {
            *left_out += 1;
            continue;
        };
        w.write_record(event_fields(r, &Some(time_utc)))?;
    }
    w.flush()?;
    Ok(())
}
