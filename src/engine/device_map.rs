//! `DeviceMap`: the hash map keyed by band id that the hot path looks up once or twice per
//! frame (keyring, replay windows).
//!
//! std's SipHash resists flooding by chosen keys, which these maps do not need: a key enters
//! them only at enrolment (keyring) or after its frame's tag verified (windows), so a radio
//! attacker can look up but never insert. A fixed 64-bit mixer (MurmurHash3's finaliser)
//! spreads any pattern of enrolled ids over the table at a fraction of SipHash's cost.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub type DeviceMap<V> = HashMap<u32, V, BuildHasherDefault<DeviceIdHasher>>;

/// Hashes a `u32` band id; any other key type still hashes correctly, just less cheaply.
#[derive(Default, Clone, Copy)]
pub struct DeviceIdHasher(u64);

impl Hasher for DeviceIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn patterned_ids_spread_over_buckets() {
        // Ids that share their low bits (a common numbering scheme) must not share buckets.
        let build = BuildHasherDefault::<DeviceIdHasher>::default();
        let mut buckets = std::collections::HashSet::new();
        for i in 0..1024u32 {
            buckets.insert(build.hash_one(i << 16) & 1023);
        }
        assert!(
            buckets.len() > 600,
            "{} of 1024 buckets used",
            buckets.len()
        );
    }
}
