//! `ott-emulator`: a stand-in for an OTT netDL data logger that talks the logger's HTTP
//! protocol to dlsrv (or anything in front of it), for manual checks, tests and load runs.

pub mod http;
pub mod ott;
pub mod stats;
pub mod target;
pub mod tls;
