//! Deterministic pseudo-random numbers and bytes (xorshift), so that every run of a test or a benchmark is the same
//! and a failure reproduces; and the one hash helper.

use sha2::{Digest, Sha256};

pub struct Rng(pub u64);

impl Rng {
    /// A generator whose output differs for every seed, 0 included.
    pub fn seeded(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        data.truncate(len);
        data
    }
}

/// `len` incompressible bytes, different for every seed: no two files share a digest, none is deduplicated.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    Rng::seeded(seed).bytes(len)
}

/// The lowercase hex sha256 of `data`, as the API reports a file's digest.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
