//! The sink driver from a hub database into a real PostgreSQL: a replay
//! changes nothing; a killed server, a down server, a log trimmed past the
//! resume point, a resume point past the log and a server that never
//! answers are all got through, with the log held meanwhile.
#![cfg(feature = "postgres")]

mod common;
mod pg_common;
mod pg_sink_common;

use std::time::{Duration, Instant};

use pg_common::Postgres;
use pg_sink_common::*;
use serde_json::json;
use tidelog::cloud::driver;
use tidelog::cloud::postgres::{PostgresSink, PostgresSinkConfig};
use tidelog::{Key, Retention};

#[test]
fn a_replay_from_an_older_resume_point_changes_nothing() {
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 300, 3, 200);
    // Patches and counters carry no after-image: the record's state goes.
    db.increment("alerts", 7, "hits", 5).unwrap();
    db.update("alerts", json!({"id": 8, "extra": true}))
        .unwrap();
    for k in [7, 8] {
        let r = db.get("alerts", k).unwrap().unwrap();
        model.insert(
            Key::Int(k),
            (
                Some(serde_json::from_str(r.body_json()).unwrap()),
                r.stamp(),
            ),
        );
    }
    rt().block_on(async {
        let c = client(&pg).await;
        let cfg = config(&pg, "replay", &[("alerts", None)]);
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg.clone(), "hub").unwrap(),
            fast(&["alerts"], 64),
        );
        caught_up(&db, &h).await;
        assert_matches(&c, &model).await;
        let before = c
            .query(
                "SELECT key, record, deleted, stamp_time, stamp_node FROM alerts ORDER BY key",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{:?}", r))
            .collect::<Vec<_>>();
        let s = h.status();
        assert!(s.batches >= 5 && s.rows > 0 && s.backlog == 0, "{s:?}");
        h.stop().await;
        let was = digest(&c).await;
        // Rewind the resume point by hand and replay everything.
        c.execute("UPDATE tidelog_sink_progress SET seq = 0", &[])
            .await
            .unwrap();
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 64),
        );
        caught_up(&db, &h).await;
        assert!(h.status().rows > 0);
        h.stop().await;
        assert_eq!(digest(&c).await, was);
        assert_eq!(before.len(), model.len());
        assert_matches(&c, &model).await;
    });
}

