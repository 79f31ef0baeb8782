//! One number per node, stored no wider than its largest value needs.
//!
//! Node attributes are most of a graph's memory after its edges, and most snapshots need far less
//! than 64 bits for them: V8's addresses are all 0, its ids and sizes fit in 32 bits, flags in 8.
//! A column starts with no storage at all (every value 0) and widens, copying once, the first time
//! a value does not fit. Reading is one predictable branch.

/// Values of one node attribute, indexed by node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// That many zeros, stored as nothing.
    Zero(usize),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl Default for Column {
    fn default() -> Column {
        Column::Zero(0)
    }
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Zero(n) => *n,
            Column::U8(v) => v.len(),
            Column::U16(v) => v.len(),
            Column::U32(v) => v.len(),
            Column::U64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        match self {
            Column::Zero(n) => {
                assert!(i < *n, "index {i} out of a column of {n}");
                0
            }
            Column::U8(v) => v[i] as u64,
            Column::U16(v) => v[i] as u64,
            Column::U32(v) => v[i] as u64,
            Column::U64(v) => v[i],
        }
    }

    /// Every value in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends `value`, widening the column first if it does not fit.
    #[inline]
    pub fn push(&mut self, value: u64) {
        match self {
            Column::Zero(n) if value == 0 => *n += 1,
            Column::U8(v) if value <= u8::MAX as u64 => v.push(value as u8),
            Column::U16(v) if value <= u16::MAX as u64 => v.push(value as u16),
            Column::U32(v) if value <= u32::MAX as u64 => v.push(value as u32),
            Column::U64(v) => v.push(value),
            _ => {
                self.widen(value);
                self.push(value);
            }
        }
    }

    /// Room for `additional` more values at the current width (and at any width it widens to).
    pub fn reserve_exact(&mut self, additional: usize) {
        match self {
            Column::Zero(_) => {}
            Column::U8(v) => v.reserve_exact(additional),
            Column::U16(v) => v.reserve_exact(additional),
            Column::U32(v) => v.reserve_exact(additional),
            Column::U64(v) => v.reserve_exact(additional),
        }
    }

    /// Copies the values into the narrowest width that also holds `value`, keeping the capacity.
    #[cold]
    fn widen(&mut self, value: u64) {
        fn copy<U: TryFrom<u64>>(old: impl Iterator<Item = u64>, len: usize, cap: usize) -> Vec<U> {
            let mut new = Vec::with_capacity(cap.max(len));
            new.extend(old.map(|x| U::try_from(x).ok().expect("values fit the wider column")));
            new
        }
        let (len, cap) = (self.len(), self.capacity());
        let old = std::mem::take(self);
        let values = (0..len).map(|i| old.get(i));
        *self = if value <= u8::MAX as u64 {
            Column::U8(copy(values, len, cap))
        } else if value <= u16::MAX as u64 {
            Column::U16(copy(values, len, cap))
        } else if value <= u32::MAX as u64 {
            Column::U32(copy(values, len, cap))
        } else {
            Column::U64(copy(values, len, cap))
        };
    }

    fn capacity(&self) -> usize {
        match self {
            Column::Zero(n) => *n,
            Column::U8(v) => v.capacity(),
            Column::U16(v) => v.capacity(),
            Column::U32(v) => v.capacity(),
            Column::U64(v) => v.capacity(),
        }
    }

    /// Bytes of memory the column holds.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Column::Zero(_) => 0,
            Column::U8(v) => v.capacity(),
            Column::U16(v) => v.capacity() * 2,
            Column::U32(v) => v.capacity() * 4,
            Column::U64(v) => v.capacity() * 8,
        }
    }
}

impl FromIterator<u64> for Column {
    fn from_iter<I: IntoIterator<Item = u64>>(values: I) -> Column {
        let mut column = Column::default();
        for value in values {
            column.push(value);
        }
        column
    }
}

impl From<Vec<u64>> for Column {
    fn from(values: Vec<u64>) -> Column {
        values.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_only_as_far_as_needed_and_keeps_values() {
        let mut c = Column::default();
        c.reserve_exact(8);
        for v in [0, 0, 7] {
            c.push(v);
        }
        assert!(matches!(c, Column::U8(_)));
        c.push(300);
        assert!(matches!(c, Column::U16(_)));
        c.push(70_000);
        assert!(matches!(c, Column::U32(_)));
        assert_eq!(c.heap_bytes(), 8 * 4, "the reserved capacity is kept across widening");
        c.push(1 << 40);
        assert!(matches!(c, Column::U64(_)));
        assert_eq!(c.iter().collect::<Vec<_>>(), [0, 0, 7, 300, 70_000, 1 << 40]);
        let zeros: Column = std::iter::repeat_n(0, 5).collect();
        assert_eq!((zeros.len(), zeros.get(4), zeros.heap_bytes()), (5, 0, 0));
        assert_eq!(Column::from(vec![u64::MAX, 1]).get(0), u64::MAX);
    }

    #[test]
    #[should_panic(expected = "out of a column")]
    fn zero_column_checks_bounds() {
        Column::Zero(3).get(3);
    }
}
