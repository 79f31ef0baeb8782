//! Helpers shared by the `hsnap` crate's tests.

/// Bitwise CRC-32 (ISO-HDLC), independent of the crate under test: what a chunk's checksum must be.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { crc >> 1 ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
