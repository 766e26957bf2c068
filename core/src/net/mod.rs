//! Networking groundwork for replication: the framed wire protocol, mutual
//! TLS setup and peer identity, and (with the `dev-certs` feature) development
//! certificates. The replication engine builds on these.

#[cfg(feature = "dev-certs")]
pub mod certs;
pub mod compress;
pub mod tls;
pub mod wire;

/// Net-level tests: everything a peer can send, thrown at the decoder and
/// the reader; and the two layers together over real TLS.
#[cfg(test)]
mod tests {
    use super::compress;
    use super::wire::tests::{read_all, rt, samples};
    use super::wire::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_collection_lengths_fail_fast() {
        let started = std::time::Instant::now();
        let mut varint = Vec::new();
        let mut n: u64 = 1 << 60;
        while n >= 0x80 {
            varint.push((n as u8) | 0x80);
            n >>= 7;
        }
        varint.push(n as u8);
        // Txns (variant 5) claiming 2^60 transactions, Goodbye (9) claiming
        // a 2^60-byte string, SyncChunk (4) with 2^60 rows.
        for prefix in [vec![5u8], vec![9], vec![4, 1, b't', 1, b'k']] {
            let mut p = prefix.clone();
            p.extend_from_slice(&varint);
            p.extend_from_slice(&[0; 16]);
            assert!(
                matches!(decode_payload(&p), Err(WireError::Decode(_))),
                "{prefix:?}"
            );
        }
        // A claim that would be allocatable (2^26 txns) must not be
        // preallocated either: postcard ignores size hints beyond the input.
        let mut p = vec![5u8, 0x80, 0x80, 0x80, 0x20];
        p.extend_from_slice(&[0; 64]);
        assert!(decode_payload(&p).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Small deterministic generator, so a failure reproduces from the seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, pool: &[Vec<u8>], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&pool[rng.below(pool.len())]);
        for _ in 0..1 + rng.below(4) {
            match rng.below(6) {
                0 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out[i] ^= 1 << rng.below(8);
                }
                1 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out[i] = rng.next() as u8;
                }
                2 => out.truncate(rng.below(out.len() + 1)),
                3 => {
                    // Splice: our head, another message's tail.
                    let other = &pool[rng.below(pool.len())];
                    out.truncate(rng.below(out.len() + 1));
                    out.extend_from_slice(&other[rng.below(other.len() + 1)..]);
                }
                4 => {
                    // Insert a large varint where a length or index may be.
                    let at = rng.below(out.len() + 1);
                    let big = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
                    let n = 1 + rng.below(big.len());
                    out.splice(at..at, big[big.len() - n..].iter().copied());
                }
                _ => out.push(rng.next() as u8),
            }
        }
    }

    /// Decodes, and if that succeeds, checks the message survives its own
    /// round trip: a decoder that accepts bytes it cannot reproduce is a bug.
    fn check(payload: &[u8]) -> bool {
        match decode_payload(payload) {
            Ok(m) => {
                let again = encode_frame(&m).unwrap();
                assert_eq!(decode_payload(&again[4..]).unwrap(), m, "input {payload:?}");
                true
            }
            Err(_) => false,
        }
    }

    /// Frames written by a compressing writer, as bytes.
    fn compressed_stream(msgs: &[Message]) -> Vec<u8> {
        rt().block_on(async {
            let mut out = Vec::new();
            let mut w = FrameWriter::new(&mut out, DEFAULT_MAX_FRAME_BYTES);
            w.compress(3).unwrap();
            for m in msgs {
                w.write_message(m).await.unwrap();
            }
            out
        })
    }

    fn big_txns() -> Message {
        let txns = (0..200)
            .map(|i| WireTxn {
                seq: i + 1,
                stamp: crate::local::codec::Stamp {
                    time: 1000 + i,
                    node: 7,
                },
                writes: vec![crate::local::log::LogWrite {
                    table: "readings".into(),
                    key: crate::local::codec::Key::Int(i as i64),
                    op: crate::local::log::WriteOp::Put {
                        json: format!(
                            r#"{{"id":{i},"sensor":"temp-{}","value":{}}}"#,
                            i % 9,
                            i % 13
                        ),
                        created: 1000 + i,
                    },
                }],
            })
            .collect();
        Message::Txns(txns)
    }

    #[test]
    fn compressed_frames_round_trip_and_count_their_bytes() {
        let mut msgs = samples();
        msgs.push(big_txns());
        let bytes = compressed_stream(&msgs);
        let plain: usize = msgs.iter().map(|m| encode_frame(m).unwrap().len()).sum();
        assert!(bytes.len() < plain, "{} vs {plain}", bytes.len());
        let rt = rt();
        let got = rt.block_on(async {
            let counts = std::sync::Arc::new(compress::ByteCounts::default());
            let mut r = FrameReader::new(&bytes[..], DEFAULT_MAX_FRAME_BYTES);
            r.accept_compressed().unwrap();
            r.count_into(counts.clone());
            let mut out = Vec::new();
            while let Some(m) = r.read_message().await.unwrap() {
                out.push(m);
            }
            assert_eq!(counts.get(), (plain as u64, bytes.len() as u64));
            out
        });
        assert_eq!(got, msgs);
    }

    #[test]
    fn compressed_frames_are_refused_where_not_negotiated_or_over_the_limit() {
        let bytes = compressed_stream(&[big_txns()]);
        assert_eq!(bytes[4], compress::MARKER);
        let rt = rt();
        // Not negotiated: the reader never decompresses.
        assert!(matches!(
            read_all(&rt, &bytes, DEFAULT_MAX_FRAME_BYTES),
            Err(WireError::Compression(
                compress::CompressError::NotNegotiated
            ))
        ));
        // Negotiated, but the declared size is over the reader's limit
        // (the compressed frame itself is under it).
        let plain_len = encode_frame(&big_txns()).unwrap().len() - 4;
        let limit = plain_len - 1;
        assert!(bytes.len() - 4 <= limit);
        let res = rt.block_on(async {
            let mut r = FrameReader::new(&bytes[..], limit);
            r.accept_compressed().unwrap();
            r.read_message().await
        });
        assert!(
            matches!(
                res,
                Err(WireError::Compression(
                    compress::CompressError::TooLarge { .. }
                ))
            ),
            "{res:?}"
        );
        // A compressed frame wrapping another compressed frame.
        let inner = bytes[4..].to_vec();
        let mut c = compress::FrameCompressor::new(3).unwrap();
        let mut padded = inner.clone();
        padded.extend(std::iter::repeat_n(0u8, 512));
        let outer = c.compress(&padded).unwrap().unwrap().to_vec();
        let mut frame = (outer.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&outer);
        let res = rt.block_on(async {
            let mut r = FrameReader::new(&frame[..], DEFAULT_MAX_FRAME_BYTES);
            r.accept_compressed().unwrap();
            r.read_message().await
        });
        assert!(matches!(res, Err(WireError::Decode(_))), "{res:?}");
    }

    #[test]
    fn fuzz_compressed_frames() {
        // Mutations of real compressed frames: every outcome is a message
        // or a typed error, within the reader's limit.
        let good = compressed_stream(&[big_txns()]);
        let mut rng = Rng(0xC0DE_2ED5_0000_0023);
        let rt = rt();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let (mut runs, mut ok) = (0u64, 0u64);
        while std::time::Instant::now() < deadline {
            let mut b = good.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = 4 + (rng.next() as usize) % (b.len() - 4);
                b[i] = rng.next() as u8;
            }
            let res = rt.block_on(async {
                let mut r = FrameReader::new(&b[..], 64 * 1024);
                r.accept_compressed().unwrap();
                r.read_message().await
            });
            ok += res.is_ok() as u64;
            runs += 1;
        }
        eprintln!("fuzz_compressed_frames: {runs} inputs, {ok} decoded");
        assert!(runs > 100, "too few inputs: {runs}");
    }

    #[test]
    fn fuzz_decoder_random_inputs() {
        let pool: Vec<Vec<u8>> = samples()
            .iter()
            .map(|m| encode_frame(m).unwrap().split_off(4))
            .collect();
        let mut rng = Rng(0x7D1E_106C_0FFE_E5ED);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
        let (mut runs, mut accepted) = (0u64, 0u64);
        let mut buf = Vec::new();
        let rt = rt();
        while runs < 5_000_000 && (runs % 4096 != 0 || std::time::Instant::now() < deadline) {
            mutate(&mut rng, &pool, &mut buf);
            accepted += check(&buf) as u64;
            if runs % 64 == 0 {
                // The async reader over the same bytes as a whole stream,
                // with a small limit so oversize paths run too.
                let _ = read_all(&rt, &buf, 256);
            }
            runs += 1;
        }
        eprintln!("fuzz_decoder_random_inputs: {runs} inputs, {accepted} decoded");
        assert!(runs > 100_000, "too few inputs in the time budget: {runs}");
        assert!(
            accepted > 0 && accepted < runs,
            "mutations should hit both paths"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            check(&bytes);
            let _ = read_all(&rt(), &bytes, 1024);
        }

        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..10,
            flips in proptest::collection::vec((any::<usize>(), 0u8..8), 0..6),
            cut in any::<usize>(),
            splice_from in 0usize..10,
            splice_at in any::<usize>(),
        ) {
            let frames: Vec<Vec<u8>> = samples().iter().map(|m| encode_frame(m).unwrap()).collect();
            let mut f = frames[which % frames.len()].clone();
            for (i, bit) in flips {
                let n = f.len();
                f[i % n] ^= 1 << bit;
            }
            f.truncate(cut % (f.len() + 1));
            let other = &frames[splice_from % frames.len()];
            f.extend_from_slice(&other[splice_at % (other.len() + 1)..]);
            if f.len() >= 4 {
                check(&f[4..]);
            }
            let _ = read_all(&rt(), &f, DEFAULT_MAX_FRAME_BYTES);
        }
    }

    /// The connection opening the replication engine will do: TLS, then
    /// `Hello` both ways, with the acceptor checking the claimed name.
    #[cfg(feature = "dev-certs")]
    #[tokio::test]
    async fn hello_exchange_over_mutual_tls_checks_claimed_identity() {
        use super::{certs, tls};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let nodes = ["cloud", "edge-1", "edge-2"].map(String::from);
        certs::generate_dev_pki(d, "CA", &nodes).unwrap();
        let id = |n: &str| {
            let f = certs::node_paths(d, n);
            tls::TlsIdentity::from_files(f.cert_chain, f.key, certs::ca_paths(d).0)
        };
        let hello = |name: &str| {
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node_name: name.into(),
                node_id: 1,
                now_ms: 0,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
                wants: vec![],
                relays_accepted: false,
                accepts_zstd: false,
                deltas: false,
            })
        };
        let t = Duration::from_secs(5);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let scfg = id("cloud").server_config().unwrap();
        let server = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                let tcp = listener.accept().await.unwrap().0;
                let mut s = tls::accept(tcp, scfg.clone(), t).await.unwrap();
                let msg = read_message(&mut s, DEFAULT_MAX_FRAME_BYTES).await.unwrap();
                let claim = expect_hello(msg.unwrap()).unwrap();
                let verdict = tls::verify_peer_node(s.get_ref().1, &claim.node_name);
                let reply = match &verdict {
                    Ok(()) => hello("cloud"),
                    Err(e) => Message::Goodbye {
                        reason: e.to_string(),
                    },
                };
                write_message(&mut s, &reply).await.unwrap();
                outcomes.push(verdict.map(|_| claim.node_name));
            }
            outcomes
        });
        let mut answers = Vec::new();
        for (cert, claims) in [("edge-1", "edge-1"), ("edge-2", "edge-1")] {
            let cfg = id(cert).client_config().unwrap();
            let mut c = tls::connect(&addr, "cloud", cfg, t).await.unwrap();
            write_message(&mut c, &hello(claims)).await.unwrap();
            answers.push(read_message(&mut c, 1 << 20).await.unwrap().unwrap());
        }
        let outcomes = server.await.unwrap();
        assert_eq!(outcomes[0].as_ref().unwrap(), "edge-1");
        assert_eq!(expect_hello(answers[0].clone()).unwrap().node_name, "cloud");
        let e = outcomes[1].as_ref().unwrap_err();
        assert!(e.to_string().contains("does not name `edge-1`"), "{e}");
        assert!(matches!(&answers[1], Message::Goodbye { reason } if reason.contains("edge-1")));
    }
}
