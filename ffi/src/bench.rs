//! Single-record upserts and point gets through the C ABI vs the same calls
//! on the Rust API, on the SAME database and records, in one process,
//! alternating in small batches so both see the same data-structure state
//! and the same machine load. Only the call path differs: JSON text in, the
//! handle lookup, the panic barrier, JSON text out in a `tidelog_string`.
//!
//! The `extern "C"` functions are called through function pointers hidden
//! from the optimiser (`black_box`), so nothing is inlined across the
//! boundary that a C caller could not inline either.
//!
//! Not a test (it asserts nothing about speed): run it in release with
//! `ffi/bench/run.sh`, or
//! `cargo test --release -p tidelog-ffi --lib -- --ignored --nocapture abi_vs_rust`.
//! Sizes: TIDELOG_BENCH_RECORDS, TIDELOG_BENCH_GETS, TIDELOG_BENCH_BATCH.

use std::ffi::c_char;
use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use tidelog_core::Database;

use crate::*;

type UpsertFn =
    unsafe extern "C" fn(*mut tidelog_db, *const c_char, *const c_char, *mut u64) -> tidelog_status;
type GetFn = unsafe extern "C" fn(
    *mut tidelog_db,
    *const c_char,
    *const c_char,
    *mut *mut tidelog_string,
) -> tidelog_status;

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Wall and thread-CPU seconds spent in one side's batches.
#[derive(Default, Clone, Copy)]
struct Clock {
    wall: f64,
    cpu: f64,
}

fn timed(c: &mut Clock, f: impl FnOnce()) {
    let (w, t) = (Instant::now(), thread_cpu_s());
    f();
    c.wall += w.elapsed().as_secs_f64();
    c.cpu += thread_cpu_s() - t;
}

fn env_num(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, c_ops: i64, c: Clock, r_ops: i64, r: Clock) {
    let (cw, rw) = (c_ops as f64 / c.wall, r_ops as f64 / r.wall);
    let (cc, rc) = (c_ops as f64 / c.cpu, r_ops as f64 / r.cpu);
    println!(
        "{name:<24} wall: C ABI {cw:>8.0}/s  Rust {rw:>8.0}/s  C/Rust {:>5.1}%   \
         thread CPU: C ABI {cc:>8.0}/s  Rust {rc:>8.0}/s  C/Rust {:>5.1}%",
        100.0 * cw / rw,
        100.0 * cc / rc
    );
}

#[test]
#[ignore = "a benchmark: run in release (ffi/bench/run.sh)"]
fn abi_vs_rust() {
    let n = env_num("TIDELOG_BENCH_RECORDS", 50_000);
    let gets = env_num("TIDELOG_BENCH_GETS", 200_000);
    let batch = env_num("TIDELOG_BENCH_BATCH", 250);
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("tidelog-bench-abi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let upsert: UpsertFn = black_box(tidelog_upsert as UpsertFn);
    let get: GetFn = black_box(tidelog_get as GetFn);

    let cdir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut h = std::ptr::null_mut();
    // SAFETY: valid C strings and out pointer.
    let st = unsafe {
        tidelog_open(
            cdir.as_ptr(),
            c"{\"node_name\": \"bench\"}".as_ptr(),
            &mut h,
        )
    };
    assert_eq!(st, tidelog_status::TIDELOG_OK);
    // The same database, for the Rust side.
    let db: Database = crate::handles::db(h).unwrap();
    db.create_table("t", Default::default()).unwrap();
    let table = c"t";

    // Inputs are made before the clocks start: JSON text for the C side,
    // JSON values for the Rust side. What is timed is the calls themselves.
    let texts: Vec<std::ffi::CString> = (0..n)
        .map(|i| {
            std::ffi::CString::new(format!(
                "{{\"id\": {i}, \"sensor\": \"s-{}\", \"value\": {:.1}}}",
                i % 16,
                i as f64 * 0.5
            ))
            .unwrap()
        })
        .collect();
    let mut values: Vec<Option<serde_json::Value>> = (0..n)
        .map(|i| {
            let value = (i as f64 * 0.5 * 10.0).round() / 10.0;
            Some(json!({"id": i, "sensor": format!("s-{}", i % 16), "value": value}))
        })
        .collect();
    let keys: Vec<std::ffi::CString> = (0..gets)
        .map(|i| std::ffi::CString::new(((i * 7919) % n).to_string()).unwrap())
        .collect();

    // Upserts: batches alternate between the sides, each inserting its own
    // fresh keys into the same growing table.
    let (mut c_up, mut r_up) = (Clock::default(), Clock::default());
    let (mut c_n, mut r_n) = (0i64, 0i64);
    for (b, start) in (0..n).step_by(batch as usize).enumerate() {
        let end = (start + batch).min(n);
        if b % 2 == 0 {
            timed(&mut c_up, || {
                for text in &texts[start as usize..end as usize] {
                    // SAFETY: NUL-terminated JSON, live handle, NULL out_seq.
                    let st =
                        unsafe { upsert(h, table.as_ptr(), text.as_ptr(), std::ptr::null_mut()) };
                    assert_eq!(st, tidelog_status::TIDELOG_OK);
                }
            });
            c_n += end - start;
        } else {
            timed(&mut r_up, || {
                for v in &mut values[start as usize..end as usize] {
                    db.upsert("t", v.take().unwrap()).unwrap();
                }
            });
            r_n += end - start;
        }
    }

    // Point gets: every side reads the same keys, batch by batch.
    let (mut c_get, mut r_get, mut r_json) = (Clock::default(), Clock::default(), Clock::default());
    let mut bytes = 0usize;
    for (b, start) in (0..gets).step_by(batch as usize).enumerate() {
        let end = (start + batch).min(gets);
        let c_side = |clock: &mut Clock, bytes: &mut usize| {
            timed(clock, || {
                for key in &keys[start as usize..end as usize] {
                    let mut s = std::ptr::null_mut();
                    // SAFETY: NUL-terminated key, live handle, valid out
                    // pointer; the string is freed once with its own free.
                    unsafe {
                        assert_eq!(
                            get(h, table.as_ptr(), key.as_ptr(), &mut s),
                            tidelog_status::TIDELOG_OK
                        );
                        *bytes += tidelog_string_len(s);
                        tidelog_string_free(s);
                    }
                }
            })
        };
        let r_side = |json_text: bool, clock: &mut Clock, bytes: &mut usize| {
            timed(clock, || {
                for i in start..end {
                    let r = db.get("t", (i * 7919) % n).unwrap().unwrap();
                    *bytes += if json_text {
                        r.to_json_string().len()
                    } else {
                        r.body_json().len()
                    };
                }
            })
        };
        // Each of the six orders equally often: reading a key right after
        // another side read it finds it in cache, and no side may always
        // get that advantage.
        const ORDERS: [[u8; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for side in ORDERS[b % 6] {
            match side {
                0 => c_side(&mut c_get, &mut bytes),
                1 => r_side(false, &mut r_get, &mut bytes),
                _ => r_side(true, &mut r_json, &mut bytes),
            }
        }
    }
    assert!(bytes > 0);
    assert_eq!(db.count("t").unwrap(), n as u64);
    drop(db);
    assert_eq!(tidelog_close(h), tidelog_status::TIDELOG_OK);
    tidelog_db_free(h);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "same database: {n} upserts (alternating batches of {batch}), {gets} point gets per side"
    );
    report("upsert", c_n, c_up, r_n, r_up);
    report("get (Rust: Record)", gets, c_get, gets, r_get);
    report("get (Rust: + JSON text)", gets, c_get, gets, r_json);
}
