//! The Rust baseline the Python benchmark compares against, measured in
//! the same process.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tidelog::{OpenOptions, TableOptions};

use crate::errors::IntoPy;

fn process_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall wrapper writing into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Times `f` doing `n` operations: (wall-clock rate, process-CPU rate).
fn rates(
    n: u64,
    f: impl FnOnce() -> tidelog::Result<()>,
) -> tidelog::Result<(f64, f64)> {
    let (t, c) = (std::time::Instant::now(), process_cpu_secs());
    f()?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - c;
    Ok((n as f64 / wall, n as f64 / cpu.max(1e-9)))
}

/// The benchmark loop in Rust, on the Rust API, for comparison: `n`
/// single-record upserts then `n` point gets of the same records as
/// `bench/bench.py` writes, in a fresh database at `path`. Returns rates
/// by wall clock and by process CPU time.
#[pyfunction]
pub(crate) fn _rust_baseline<'py>(
    py: Python<'py>,
    path: PathBuf,
    n: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let out = py
        .detach(|| -> tidelog::Result<Vec<(&'static str, (f64, f64))>> {
            let db = tidelog::Database::open(&path, OpenOptions::new("bench"))?;
            db.create_table("readings", TableOptions::default().index("sensor"))?;
            let up = rates(n, || {
                for i in 0..n as i64 {
                    db.upsert(
                        "readings",
                        serde_json::json!({
                            "id": i,
                            "sensor": format!("s-{}", i % 100),
                            "value": i as f64 * 0.5,
                            "unit": "C",
                            "ok": true,
                        }),
                    )?;
                }
                Ok(())
            })?;
            // Same work as Python's get: read and materialise the record.
            let get = rates(n, || {
                for i in 0..n as i64 {
                    let r = db.get("readings", i)?;
                    assert!(r.map(|r| r.to_value()).is_some_and(|v| v.is_object()));
                }
                Ok(())
            })?;
            // And without materialising: the record stays stored JSON text.
            let get_raw = rates(n, || {
                for i in 0..n as i64 {
                    let r = db.get("readings", i)?;
                    assert!(r.is_some_and(|r| !r.body_json().is_empty()));
                }
                Ok(())
            })?;
            db.close()?;
            Ok(vec![("upserts", up), ("gets", get), ("gets_raw", get_raw)])
        })
        .py()?;
    let d = PyDict::new(py);
    for (name, (wall, cpu)) in out {
        d.set_item(name, wall)?;
        d.set_item(format!("{name}_cpu"), cpu)?;
    }
    Ok(d)
}
