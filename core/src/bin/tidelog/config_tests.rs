//! Tests of the config file: `config.rs` is long enough without them.

use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/tidelog"))
}

#[test]
fn the_module_doc_example_parses() {
    let example: String = include_str!("config.rs")
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| format!("{}\n", l.trim_start_matches("//!")))
        .collect();
    let c = Config::decode(&example, Path::new("/etc/tidelog")).unwrap();
    assert_eq!(c.open.node_name, "cloud");
    assert_eq!(c.data_dir, Path::new("/etc/tidelog/data"));
    assert_eq!(c.tables[0].options().primary_key, "sensor");
    assert_eq!(c.peers[0].tables.len(), 2);
    assert!(c.peers[0].tables[0].publish && !c.peers[0].tables[0].subscribe);
    assert_eq!(c.rules[0].name, "edges");
    assert_eq!(
        c.rules[0].max_silence,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(
        c.replication.get("idle_timeout").and_then(|v| v.as_str()),
        Some("5s")
    );
    assert_eq!(c.open.memory_budget, 64 << 20);
    assert_eq!(
        c.open.retention.log_max_age,
        Some(Duration::from_secs(7 * 86_400))
    );
    // Everything but the example's certificate files checks out.
    let e = c.check().unwrap_err();
    assert!(
        e.contains("/etc/tidelog/pki/cloud.pem does not exist"),
        "{e}"
    );
}

#[test]
fn a_peers_relay_flag_is_read_and_defaults_by_who_dials() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
    let c = parse(&format!(
        "{base}[[peers]]\nname = \"hub\"\naddress = \"h:1\"\n\
         [[peers]]\nname = \"edge\"\n\
         [[peers]]\nname = \"edge-relay\"\nrelays = true\n"
    ))
    .unwrap();
    let accepts: Vec<bool> = c.peers.iter().map(|p| p.accepts_relays()).collect();
    assert_eq!(accepts, [true, false, true]);
    assert_eq!(c.peers[2].relays, Some(true));
}

#[test]
fn a_peers_byte_budget_and_bulk_flags_are_read() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
    let c = parse(&format!(
        "{base}[[peers]]\nname = \"hub\"\naddress = \"h:1\"\n\
         tables = [{{ table = \"readings\", publish = true, bulk = true }},\n\
         {{ table = \"alerts\", publish = true, priority = 9, exempt_from_quota = true }}]\n\
         [peers.budget]\nmax_bytes_per_sec = 32768\nquota_bytes = 50_000_000\n\
         quota_period = \"month\"\nwindows = [\"22:00-06:00\"]\n"
    ))
    .unwrap();
    let b = c.peers[0].budget.clone().unwrap();
    assert_eq!(b.max_bytes_per_sec, Some(32768));
    assert_eq!(b.quota_bytes, Some(50_000_000));
    assert_eq!(b.quota_period, Some(tidelog::QuotaPeriod::Month));
    assert_eq!(b.windows, ["22:00-06:00"]);
    assert!(c.peers[0].tables[0].bulk && c.peers[0].tables[1].exempt_from_quota);
}

#[test]
fn examples_cloud_toml_parses() {
    let text = include_str!("../../../../examples/cloud.toml");
    let c = Config::decode(text, Path::new("/repo/examples")).unwrap();
    assert_eq!(c.data_dir, Path::new("/repo/examples/cloud-data"));
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[1].tables[1].since_ms, Some(1767225600000));
    assert_eq!(c.rules.len(), 1);
    assert_eq!(c.rules[0].node_name, "edge-*");
    assert_eq!(c.open_options().max_clock_skew, Duration::from_secs(60));
    // Its certificates are made by the reader, never committed.
    let e = c.check().unwrap_err();
    assert!(e.contains("pki/cloud.pem does not exist"), "{e}");
}

