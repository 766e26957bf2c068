//! The Rust twin of ffi/bench/bench_c.c: the same single-record upserts and
//! point gets, through the core crate directly. Run both with
//! ffi/bench/run.sh. Usage: bench_rust <scratch dir> <records> <gets>

use serde_json::json;
use tidelog_core::{Database, OpenOptions, TableOptions};

/// CPU time of the calling thread (as bench_c.c measures it).
fn now_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} <scratch dir> <records> <gets>", args[0]);
        std::process::exit(2);
    }
    let (dir, n, gets): (&str, i64, i64) = (&args[1], args[2].parse()?, args[3].parse()?);
    let db = Database::open(dir, OpenOptions::new("bench"))?;
    db.create_table("t", TableOptions::default())?;

    // The values are built before the clock starts (as bench_c.c formats its
    // JSON text before): what is timed is the calls themselves.
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let value = (i as f64 * 0.5 * 10.0).round() / 10.0;
            json!({"id": i, "sensor": format!("s-{}", i % 16), "value": value})
        })
        .collect();
    let t0 = now_s();
    for r in records {
        db.upsert("t", r)?;
    }
    let t_upsert = now_s() - t0;

    // Point gets as a Rust caller does them: the record, its JSON text read.
    let mut bytes = 0usize;
    let t0 = now_s();
    for i in 0..gets {
        let k = (i * 7919) % n;
        let r = db.get("t", k)?.ok_or("missing record")?;
        bytes += r.body_json().len();
    }
    let t_get = now_s() - t0;

    // The same, also producing the JSON text with the time attributes that
    // the C call hands out.
    let t0 = now_s();
    for i in 0..gets {
        let k = (i * 7919) % n;
        let r = db.get("t", k)?.ok_or("missing record")?;
        bytes += r.to_json_string().len();
    }
    let t_get_json = now_s() - t0;
    assert!(bytes > 0);

    db.close()?;
    println!(
        "upsert_per_s={:.0} get_per_s={:.0} get_json_per_s={:.0}",
        n as f64 / t_upsert,
        gets as f64 / t_get,
        gets as f64 / t_get_json
    );
    Ok(())
}
