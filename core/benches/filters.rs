//! Routing cost of row filters: the time the commit feed takes to decide
//! which links a change wakes, with 1, 100 and 10,000 links filtered by
//! `site = $peer.name` (each change moves a row from one site to another,
//! so it concerns two links). Equality filters are found by hash lookup,
//! so the cost per change should stay about flat as links are added.
//!
//! Run: `cargo bench -p tidelog --bench filters`. Environment:
//! `TIDELOG_BENCH_CHANGES` (changes per measurement, default 200,000).
//! Each count is measured three times and the fastest kept; ratios are to
//! the 1-filter case of the same run. Prints a PASS/MISS line for the
//! target (at most 2x from 1 to 10,000 filters); asserts nothing.

fn main() {
    let changes: usize = std::env::var("TIDELOG_BENCH_CHANGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let counts = [1usize, 100, 10_000];
    let mut per_change = Vec::new();
    for &n in &counts {
        let best = (0..3)
            .map(|_| tidelog::route_filtered_changes(n, changes))
            .min()
            .unwrap_or_default();
        per_change.push(best.as_nanos() as f64 / changes as f64);
    }
    let base = per_change[0];
    println!("filters  ns/change  ratio to 1 filter");
    for (n, ns) in counts.iter().zip(&per_change) {
        println!("{n:>7}  {ns:>9.0}  {:>6.2}x", ns / base);
    }
    let worst = per_change[counts.len() - 1] / base;
    println!(
        "{} target: routing cost at 10,000 filters is {worst:.2}x that at 1 (target at most 2x)",
        if worst <= 2.0 { "PASS" } else { "MISS" }
    );
}
