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

/// Where a feed (`--follow NAME`, or a cursor into the database) stands:
/// the catalog's `transmissions.id` up to which every body's rows are in
/// the table, written in the same transaction as those rows.
pub(super) const POSITION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS ott_export_position (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL,
    catalog     text        NOT NULL,
    updated_utc timestamptz NOT NULL DEFAULT now()
)";

/// A feed's position as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) position: i64,
    /// The catalog it counts in (its `catalog_id`).
    pub(super) catalog: String,
}

/// A connection to the target database.
pub(super) struct Target {
    client: postgres::Client,
    events: bool,
}

impl Target {
    pub(super) fn connect(url: &str, events: bool) -> anyhow::Result<Target> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)
            .context("cannot connect to the database")?;
        let table = if events { EVENTS_TABLE } else { VALUES_TABLE };
        client
            .batch_execute(&format!("{table}; {POSITION_TABLE};"))
            .context("cannot create the tables")?;
        Ok(Target { client, events })
    }

    /// Whether the connection is gone (the database restarted, the network).
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The position of the feed `name`, if it has one.
    pub(super) fn position(&mut self, name: &str) -> anyhow::Result<Option<Position>> {
        let row = self
            .client
            .query_opt(
                "SELECT position, catalog FROM ott_export_position WHERE name = $1",
                &[&name],
            )
            .context("cannot read ott_export_position")?;
        Ok(row.map(|r| Position {
            position: r.get(0),
            catalog: r.get(1),
        }))
    }

    /// Starts a load: a transaction with a temporary table to copy into.
    /// Until [`Target::commit`] nothing is visible; a connection that drops
    /// rolls it back.
    pub(super) fn begin(&mut self) -> anyhow::Result<()> {
        let (name, columns) = if self.events {
            ("ott_events", EVENT_COLUMNS)
        } else {
            ("ott_values", VALUE_COLUMNS)
        };
        self.client
            .batch_execute(&format!(
                "BEGIN;
                 CREATE TEMPORARY TABLE dlsrv_load ON COMMIT DROP AS
                   SELECT {columns} FROM {name} WITH NO DATA;"
            ))
            .with_context(|| format!("cannot prepare {name}"))
    }

    /// Gives a load up (after a failure that left the connection open).
    pub(super) fn rollback(&mut self) {
        if !self.client.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    /// Copies rows (as made by [`copy_value`] or [`copy_event`]).
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

    /// Inserts what is new, replaces what a later copy changed, moves the
    /// feed's position (when there is one: it must still be `from`, or
    /// another process moved it and nothing is committed), commits.
    /// Returns the rows inserted or replaced.
    pub(super) fn commit(
        &mut self,
        feed: Option<(&str, Option<i64>, &Position)>,
    ) -> anyhow::Result<u64> {
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
        if let Some((feed, from, _)) = feed {
            let held: Option<i64> = self
                .client
                .query_opt(
                    "SELECT position FROM ott_export_position WHERE name = $1 FOR UPDATE",
                    &[&feed],
                )
                .context("cannot read ott_export_position")?
                .map(|r| r.get(0));
            if held != from {
                anyhow::bail!(
                    "the position of {feed:?} moved to {held:?} meanwhile (another process feeds it); \
                     nothing was committed"
                );
            }
        }
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
        if let Some((feed, _, to)) = feed {
            self.client
                .execute(
                    "INSERT INTO ott_export_position (name, position, catalog, updated_utc)
                     VALUES ($1, $2, $3, now())
                     ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                       catalog = excluded.catalog, updated_utc = excluded.updated_utc",
                    &[&feed, &to.position, &to.catalog],
                )
                .context("cannot move the position")?;
        }
        self.client.batch_execute("COMMIT").context("COMMIT")?;
        Ok(changed)
    }
}

/// A writer of rows as `COPY` reads them (CSV, LF).
pub(super) fn copy_buffer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().from_writer(Vec::new())
}

/// A value as `COPY` reads it; false (nothing written) for a row without a
/// UTC time, which has no key.
pub(super) fn copy_value(
    w: &mut csv::Writer<Vec<u8>>,
    r: &Sourced<ValueRow>,
) -> anyhow::Result<bool> {
    let v = &r.row;
    let Some(time_utc) = utc_text(v.utc) else {
        return Ok(false);
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
    Ok(true)
}

/// An event as `COPY` reads it; false for one without a UTC time.
pub(super) fn copy_event(
    w: &mut csv::Writer<Vec<u8>>,
    r: &Sourced<EventRow>,
) -> anyhow::Result<bool> {
    let Some(time_utc) = utc_text(r.row.utc) else {
        return Ok(false);
    };
    w.write_record(event_fields(r, &Some(time_utc)))?;
    Ok(true)
}
