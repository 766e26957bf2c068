//! Frame compression on a replication link.
//!
//! A compressed frame's payload starts with [`MARKER`], a byte no encoded
//! message starts with (a message's first byte is its variant index, a
//! varint below 0x80), then the codec, the decompressed length (u32, big
//! endian) and the compressed bytes. Plain frames stay as they are, so
//! small control frames cost nothing extra and a link can mix both.
//!
//! Whatever a peer declares is checked before any work: a frame may only be
//! compressed on a link that negotiated it, must declare a size within the
//! link's frame limit, and may not decompress to more (or less) than it
//! declared. The decompressed payload then decodes under the same budget as
//! a plain one.

use std::sync::atomic::{AtomicU64, Ordering};

/// First payload byte of a compressed frame.
pub const MARKER: u8 = 0xFF;
/// The codec byte for zstd.
pub const CODEC_ZSTD: u8 = 1;
/// Marker, codec and declared length.
pub const PREFIX: usize = 6;
/// Payloads smaller than this go plain: they would gain a few bytes at most
/// and cost a call into the compressor each.
pub const MIN_PAYLOAD: usize = 256;

/// Why a compressed frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    #[error("the peer sent a compressed frame on a link that did not negotiate compression")]
    NotNegotiated,
    #[error("compressed frame with unknown codec {0}")]
    UnknownCodec(u8),
    #[error("compressed frame too short for its header ({0} bytes)")]
    Truncated(usize),
    #[error(
        "compressed frame declares {declared} bytes decompressed, over the link's limit of {max}"
    )]
    TooLarge { declared: usize, max: usize },
    #[error("compressed frame does not decompress to its declared {declared} bytes: {reason}")]
    Corrupt { declared: usize, reason: String },
    #[error("compressing a frame failed: {0}")]
    Compress(String),
}

/// The zstd level for a link: dense for slow (metered) links, where bytes
/// cost more than CPU; fast otherwise. Measured on batches of 100-byte JSON
/// sensor records (see the README's metered links section).
pub fn level_for_rate(max_bytes_per_sec: Option<u64>) -> i32 {
    match max_bytes_per_sec {
        Some(rate) if rate < 256 * 1024 => 9,
        Some(rate) if rate < 4 * 1024 * 1024 => 6,
        _ => 3,
    }
}