#[test]
fn a_killed_server_is_retried_through_and_nothing_lands_twice() {
    let mut pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let runtime = rt();
    let c0 = runtime.block_on(client(&pg));
    drop(c0);
    let cfg = config(&pg, "kill", &[("alerts", None)]);
    let h = runtime.block_on(async {
        driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 50),
        )
    });
    let mut model = Model::new();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut model = Model::new();
            write_alerts(&db, &mut model, 0, 1500, 4, 2000);
            model
        })
    };
    // Kill it once some batches landed, mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.status().batches < 5 {
        assert!(Instant::now() < deadline, "{:?}", h.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.kill();
    model.extend(writer.join().unwrap());
    // The sink may have drained everything before the kill landed: these
    // commits go out while the server is down, so it must fail at least
    // once before the restart.
    write_alerts(&db, &mut model, 1500, 200, 4, 2000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.status().retries == 0 {
        assert!(Instant::now() < deadline, "{:?}", h.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.restart();
    runtime.block_on(async {
        caught_up(&db, &h).await;
        let s = h.status();
        assert!(s.retries >= 1, "{s:?}");
        assert!(s.last_error.is_some(), "{s:?}");
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        assert_eq!(
            progress(&c, "kill").await,
            Some(db.log_bounds().unwrap().last as i64)
        );
        h.stop().await;
    });
}

#[test]
fn writes_proceed_while_the_server_is_down_and_land_after() {
    let mut pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let runtime = rt();
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 50, 2, 100);
    let cfg = config(&pg, "down", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&db, &h).await;
        h
    });
    pg.kill();
    // Every commit returns while PostgreSQL is down: the log buffers.
    write_alerts(&db, &mut model, 50, 800, 3, 1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = h.status();
        if !s.connected && s.backlog > 0 && s.retries > 0 {
            assert!(s.last_error_transient == Some(true), "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.restart();
    runtime.block_on(async {
        caught_up(&db, &h).await;
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        let s = h.status();
        assert_eq!((s.backlog, s.overruns), (0, 0), "{s:?}");
        h.stop().await;
    });
}

#[test]
fn a_log_trimmed_past_the_resume_point_is_reported_and_the_state_resent() {
    let mut pg = Postgres::start();
    let dir = common::scratch_dir();
    let retention = Retention {
        log_max_bytes: 32 << 10,
        ..Retention::default()
    };
    let db = hub(dir.path(), Some(retention));
    let runtime = rt();
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 20, 2, 500);
    let cfg = config(&pg, "overrun", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&db, &h).await;
        h
    });
    let resume = h.status().resume_point;
    pg.kill();
    // Deletes among them: their tombstones must reach PostgreSQL by the
    // state scan, the log that held them being gone.
    write_alerts(&db, &mut model, 20, 1500, 2, 500);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.log_bounds().unwrap().first <= resume + 1 {
        assert!(
            Instant::now() < deadline,
            "the log was not trimmed: {:?}",
            db.log_bounds()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pg.restart();
    runtime.block_on(async {
        caught_up(&db, &h).await;
        let s = h.status();
        assert!(s.overruns >= 1, "{s:?}");
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        h.stop().await;
    });
}

/// With replication running and no peer needing the log, retention trims
/// every acknowledged entry; a sink whose destination is down holds the
/// log at its resume point like a peer would. A second hub without a sink,
/// written the same, is the control: its log does get trimmed.
#[test]
fn a_sink_holds_the_log_at_its_resume_point_while_its_destination_is_down() {
    let mut pg = Postgres::start();
    let (d1, d2) = (common::scratch_dir(), common::scratch_dir());
    let (held, control) = (hub(d1.path(), None), hub(d2.path(), None));
    for db in [&held, &control] {
        db.start_replication(tidelog::ReplicationOptions::insecure())
            .unwrap();
    }
    let runtime = rt();
    let mut model = Model::new();
    write_alerts(&held, &mut model, 0, 20, 2, 100);
    let cfg = config(&pg, "hold", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            held.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&held, &h).await;
        h
    });
    let resume = h.status().resume_point;
    pg.kill();
    write_alerts(&held, &mut model, 20, 200, 2, 100);
    write_alerts(&control, &mut Model::new(), 0, 220, 2, 100);
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.log_bounds().unwrap().first <= 1 {
        assert!(
            Instant::now() < deadline,
            "the control's log was never trimmed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // One more trim pass of the held hub after the control's (both run
    // every second): then the hold has been looked at.
    std::thread::sleep(Duration::from_millis(1500));
    let first = held.log_bounds().unwrap().first;
    assert!(
        first <= resume + 1,
        "trimmed to {first} past the sink's resume point {resume}"
    );
    pg.restart();
    runtime.block_on(async {
        caught_up(&held, &h).await;
        assert_eq!(h.status().overruns, 0);
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        h.stop().await;
    });
}

/// A resume point past this hub's log was written by another data
/// directory under the same hub name: the driver resends the state rather
/// than skip this log up to that point.
#[test]
fn a_resume_point_past_the_hubs_log_resends_the_state() {
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 40, 2, 60);
    let runtime = rt();
    runtime.block_on(async {
        let c = client(&pg).await;
        c.batch_execute(
            "CREATE TABLE tidelog_sink_progress (sink text NOT NULL, hub text NOT NULL, \
             seq bigint NOT NULL, PRIMARY KEY (sink, hub)); \
             INSERT INTO tidelog_sink_progress VALUES ('reset', 'hub', 1000000)",
        )
        .await
        .unwrap();
        let cfg = config(&pg, "reset", &[("alerts", None)]);
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&db, &h).await;
        assert_matches(&c, &model).await;
        // And the log after it is followed as ever.
        let mut more = Model::new();
        write_alerts(&db, &mut more, 40, 20, 2, 60);
        model.extend(more);
        caught_up(&db, &h).await;
        assert_matches(&c, &model).await;
        h.stop().await;
    });
}

/// A destination that accepts the connection and then says nothing (a
/// network dropping packets) is a transient failure after the timeout,
/// retried, never a hang.
#[test]
fn a_destination_that_never_answers_times_out_and_is_retried() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepted connections are kept open and never read.
    let keeper = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(3) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    db.upsert("alerts", json!({"id": 1})).unwrap();
    let mut cfg = PostgresSinkConfig::new(
        format!("host=127.0.0.1 port={port} user=tidelog dbname=tidelog"),
        &["alerts"],
    );
    cfg.name = "silent".into();
    let mut dc = fast(&["alerts"], 10);
    dc.apply_timeout = Duration::from_millis(300);
    rt().block_on(async {
        let h = driver::spawn(db.clone(), PostgresSink::new(cfg, "hub").unwrap(), dc);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = h.status();
            if s.retries >= 2 {
                assert!(!s.connected, "{s:?}");
                assert_eq!(s.last_error_transient, Some(true), "{s:?}");
                assert!(
                    s.last_error.as_deref().unwrap_or("").contains("no answer"),
                    "{s:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Stop is prompt even mid-try.
        h.stop().await;
    });
    drop(keeper);
}
