//! Deterministic test content with its digest.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes (the same for the same `len`) in chunks of 64 KiB, and their
/// hex SHA-256.
pub fn pseudo_random(len: u64) -> (Vec<Bytes>, String) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ len;
    let mut remaining = len;
    let mut chunks = Vec::new();
    let mut hasher = Sha256::new();
    while remaining > 0 {
        let size = remaining.min(64 * 1024);
        let chunk: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        hasher.update(&chunk);
        chunks.push(Bytes::from(chunk));
        remaining -= size;
    }
    (chunks, hex::encode(hasher.finalize()))
}