#[test]
fn mistakes_are_refused_with_reasons() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\n";
    let e = parse(&format!("{base}insecure = true\ndata_dri = \"x\"")).unwrap_err();
    assert!(e.contains("unknown field `data_dri`"), "{e}");
    let e = parse(base).unwrap_err();
    assert!(e.contains("no [tls] section"), "{e}");
    let e = parse(&format!(
        "{base}[tls]\ncert = \"c.pem\"\nkey = \"k\"\nca = \"ca\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("/etc/tidelog/c.pem does not exist"), "{e}");
    let e = parse(&format!("{base}insecure = true\nengine = \"rocks\"")).unwrap_err();
    assert!(e.contains("rocks"), "{e}");
    let e = parse(&format!(
        "{base}insecure = true\n[[peers]]\nname = \"p\"\ntables = [{{ table = \"t\", publsh = true }}]"
    ))
    .unwrap_err();
    assert!(e.contains("publsh"), "{e}");
    let e = parse(&format!(
        "{base}insecure = true\n[[tables]]\nname = \"t\"\n[[tables]]\nname = \"t\""
    ))
    .unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
    let e = parse(&format!(
        "{base}insecure = true\ndurability = \"sync\"\nflush_interval_ms = 5"
    ))
    .unwrap_err();
    assert!(e.contains("only applies"), "{e}");
}

#[test]
fn options_use_the_shared_schema_units_and_ranges() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
    let c = parse(&format!(
        "{base}memory_budget = \"8MiB\"\nmax_clock_skew = 1500\n\
         [replication]\nheartbeat_interval = \"250ms\"\nheartbeat_ms = 300\n"
    ))
    .unwrap_err();
    assert!(c.contains("heartbeat"), "one option given twice: {c}");
    let c = parse(&format!(
        "{base}memory_budget = \"8MiB\"\nmax_clock_skew = 1500\n\
         [replication]\nheartbeat_interval = \"250ms\"\nmax_frame_bytes = \"1MiB\"\n\
         [retention]\nlog_max_bytes = \"32MiB\"\nlog_max_age = \"2d\"\n"
    ))
    .unwrap();
    assert_eq!(c.open.memory_budget, 8 << 20);
    assert_eq!(c.open.max_clock_skew, Duration::from_millis(1500));
    assert_eq!(c.open.retention.log_max_bytes, 32 << 20);
    assert_eq!(
        c.open.retention.log_max_age,
        Some(Duration::from_secs(2 * 86_400))
    );
    let r = c.replication_options().unwrap();
    assert_eq!(r.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(r.max_frame_bytes, 1 << 20);

    let e = parse(&format!("{base}memory_budget = \"1MiB\"")).unwrap_err();
    assert!(
        e.contains("memory_budget") && e.contains("between 4MiB and 1TiB"),
        "{e}"
    );
    let e = parse(&format!("{base}[replication]\nworker_threads = 0")).unwrap_err();
    assert!(
        e.contains("replication.worker_threads") && e.contains("between 1 and 256"),
        "{e}"
    );
    let e = parse(&format!("{base}[retention]\nlog_max_age = \"forever\"")).unwrap_err();
    assert!(
        e.contains("retention.log_max_age") && e.contains("duration"),
        "{e}"
    );
    let e = parse(&format!("{base}[replication]\nheartbeat = 5")).unwrap_err();
    assert!(
        e.contains("heartbeat") && e.contains("heartbeat_interval"),
        "{e}"
    );
    let e = parse(&format!("{base}[replication]\ninsecure = true")).unwrap_err();
    assert!(e.contains("top level"), "{e}");
}

#[test]
fn the_admin_socket_defaults_into_data_dir_and_metrics_are_opt_in() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
    let c = parse(base).unwrap();
    assert_eq!(c.admin_socket, Path::new("/etc/tidelog/d/admin.sock"));
    assert_eq!(c.metrics_listen, None);
    let c = parse(&format!(
        "{base}[admin]\nsocket = \"/run/t.sock\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n"
    ))
    .unwrap();
    assert_eq!(c.admin_socket, Path::new("/run/t.sock"));
    assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
    let e = parse(&format!("{base}[metrics]\nlisten = \"localhost\"\n")).unwrap_err();
    assert!(e.contains("[metrics] listen"), "{e}");
    let e = parse(&format!("{base}[admin]\nsockett = \"/x\"\n")).unwrap_err();
    assert!(e.contains("sockett"), "{e}");
    let long = format!("/{}", "x".repeat(107));
    let e = parse(&format!("{base}[admin]\nsocket = \"{long}\"\n")).unwrap_err();
    assert!(e.contains("108 bytes") && e.contains("at most 107"), "{e}");
}

