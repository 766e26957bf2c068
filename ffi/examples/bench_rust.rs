//! The Rust twin of ffi/bench/bench_c.c: the same single-record upserts and
//! point gets, through the core crate directly. Run both with
//! ffi/bench/run.sh. Usage: bench_rust <scratch dir> <records> <gets>

use std::time::Instant;

use serde_json::json;
use tidelog_core::{Database, OpenOptions, TableOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} <scratch dir> <records> <gets>", args[0]);
        std::process::exit(2);
    }
    let (dir, n, gets): (&str, i64, i64) = (&args[1], args[2].parse()?, args[3].parse()?);
    let db = Database::open(dir, OpenOptions::new("bench"))?;
    db.create_table("t", TableOptions::default())?;

    let t0 = Instant::now();
    for i in 0..n {
        let value = (i as f64 * 0.5 * 10.0).round() / 10.0;
        db.upsert(
            "t",
            json!({"id": i, "sensor": format!("s-{}", i % 16), "value": value}),
        )?;
    }
    let t_upsert = t0.elapsed().as_secs_f64();

    // Point gets as a Rust caller does them: the record, its JSON text read.
    let mut bytes = 0usize;
    let t0 = Instant::now();
    for i in 0..gets {
        let k = (i * 7919) % n;
        let r = db.get("t", k)?.ok_or("missing record")?;
        bytes += r.body_json().len();
    }
    let t_get = t0.elapsed().as_secs_f64();

    // The same, also producing the JSON text with the time attributes that
    // the C call hands out.
    let t0 = Instant::now();
    for i in 0..gets {
        let k = (i * 7919) % n;
        let r = db.get("t", k)?.ok_or("missing record")?;
        bytes += r.to_json_string().len();
    }
    let t_get_json = t0.elapsed().as_secs_f64();
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
