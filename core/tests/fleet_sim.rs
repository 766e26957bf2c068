//! The fleet simulator's short form: 200 lean edges against one real
//! `tidelog serve` over mutual TLS, about 30 s. Asserts correctness only
//! (every edge connected, every threshold reached every edge, every alert
//! applied at the hub exactly once through two reconnect storms), never
//! timings; prints the measurements. The long forms: `benches/fleet.rs`.

mod fleet_common;

use std::time::Duration;

use fleet_common::{run, table, FleetOptions};

#[test]
fn two_hundred_edges_through_two_reconnect_storms_lose_nothing() {
    let mut o = FleetOptions::new(200);
    o.steady = Duration::from_secs(6);
    o.settle = Duration::from_secs(1);
    o.idle_window = Duration::from_secs(2);
    o.connect_limit = Duration::from_secs(120);
    o.storm_limit = Duration::from_secs(120);
    o.drain_limit = Duration::from_secs(120);
    let r = run(&o);
    eprintln!("{}", table(std::slice::from_ref(&r)));
    for e in &r.errors {
        eprintln!("link error seen: {e}");
    }
    let problems = r.problems();
    assert!(
        problems.is_empty(),
        "{problems:#?}\nhub stderr (last lines):\n{}",
        r.hub_tail
    );
    // Both storms happened and every edge came back from each.
    assert!(r.storm_drop.is_some() && r.storm_kill.is_some(), "{r:?}");
    assert!(r.links_made >= 3 * 200, "links made: {}", r.links_made);
}
