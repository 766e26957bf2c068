//! The records every contender stores, the byte layouts the raw floors use
//! (the same shapes tidelog stores), and small measuring helpers.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

pub const TABLE: &str = "readings";
pub const INDEXED: &str = "sensor";
const KINDS: [&str; 4] = ["temp", "humi", "pres", "volt"];
const SITE: &str = "plant-7/line-3";

/// Table id the raw floors put in front of their keys (tidelog: 4 bytes).
const TABLE_ID: [u8; 4] = [0, 0, 0, 1];
/// Key tag of an integer primary key and of a string index value (tidelog's codec).
const TAG_INT: u8 = 0x10;
const TAG_STR: u8 = 0x20;

/// Which records exist: record `i` for `i` in `0..total`; the indexed
/// attribute `sensor` takes `groups` values, each shared by ~10 records.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub groups: u64,
}

impl Workload {
    pub fn new(total_records: u64) -> Workload {
        Workload {
            groups: (total_records / 10).max(1),
        }
    }

    pub fn sensor(&self, i: u64) -> u64 {
        i % self.groups
    }

    /// `value` as integer part and two decimals (never a trailing zero, so
    /// `{int}.{frac:02}` is exactly how serde_json prints the f64).
    fn reading(i: u64) -> (u64, u64) {
        let frac = 1 + i % 98;
        let frac = if frac.is_multiple_of(10) {
            frac + 1
        } else {
            frac
        };
        (10 + (i * 7) % 40, frac)
    }

    /// Record `i` as JSON text, keys in the order serde_json writes them, so
    /// the bytes equal what tidelog stores for [`Workload::value`].
    pub fn text(&self, i: u64, out: &mut String) {
        let (int, frac) = Self::reading(i);
        out.clear();
        let _ = write!(
            out,
            r#"{{"id":{i},"kind":"{}","sensor":"s-{:06}","site":"{SITE}","ts":{},"value":{int}.{frac:02}}}"#,
            KINDS[(i % 4) as usize],
            self.sensor(i),
            1_790_000_000_000 + i * 1000,
        );
    }

    /// Record `i` as the `serde_json::Value` tidelog's API takes.
    pub fn value(&self, i: u64) -> Value {
        let (int, frac) = Self::reading(i);
        json!({
            "id": i,
            "kind": KINDS[(i % 4) as usize],
            "sensor": sensor_name(self.sensor(i)),
            "site": SITE,
            "ts": 1_790_000_000_000 + i * 1000,
            "value": (int * 100 + frac) as f64 / 100.0,
        })
    }
}

pub fn sensor_name(s: u64) -> String {
    format!("s-{s:06}")
}

/// Primary-key bytes of record `i` (tag + order-preserving i64).
fn put_int_key(out: &mut Vec<u8>, i: u64) {
    out.push(TAG_INT);
    out.extend_from_slice(&((i as i64 as u64) ^ (1 << 63)).to_be_bytes());
}

pub fn row_key(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.extend_from_slice(&TABLE_ID);
    put_int_key(&mut k, i);
    k
}

/// Prefix of every index entry whose value is `sensor`.
pub fn index_prefix(sensor: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&TABLE_ID);
    k.extend_from_slice(&1u16.to_be_bytes());
    k.push(TAG_STR);
    k.extend_from_slice(sensor.as_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

pub fn index_key(sensor: &str, i: u64) -> Vec<u8> {
    let mut k = index_prefix(sensor);
    put_int_key(&mut k, i);
    k
}

/// Record id from the tail of an index key.
pub fn id_from_index_key(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[k.len() - 8..]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64 as u64
}

/// Bytes of a stored row before its JSON text (see [`row_value`]).
pub const ROW_HEADER: usize = 1 + 8 + 8 + 8;

/// A stored row: tombstone flag, stamp (time, node), created, JSON text.
pub fn row_value(stamp: u64, json: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(ROW_HEADER + json.len());
    v.push(0);
    v.extend_from_slice(&stamp.to_be_bytes());
    v.extend_from_slice(&7u64.to_be_bytes());
    v.extend_from_slice(&stamp.to_be_bytes());
    v.extend_from_slice(json.as_bytes());
    v
}

/// A log entry header (stamp, origin, local time) ...
pub fn log_start(stamp: u64, writes: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + writes * 160);
    v.extend_from_slice(&stamp.to_be_bytes());
    v.extend_from_slice(&7u64.to_be_bytes());
    v.extend_from_slice(&stamp.to_be_bytes());
    v
}

/// ... and one write in it: table, key, created, full JSON after-image.
pub fn log_push(v: &mut Vec<u8>, i: u64, stamp: u64, json: &str) {
    v.push(TABLE.len() as u8);
    v.extend_from_slice(TABLE.as_bytes());
    put_int_key(v, i);
    v.extend_from_slice(&stamp.to_be_bytes());
    v.extend_from_slice(&(json.len() as u32).to_be_bytes());
    v.extend_from_slice(json.as_bytes());
}

/// A deterministic PRNG, so every contender reads the same keys in the same order.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A `/proc/self/status` field in KiB (VmHWM = peak RSS, VmRSS = now).
pub fn proc_status_kib(field: &str) -> u64 {
    proc_field("/proc/self/status", field)
}

/// A `/proc/self/io` counter: `write_bytes` is what this process sent
/// towards the device (pages it dirtied), `wchar` what it handed to the OS.
pub fn proc_io(field: &str) -> u64 {
    proc_field("/proc/self/io", field)
}

/// Read system calls (`read`, `pread64`, ...) the calling thread has made:
/// its count around a loop of gets says how many blocks or pages each get
/// read from the file system, without the engine's background threads.
pub fn thread_read_calls() -> u64 {
    proc_field("/proc/thread-self/io", "syscr")
}

/// The number after `field:` in a `/proc` file of `name: value` lines (a
/// `kB` unit dropped); 0 where the file or the field is missing.
fn proc_field(path: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Today's UTC date and time, from the system clock (no date crate).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}
