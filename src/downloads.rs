//! Static downloads for `getconfiguration` and `getfirmware`: the file the
//! operator published under `downloads_dir` at the request's URL path.
//!
//! ```text
//! <downloads_dir>/<path>                          for every station
//! <downloads_dir>/stations/<stationid>/<path>     for that station only; preferred
//! ```
//!
//! A request for `<path>` with `stationid=S` gets `stations/S/<path>` if it
//! exists, else `<path>`. Nothing below `stations/` can be asked for
//! directly, so a login that may speak only for its own stations reaches
//! only their files and the common ones. No path can lead out of the
//! directory: `..`, `.`, empty segments, NUL and backslashes are refused,
//! and a symbolic link pointing outside is treated as absent.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::RequestError;

/// The per-station part of `downloads_dir`.
const STATIONS: &str = "stations";

/// The file published at `url_path` for `station`: its own, else the common one.
pub(crate) fn resolve_for(
    root: &Path,
    station: &str,
    url_path: &str,
) -> Result<PathBuf, RequestError> {
    let decoded = path_decode(url_path)?;
    if decoded.trim_start_matches('/').split('/').next() == Some(STATIONS) {
        return Err(RequestError::NotFound); // only through the stationid
    }
    match resolve(&root.join(STATIONS).join(station), url_path) {
        Err(RequestError::NotFound) => resolve(root, url_path),
        other => other,
    }
}

/// Maps a URL path (`/fw/netdl-2.1.bin`) to a regular file below `root`.
fn resolve(root: &Path, url_path: &str) -> Result<PathBuf, RequestError> {
    let decoded = path_decode(url_path)?;
    // A trailing slash names a directory, which is never served.
    if decoded.ends_with('/') {
        return Err(RequestError::NotFound);
    }
    let mut relative = PathBuf::new();
    for segment in decoded.trim_start_matches('/').split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || segment.contains(['\0', '\\'])
        {
            return Err(RequestError::BadQuery(format!(
                "bad download path {url_path:?}"
            )));
        }
        relative.push(segment);
    }
    let not_found = || RequestError::NotFound;
    let root = fs::canonicalize(root).map_err(|_| not_found())?;
    let file = fs::canonicalize(root.join(&relative)).map_err(|_| not_found())?;
    if !file.starts_with(&root) || !file.is_file() {
        return Err(not_found());
    }
    Ok(file)
}

/// Percent-decoding for a path (`percent-encoding`): `+` stays a `+`, a
/// `%` not followed by two hex digits stays a `%`; the result must be UTF-8.
fn path_decode(path: &str) -> Result<String, RequestError> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| RequestError::BadQuery("download path is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_files_below_the_root_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("downloads");
        fs::create_dir_all(root.join("fw")).expect("mkdir");
        fs::write(root.join("fw/netdl+2.bin"), b"image").expect("write");
        fs::write(dir.path().join("secret"), b"outside").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).expect("symlink");

        let found = resolve(&root, "/fw/netdl+2.bin").expect("found");
        assert_eq!(fs::read(found).expect("read"), b"image");
        assert!(resolve(&root, "/fw/netdl%2B2.bin").is_ok());

        for bad in [
            "/../secret",
            "/fw/../../secret",
            "/%2e%2e/secret",
            "/fw//x",
            "/fw/%00",
            "/a\\b",
            "/fw/%2E",
        ] {
            assert!(
                matches!(resolve(&root, bad), Err(RequestError::BadQuery(_))),
                "{bad}"
            );
        }
        for absent in ["/fw/none.bin", "/link", "/fw", "/fw/", "/fw/netdl+2.bin/"] {
            assert!(
                matches!(resolve(&root, absent), Err(RequestError::NotFound)),
                "{absent}"
            );
        }
        assert!(matches!(
            resolve(&dir.path().join("nope"), "/x"),
            Err(RequestError::NotFound)
        ));
    }

    #[test]
    fn a_station_gets_its_own_file_else_the_common_one_and_never_another_stations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("fw")).expect("mkdir");
        fs::create_dir_all(root.join("stations/A/fw")).expect("mkdir");
        fs::write(root.join("fw/x.bin"), b"common").expect("write");
        fs::write(root.join("stations/A/fw/x.bin"), b"for A").expect("write");
        let read = |station, path| {
            fs::read(resolve_for(root, station, path).expect("found")).expect("read")
        };
        assert_eq!(read("A", "/fw/x.bin"), b"for A");
        assert_eq!(read("B", "/fw/x.bin"), b"common");
        for (station, path) in [
            ("B", "/stations/A/fw/x.bin"),
            ("A", "/stations/A/fw/x.bin"),
            ("B", "/%73tations/A/fw/x.bin"),
        ] {
            assert!(
                matches!(
                    resolve_for(root, station, path),
                    Err(RequestError::NotFound)
                ),
                "{station} {path}"
            );
        }
    }
}
