//! The cipher ceiling: ring's ChaCha20-Poly1305 (what Noise runs through snow's ring
//! resolver) sealing Noise-sized frames on one core.

use std::time::{Duration, Instant};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// Bytes per second sealed in place, frames of 64,511 bytes (libp2p-noise's largest
/// cleartext frame), for at least `duration`.
pub(crate) fn seal_rate(duration: Duration) -> anyhow::Result<f64> {
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32])
            .map_err(|_| anyhow::anyhow!("bad key length"))?,
    );
    let mut frame = vec![0u8; 64_511];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut counter = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut frame,
                )
                .map_err(|_| anyhow::anyhow!("seal failed"))?;
            let _ = std::hint::black_box(tag);
            bytes += frame.len() as u64;
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}
