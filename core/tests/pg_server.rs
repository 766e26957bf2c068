//! The private PostgreSQL server the sink and source tests stand on:
//! started as its own user on a free 127.0.0.1 port, killed by PID, and
//! restarted with what it committed.

mod pg_common;

use pg_common::Postgres;

#[test]
fn a_private_server_keeps_committed_rows_across_a_kill_and_a_restart() {
    let mut pg = Postgres::start();
    let version: u32 = pg.query("SHOW server_version_num").parse().unwrap();
    assert!(version >= 150000, "server version {version}");
    pg.query("CREATE TABLE t (k int PRIMARY KEY, v text)");
    pg.query("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    let pid = pg.pid().unwrap();
    pg.kill();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    pg.restart();
    assert_eq!(
        pg.query("SELECT string_agg(v, ',' ORDER BY k) FROM t"),
        "a,b"
    );
    pg.stop();
    pg.restart();
    assert_eq!(pg.query("SELECT count(*) FROM t"), "2");
}
