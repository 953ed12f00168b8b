//! The sample transmissions in `transmission_test/samples/` go through the
//! real service and are archived byte for byte.

mod common;

use std::path::Path;

use common::TestServer;

fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("transmission_test/samples")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn every_sample_is_archived_byte_exact() {
    let server = TestServer::start().await;
    let cases = [
        ("senddata", "senddata.xml"),
        ("senddata", "senddata-utf8.xml"),
        ("senddata", "senddata-nodecl.xml"),
        ("sendalarm", "sendalarm.xml"),
    ];
    for (action, name) in cases {
        let body = sample(name);
        let reply = server
            .post(
                &format!("/ott/?stationid=0000452891&action={action}"),
                &body,
            )
            .await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let file = server.data.join(reply.stored_path(action, "0000452891"));
        assert_eq!(
            std::fs::read(&file).expect("stored where the answer says"),
            body,
            "{name}"
        );
    }
    // The full sample really carries the raw ISO-8859-1 degree byte.
    let full = sample("senddata.xml");
    assert!(common::find(&full, b"\xb0C").is_some());
    assert!(std::str::from_utf8(&full).is_err());
    server.stop().await;
}
