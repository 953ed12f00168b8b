//! The replica under load, alone in its test binary (so no other test
//! shares the two cores while it times the 200s): 2,000 distinct bodies,
//! the store stopped for part of them; every body reaches the bucket once,
//! byte-exact, and intake's p99 is compared phase by phase.

mod common;

use std::time::Duration;

use common::figure;
use common::garage::Garage;
use common::replica::*;

#[test]
fn two_thousand_bodies_reach_the_bucket_once_through_an_outage_without_slowing_intake() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    let daemon = site.serve();
    // Four phases of 500 bodies: without a replicator (the baseline); with
    // it, copying as bodies come; with the store gone; with the store back
    // (and the backlog going up).
    let alone = post(&daemon.socket, 0, 500);
    let replicator = site.replicator();
    let copying = post(&daemon.socket, 500, 500);
    garage.stop();
    let mut down = post(&daemon.socket, 1000, 250);
    replicator.wait_for("replica unreachable", Duration::from_secs(20));
    down.extend(post(&daemon.socket, 1250, 250));
    let during = scrape(&daemon.socket);
    assert_eq!(metric(&during, "dlsrv_replica_outage"), 1.0, "{during}");
    assert!(metric(&during, "dlsrv_replica_pending_bodies") >= 250.0);
    assert!(metric(&during, "dlsrv_replica_lag_seconds") > 0.0);
    let (code, status, _) = site.dlsrv(&["status"]);
    assert_eq!(code, 0);
    assert!(
        status.contains("replica ") && status.contains("bodies waiting"),
        "{status}"
    );
    garage.restart();
    let back = post(&daemon.socket, 1500, 500);
    site.wait_replicated(2000, Duration::from_secs(120));
    let after = scrape(&daemon.socket);
    assert_eq!(metric(&after, "dlsrv_replica_pending_bodies"), 0.0);
    assert_eq!(metric(&after, "dlsrv_replica_lag_seconds"), 0.0);
    assert_eq!(metric(&after, "dlsrv_replica_outage"), 0.0);
    assert!(
        metric(&after, "dlsrv_replica_errors_total{kind=\"unreachable\"}") >= 1.0,
        "{after}"
    );
    let log = replicator.stop();
    assert_eq!(
        log.matches("replica unreachable").count(),
        1,
        "one line per outage:\n{log}"
    );
    assert_eq!(log.matches("replica reachable again").count(), 1, "{log}");
    assert_bucket_is_the_archive(&garage, &site);
    assert_eq!(site.bodies().len(), 2000);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a, c, d, b) = (p99(alone), p99(copying), p99(down), p99(back));
    figure(&format!(
        "replica: 2000 bodies, p99 of the 200: {:.1} ms without the replicator, {:.1} ms while it copies, \
         {:.1} ms with the store down, {:.1} ms with the store back; every body in the bucket once, byte-exact",
        ms(a),
        ms(c),
        ms(d),
        ms(b)
    ));
    // Intake never waits for the replica (another process, never on the
    // request's path): with the store down the replicator idles and p99 is
    // the baseline's; while it copies it shares the two cores with the
    // store, which the bound allows for.
    let noise = Duration::from_millis(10);
    assert!(
        d <= a * 2 + noise,
        "store down: p99 {d:?} against {a:?} without"
    );
    assert!(
        c <= a * 3 + noise * 3,
        "copying: p99 {c:?} against {a:?} without"
    );
    assert!(
        b <= a * 3 + noise * 3,
        "store back: p99 {b:?} against {a:?} without"
    );
}
