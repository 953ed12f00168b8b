//! make-archive: writes an archive of BODIES data messages of about 44 KB
//! each, laid out as dlsrv stores them (`senddata/YYYY/MM/DD/<station>_<time>`),
//! for bench/export. Modelled on a netDL's daily transmission: ISO-8859-1,
//! `StationInfo`, two station events, three channels (water level in cm,
//! water temperature in °C as the byte 0xB0, supply voltage in V) of 304
//! values each at 5-minute steps; about one value in 200 with an error
//! code; each message repeats the last hour of the one before (what a
//! logger resends), so copies are collapsed as in a real archive. Stations
//! in time zones +01:00, 00:00 and -03:30.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The archive's root (`data_dir`); created.
    data_dir: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    bodies: u32,
    #[arg(long, default_value_t = 200)]
    stations: u32,
}

const STEP_MIN: i64 = 5;
const VALUES: i64 = 304;

/// Unix time `t` in `format`.
fn at(t: i64, format: &str) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format(format)
        .to_string()
}

/// `YYYY-MM-DDThh:mm:ss` of Unix time `t`.
fn local(t: i64) -> String {
    at(t, "%Y-%m-%dT%H:%M:%S")
}

fn body(station: &str, tz: (&str, i64), k: i64, start: i64) -> Vec<u8> {
    let (tz_text, tz_secs) = tz;
    // Local start of this message's values: a day each, an hour of overlap.
    let first = start + k * (VALUES - 12) * STEP_MIN * 60 + tz_secs;
    let sent = first + VALUES * STEP_MIN * 60 + 300;
    let mut x = String::with_capacity(46_000);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<StationDataList>\n  <StationData stationId=\"{station}\" name=\"Pegel M\u{fc}hlbach {station}\" timezone=\"{tz_text}\">\n    <StationInfo time=\"{}\" firmware=\"V 2.10.4\" batteryVoltage=\"12.{}\" temperature=\"11.3\" gsmSignal=\"17\" transmissionCycle=\"86400\" deviceType=\"netDL1000\"/>\n    <StationEvents>\n      <Event t=\"{}\" type=\"error.communication\" code=\"12\" textCode=\"GPRS_ATTACH\">GPRS attach failed, retrying in 120 s</Event>\n      <Event t=\"{}\" type=\"info.observer.text\" code=\"1\">Housing 11&#176;C, door closed</Event>\n    </StationEvents>\n",
        local(sent),
        k % 10,
        local(sent - 600),
        local(sent - 300),
    );
    for (id, name, unit, base) in [
        ("0010", "Wasserstand", "cm", 140.0),
        ("0020", "Wassertemperatur", "\u{b0}C", 8.0),
        ("0050", "Batteriespannung", "V", 12.5),
    ] {
        let _ = write!(
            x,
            "    <ChannelData channelId=\"{id}\" name=\"{name}\" unit=\"{unit}\" samplingInterval=\"60\" storageInterval=\"300\">\n      <Values>\n"
        );
        for i in 0..VALUES {
            let t = first + i * STEP_MIN * 60;
            let n = (t / 300) as f64;
            let v = base + (n * 0.01).sin() * base * 0.05;
            if (t / 300 + id.len() as i64) % 200 == 0 {
                let _ = writeln!(
                    x,
                    "        <VT t=\"{}\" errorcode=\"05\" errortext=\"line break\">0</VT>",
                    local(t)
                );
            } else {
                let _ = writeln!(x, "        <VT t=\"{}\">{v:.2}</VT>", local(t));
            }
        }
        x.push_str("      </Values>\n    </ChannelData>\n");
    }
    x.push_str("  </StationData>\n</StationDataList>\n");
    // ISO-8859-1, as declared.
    x.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = 1_735_689_600; // 2025-01-01T00:00:00Z
    let per_station = i64::from(args.bodies.div_ceil(args.stations));
    let mut written = 0u32;
    let mut bytes = 0u64;
    'all: for k in 0..per_station {
        for s in 0..args.stations {
            if written == args.bodies {
                break 'all;
            }
            let station = format!("{:010}", 452_000 + s);
            let tz = match s % 3 {
                0 => ("+01:00", 3600),
                1 => ("00:00", 0),
                _ => ("-03:30", -12_600),
            };
            let doc = body(&station, tz, k, start);
            // Received a few minutes after the last value, UTC.
            let received = start
                + k * (VALUES - 12) * STEP_MIN * 60
                + VALUES * STEP_MIN * 60
                + 600
                + i64::from(s);
            let dir = args
                .data_dir
                .join(format!("senddata/{}", at(received, "%Y/%m/%d")));
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            let name = format!("{station}_{}.000000", local(received).replace(':', "+"));
            std::fs::write(dir.join(name), &doc)?;
            written += 1;
            bytes += doc.len() as u64;
        }
    }
    eprintln!(
        "make-archive: {written} bodies, {:.1} MB, {:.1} KB each",
        bytes as f64 / 1e6,
        bytes as f64 / 1e3 / f64::from(written.max(1))
    );
    Ok(())
}
