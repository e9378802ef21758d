//! Deterministic pseudo-random numbers and bytes (xorshift), so that every run of a benchmark is the same.
#![allow(dead_code)] // each example uses a part

pub struct Rng(pub u64);

impl Rng {
    /// A generator whose output differs for every seed, 0 included.
    pub fn seeded(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&self.next().to_le_bytes());
        }
        data.truncate(len);
        data
    }
}

/// `len` incompressible bytes, different for every seed: no two files share a digest, none is deduplicated.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    Rng::seeded(seed).bytes(len)
}