#[test]
fn a_reload_names_each_setting_that_needs_a_restart() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\nlisten = \"127.0.0.1:0\"\n";
    let old = parse(&format!("{base}status_interval_secs = 5\n")).unwrap();
    // Peers, tables and the status interval are no restart matter.
    let same = parse(&format!(
        "{base}status_interval_secs = 1\n[[tables]]\nname = \"t\"\n[[peers]]\nname = \"p\"\n"
    ))
    .unwrap();
    assert!(old.restart_only_changes(&same).is_empty());
    let new = parse(
        "node_name = \"m\"\ndata_dir = \"e\"\ninsecure = true\nlisten = \"127.0.0.1:1\"\n\
         engine = \"sled\"\n[replication]\nheartbeat_interval = \"2s\"\n",
    )
    .unwrap();
    assert_eq!(
        old.restart_only_changes(&new),
        [
            "engine",
            "node_name",
            "data_dir",
            "listen",
            // Its default lives in data_dir, so it moved too.
            "admin.socket",
            "replication.heartbeat_interval"
        ]
    );
}

#[test]
fn rules_are_read_in_order_and_checked_with_reasons() {
    let base = "node_name = \"hub\"\ndata_dir = \"d\"\ninsecure = true\n";
    let c = parse(&format!(
        "{base}[[rules]]\nname = \"edges\"\nnode_name = \"edge-*\"\nmax_silence = \"12h\"\n\
         cert_dns_name = \"gateway.fleet.example\"\n\
         tables = [{{ table = \"thresholds\", publish = true }}]\n\
         [rules.budget]\nmax_bytes_per_sec = 4096\n\
         [[rules]]\nname = \"lab\"\nnode_name = \"lab-?\"\n"
    ))
    .unwrap();
    assert_eq!(c.rules.len(), 2);
    assert_eq!(c.rules[0].name, "edges");
    assert_eq!(c.rules[0].max_silence, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(
        c.rules[0].cert_dns_name.as_deref(),
        Some("gateway.fleet.example")
    );
    assert_eq!(
        c.rules[0].budget.as_ref().and_then(|b| b.max_bytes_per_sec),
        Some(4096)
    );
    assert_eq!(c.rules[1].max_silence, None);
    let rule = |body: &str| parse(&format!("{base}[[rules]]\n{body}")).unwrap_err();
    let e = rule("name = \"e\"\nnode_name = \"\"");
    assert!(e.contains("[[rules]] `e`") && e.contains("is empty"), "{e}");
    let e = rule("name = \"e\"\nnode_name = \"edge_*\"");
    assert!(e.contains("'_'"), "{e}");
    let e = rule("name = \"e\"\nnode_name = \"e*\"\nmax_silence = \"forever\"");
    assert!(e.contains("duration"), "{e}");
    let e = rule("name = \"e\"\nnode_name = \"e*\"\nmax_silence = 0");
    assert!(e.contains("max_silence"), "{e}");
    let e = rule("name = \"e\"\nnode_name = \"e*\"\naddress = \"h:1\"");
    assert!(e.contains("unknown field `address`"), "{e}");
    let e = rule("node_name = \"e*\"");
    assert!(e.contains("missing field `name`"), "{e}");
    let e = parse(&format!(
        "{base}[[rules]]\nname = \"e\"\nnode_name = \"a*\"\n[[rules]]\nname = \"e\"\nnode_name = \"b*\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("rule `e` is listed twice"), "{e}");
}

#[test]
fn sinks_are_read_checked_and_not_reloadable() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
    let sink = "[[sinks]]\nkind = \"postgres\"\nurl = \"host=127.0.0.1 user=t dbname=f\"\n\
                tables = [{ name = \"alerts\" }, { name = \"ev\", pg_table = \"fleet.events\" }]\n";
    let c = parse(&format!("{base}{sink}")).unwrap();
    let SinkConfig::Postgres(p) = &c.sinks[0] else {
        panic!("a postgres sink: {:?}", c.sinks[0]);
    };
    assert_eq!(c.sinks[0].label(), "postgres:postgres");
    assert_eq!(p.tables[1].pg_table.as_deref(), Some("fleet.events"));
    assert_eq!((p.max_batch_rows, p.hub.as_deref()), (10_000, None));

    // Hostile and mistaken entries, each refused with what to change.
    let e = parse(&format!("{base}{sink}colour = 1\n")).unwrap_err();
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = parse(&format!(
        "{base}[[sinks]]\nkind = \"kafka\"\nurl = \"x\"\ntables = []\n"
    ))
    .unwrap_err();
    assert!(e.contains("kafka") && e.contains("postgres"), "{e}");
    let e = parse(&format!("{base}{sink}{sink}")).unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
    let e = parse(&format!(
        "{base}[[sinks]]\nkind = \"postgres\"\nurl = \"host=x\"\ntables = [{{ name = \"a\", pg_table = \"a.b.c\" }}]\n"
    ))
    .unwrap_err();
    assert!(e.contains("schema.table"), "{e}");
    let e = parse(&format!(
        "{base}[[sinks]]\nkind = \"postgres\"\nurl = \"host=x\"\ntables = []\n"
    ))
    .unwrap_err();
    assert!(e.contains("`tables` is empty"), "{e}");

    let without = parse(base).unwrap();
    assert_eq!(without.restart_only_changes(&c), ["sinks"]);
    assert!(c
        .restart_only_changes(&parse(&format!("{base}{sink}")).unwrap())
        .is_empty());
}

#[test]
fn jetstream_sinks_are_read_with_the_hub_left_to_serve_and_checked() {
    let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
    let sink =
        "[[sinks]]\nkind = \"jetstream\"\nurl = \"nats://127.0.0.1:4222\"\ntables = [\"alerts\"]\n";
    let c = parse(&format!("{base}{sink}")).unwrap();
    let SinkConfig::Jetstream(j) = &c.sinks[0] else {
        panic!("a jetstream sink: {:?}", c.sinks[0]);
    };
    assert_eq!(c.sinks[0].label(), "jetstream:tidelog");
    assert!(j.hub.is_empty(), "serve fills the hub in");
    // Hostile and mistaken entries, each refused naming the field.
    for (extra, want) in [
        ("stream = \"a.b\"\n", "stream"),
        ("max_in_flight = 0\n", "max_in_flight"),
        ("duplicate_window = \"0s\"\n", "duplicate_window"),
        ("colour = 1\n", "unknown field `colour`"),
    ] {
        let e = parse(&format!("{base}{sink}{extra}")).unwrap_err();
        assert!(e.contains(want), "{extra}: {e}");
    }
    let e = parse(&format!("{base}{sink}{sink}")).unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn sources_parse_with_defaults_and_refuse_what_would_not_work() {
    let base = "node_name = \"cloud\"\ndata_dir = \"d\"\ninsecure = true\n";
    let c = parse(&format!(
        "{base}[[sources]]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\ntable = \"thresholds\"\n\
         [[sources]]\nkind = \"postgres\"\nurl = \"host=h\"\ntable = \"t2\"\npg_table = \"cloud.t_2\"\n\
         primary_key = \"sensor\"\npoll_interval = \"250ms\"\nmax_age = \"1d\"\nmax_rows = 50\n"
    ))
    .unwrap();
    let a = c.sources[0].pg_config("hub");
    assert_eq!(
        (a.pg_table.as_str(), a.primary_key.as_deref()),
        ("thresholds", None)
    );
    assert_eq!(a.max_rows, 1_000_000);
    let b = c.sources[1].pg_config("hub");
    assert_eq!(b.pg_table, "cloud.t_2");
    assert_eq!(b.poll_interval, Duration::from_millis(250));
    assert_eq!(b.max_age, Duration::from_secs(86_400));
    assert_eq!((b.max_rows, b.hub.as_str()), (50, "hub"));
    let source = |body: &str| parse(&format!("{base}[[sources]]\n{body}")).unwrap_err();
    let e = source("kind = \"mysql\"\nurl = \"x\"\ntable = \"t\"");
    assert!(e.contains("unknown variant `mysql`"), "{e}");
    let e =
        source("kind = \"postgres\"\nurl = \"x\"\ntable = \"t\"\npg_table = \"t; DROP TABLE x\"");
    assert!(
        e.contains("[[sources]] #1") && e.contains("pg_table"),
        "{e}"
    );
    let e = source("kind = \"postgres\"\nurl = \"x\"\ntable = \"t\"\nslot = \"s\"");
    assert!(e.contains("unknown field `slot`"), "{e}");
    let e = source("kind = \"postgres\"\ntable = \"t\"");
    assert!(e.contains("missing field `url`"), "{e}");
    let e = source("kind = \"postgres\"\nurl = \"x\"\ntable = \"t\"\nmax_rows = 0");
    assert!(e.contains("at least 1"), "{e}");
    let e = source(
        "kind = \"postgres\"\nurl = \"x\"\ntable = \"t\"\n[[sources]]\nkind = \"postgres\"\nurl = \"y\"\ntable = \"t\"",
    );
    assert!(e.contains("listed twice"), "{e}");
}