/// The sending side's reusable zstd context.
pub struct FrameCompressor {
    inner: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl FrameCompressor {
    pub fn new(level: i32) -> Result<FrameCompressor, CompressError> {
        Ok(FrameCompressor {
            inner: zstd::bulk::Compressor::new(level)
                .map_err(|e| CompressError::Compress(e.to_string()))?,
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The compressed payload (marker and header included) for `payload`,
    /// or `None` when compressing would not make it smaller.
    pub fn compress(&mut self, payload: &[u8]) -> Result<Option<&[u8]>, CompressError> {
        if payload.len() < MIN_PAYLOAD || payload.len() > u32::MAX as usize {
            return Ok(None);
        }
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(payload.len()));
        self.inner
            .compress_to_buffer(payload, &mut self.scratch)
            .map_err(|e| CompressError::Compress(e.to_string()))?;
        self.out.clear();
        self.out.push(MARKER);
        self.out.push(CODEC_ZSTD);
        self.out
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&self.scratch);
        if self.out.len() >= payload.len() {
            return Ok(None);
        }
        Ok(Some(&self.out))
    }

    /// Gives back memory after an unusually large frame.
    pub fn shrink(&mut self, keep: usize) {
        if self.out.capacity() > keep {
            self.out = Vec::new();
            self.scratch = Vec::new();
        }
    }
}

/// The receiving side's reusable zstd context.
pub struct FrameDecompressor {
    inner: zstd::bulk::Decompressor<'static>,
    out: Vec<u8>,
}

impl FrameDecompressor {
    pub fn new() -> Result<FrameDecompressor, CompressError> {
        Ok(FrameDecompressor {
            inner: zstd::bulk::Decompressor::new()
                .map_err(|e| CompressError::Compress(e.to_string()))?,
            out: Vec::new(),
        })
    }

    /// The original payload of a compressed one (which starts with
    /// [`MARKER`]), refusing a declared size over `max` before
    /// decompressing and output that differs from the declared size.
    pub fn decompress(&mut self, framed: &[u8], max: usize) -> Result<&[u8], CompressError> {
        if framed.len() < PREFIX {
            return Err(CompressError::Truncated(framed.len()));
        }
        if framed[1] != CODEC_ZSTD {
            return Err(CompressError::UnknownCodec(framed[1]));
        }
        let declared = u32::from_be_bytes([framed[2], framed[3], framed[4], framed[5]]) as usize;
        if declared > max {
            return Err(CompressError::TooLarge { declared, max });
        }
        self.out.clear();
        // The capacity bounds the output: zstd stops with an error rather
        // than writing past it, so a bomb costs at most `declared` bytes.
        self.out.reserve_exact(declared);
        let mut dest = std::mem::take(&mut self.out);
        let res = self
            .inner
            .decompress_to_buffer(&framed[PREFIX..], &mut dest);
        self.out = dest;
        match res {
            Ok(n) if n == declared => Ok(&self.out[..n]),
            Ok(n) => Err(CompressError::Corrupt {
                declared,
                reason: format!("it gave {n}"),
            }),
            Err(e) => Err(CompressError::Corrupt {
                declared,
                reason: e.to_string(),
            }),
        }
    }

    /// Gives back memory after an unusually large frame.
    pub fn shrink(&mut self, keep: usize) {
        if self.out.capacity() > keep {
            self.out = Vec::new();
        }
    }
}

/// Bytes through one side of a link: as encoded (`raw`) and as on the
/// stream (`wire`), shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ByteCounts {
    pub raw: AtomicU64,
    pub wire: AtomicU64,
}

impl ByteCounts {
    pub fn add(&self, raw: usize, wire: usize) {
        self.raw.fetch_add(raw as u64, Ordering::Relaxed);
        self.wire.fetch_add(wire as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> (u64, u64) {
        (
            self.raw.load(Ordering::Relaxed),
            self.wire.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(
                "{{\"id\":\"s-{i}\",\"sensor\":\"temp\",\"value\":{},\"unit\":\"C\"}}",
                20 + i % 7
            ));
        }
        s.into_bytes()
    }

    #[test]
    fn round_trip_and_small_or_incompressible_payloads_go_plain() {
        let mut c = FrameCompressor::new(3).unwrap();
        let mut d = FrameDecompressor::new().unwrap();
        let p = sample(200);
        let framed = c.compress(&p).unwrap().unwrap().to_vec();
        assert_eq!(framed[0], MARKER);
        assert!(
            framed.len() * 4 < p.len(),
            "{} vs {}",
            framed.len(),
            p.len()
        );
        assert_eq!(d.decompress(&framed, 1 << 20).unwrap(), &p[..]);
        assert!(c.compress(&p[..100]).unwrap().is_none());
        // Pseudo-random bytes do not shrink.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(c.compress(&noise).unwrap().is_none());
    }

    #[test]
    fn hostile_compressed_frames_are_refused_with_a_reason() {
        let mut c = FrameCompressor::new(3).unwrap();
        let mut d = FrameDecompressor::new().unwrap();
        let p = sample(200);
        let good = c.compress(&p).unwrap().unwrap().to_vec();
        // Over the link's limit: refused before decompressing.
        assert_eq!(
            d.decompress(&good, p.len() - 1),
            Err(CompressError::TooLarge {
                declared: p.len(),
                max: p.len() - 1
            })
        );
        // A bomb: declares little, holds much.
        let mut bomb = good.clone();
        bomb[2..6].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(
            d.decompress(&bomb, 1 << 20),
            Err(CompressError::Corrupt { declared: 100, .. })
        ));
        // Declares more than it holds.
        let mut short = good.clone();
        short[2..6].copy_from_slice(&((p.len() + 10) as u32).to_be_bytes());
        assert!(matches!(
            d.decompress(&short, 1 << 20),
            Err(CompressError::Corrupt { .. })
        ));
        let mut codec = good.clone();
        codec[1] = 7;
        assert_eq!(
            d.decompress(&codec, 1 << 20),
            Err(CompressError::UnknownCodec(7))
        );
        assert_eq!(
            d.decompress(&good[..4], 1 << 20),
            Err(CompressError::Truncated(4))
        );
        let mut garbage = good.clone();
        for b in &mut garbage[PREFIX..] {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        assert!(d.decompress(&garbage, 1 << 20).is_err());
        for cut in PREFIX..good.len() {
            assert!(d.decompress(&good[..cut], 1 << 20).is_err(), "cut {cut}");
        }
        // The context still works after all that.
        assert_eq!(d.decompress(&good, 1 << 20).unwrap(), &p[..]);
    }

    #[test]
    fn slower_links_get_denser_levels() {
        assert_eq!(level_for_rate(None), 3);
        assert!(level_for_rate(Some(32 * 1024)) > level_for_rate(Some(1 << 20)));
        assert!(level_for_rate(Some(1 << 20)) > level_for_rate(Some(64 << 20)));
    }
}
