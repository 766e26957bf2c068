//! A peer's dial addresses: the happy case next to each hostile one.

use super::*;

fn peer() -> PeerConfig {
    PeerConfig::new("cloud").address("hub-1.example:7000")
}

fn msg(p: PeerConfig) -> String {
    p.validate("edge-1").unwrap_err().to_string()
}

#[test]
fn several_hubs_are_dialed_in_order() {
    let p = peer()
        .also_at("hub-2.example:7000")
        .also_at("127.0.0.1:7001");
    p.validate("edge-1").unwrap();
    assert_eq!(
        p.dial_addresses(),
        ["hub-1.example:7000", "hub-2.example:7000", "127.0.0.1:7001"]
    );
    assert!(PeerConfig::new("edge-1").dial_addresses().is_empty());
}

#[test]
fn bad_addresses_are_refused_with_reasons() {
    assert!(msg(peer().also_at("hub-2.example")).contains("must be host:port"));
    assert!(msg(peer().also_at("hub-2.example:70000")).contains("must be host:port"));
    assert!(msg(peer().also_at(":7000")).contains("must be host:port"));
    assert!(msg(peer().also_at("")).contains("must be host:port"));
    assert!(msg(PeerConfig::new("cloud").address("nohost")).contains("peer address"));
    assert!(msg(peer().also_at("hub-1.example:7000")).contains("listed twice"));
    let no_first = PeerConfig::new("cloud").also_at("hub-2.example:7000");
    assert!(msg(no_first).contains("no `address`"));
    let mut many = peer();
    for i in 1..MAX_PEER_ADDRESSES {
        many = many.also_at(format!("hub-{}.example:7000", i + 1));
    }
    many.validate("edge-1").unwrap();
    let m = msg(many.also_at("one-more.example:7000"));
    assert!(
        m.contains("17 addresses") && m.contains("at most 16"),
        "{m}"
    );
}

#[test]
fn addresses_decode_from_json_and_default_to_none() {
    let p: PeerConfig = serde_json::from_value(serde_json::json!({
        "name": "cloud", "address": "a:1", "addresses": ["b:2", "c:3"]
    }))
    .unwrap();
    assert_eq!(p.dial_addresses(), ["a:1", "b:2", "c:3"]);
    let p: PeerConfig =
        serde_json::from_value(serde_json::json!({"name": "cloud", "address": "a:1"})).unwrap();
    assert!(p.addresses.is_empty());
    let e = serde_json::from_value::<PeerConfig>(serde_json::json!({
        "name": "cloud", "addresses": "b:2"
    }))
    .unwrap_err();
    assert!(e.to_string().contains("sequence"), "{e}");
}
