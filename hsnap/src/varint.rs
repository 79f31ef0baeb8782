//! LEB128 varints and zigzag signed integers, as the specification defines them.

/// The longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Writes `value` at the start of `out` and returns the number of bytes used.
#[inline]
pub fn put_u(out: &mut [u8], mut value: u64) -> usize {
    let mut i = 0;
    while value >= 0x80 {
        out[i] = value as u8 | 0x80;
        value >>= 7;
        i += 1;
    }
    out[i] = value as u8;
    i + 1
}

#[inline]
pub fn len_u(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline]
pub fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    Truncated,
    Overlong,
}

/// Reads one varint from the start of `input`: the value and the bytes it took.
#[inline(always)]
pub fn get_u(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(MAX_LEN) {
        let bits = (byte & 0x7f) as u64;
        if i == MAX_LEN - 1 && byte > 1 {
            return Err(VarintError::Overlong);
        }
        value |= bits << (7 * i);
        if byte < 0x80 {
            return Ok((value, i + 1));
        }
    }
    if input.len() >= MAX_LEN { Err(VarintError::Overlong) } else { Err(VarintError::Truncated) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges_of_each_length() {
        let mut buf = [0u8; MAX_LEN];
        for shift in 0..64 {
            for value in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1, u64::MAX] {
                let n = put_u(&mut buf, value);
                assert_eq!(n, len_u(value), "length of {value}");
                assert_eq!(get_u(&buf[..n]), Ok((value, n)));
                assert_eq!(get_u(&buf[..n - 1]), Err(VarintError::Truncated));
            }
        }
    }

    #[test]
    fn rejects_overflow() {
        let mut too_long = [0xffu8; 11];
        too_long[10] = 0;
        assert_eq!(get_u(&too_long), Err(VarintError::Overlong));
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(get_u(&overflow), Err(VarintError::Overlong));
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0i64, 1, -1, 2, -2, i64::MAX, i64::MIN, 123456789, -987654321] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
