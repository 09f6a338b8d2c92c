//! Size-class indices as a type whose every value is in range.

use crate::stats::MAX_CLASSES;

/// The index of a size class, below [`MAX_CLASSES`]. An enum, so that the compiler knows the
/// range of any index it loads: indexing a per-class array needs neither a bounds check nor
/// a mask on the fast paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ClassIndex {
    C0,
    C1,
    C2,
    C3,
    C4,
    C5,
    C6,
    C7,
    C8,
    C9,
    C10,
    C11,
    C12,
    C13,
    C14,
    C15,
    C16,
    C17,
    C18,
    C19,
    C20,
    C21,
    C22,
    C23,
    C24,
    C25,
    C26,
    C27,
    C28,
    C29,
    C30,
    C31,
}

impl ClassIndex {
    const ALL: [Self; MAX_CLASSES] = [
        Self::C0,
        Self::C1,
        Self::C2,
        Self::C3,
        Self::C4,
        Self::C5,
        Self::C6,
        Self::C7,
        Self::C8,
        Self::C9,
        Self::C10,
        Self::C11,
        Self::C12,
        Self::C13,
        Self::C14,
        Self::C15,
        Self::C16,
        Self::C17,
        Self::C18,
        Self::C19,
        Self::C20,
        Self::C21,
        Self::C22,
        Self::C23,
        Self::C24,
        Self::C25,
        Self::C26,
        Self::C27,
        Self::C28,
        Self::C29,
        Self::C30,
        Self::C31,
    ];

    /// The index `i`, if below [`MAX_CLASSES`].
    pub(crate) fn new(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    /// The index as a number.
    #[inline]
    pub(crate) fn get(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_round_trips() {
        for i in 0..MAX_CLASSES {
            assert_eq!(ClassIndex::new(i).map(ClassIndex::get), Some(i));
        }
        assert_eq!(ClassIndex::new(MAX_CLASSES), None);
    }
}

/// Bit lengths of a `usize` minus one: 0 to 64.
const BIT_LENGTHS: usize = usize::BITS as usize + 1;

/// The bit length of `len − 1`: an index into the tables below.
#[inline]
fn bit_length(len: usize) -> usize {
    (usize::BITS - len.saturating_sub(1).leading_zeros()) as usize % BIT_LENGTHS
}

/// For each bit length `k` of `len − 1` (so `2^(k−1) < len ≤ 2^k`), the first class larger
/// than `2^(k−1)`: where the search for `len`'s class starts.
fn first_class_by_bits(sizes: &[usize]) -> [Option<ClassIndex>; BIT_LENGTHS] {
    let mut table = [ClassIndex::new(0); BIT_LENGTHS];
    for (k, entry) in table.iter_mut().enumerate().skip(1) {
        let below = 1usize.checked_shl(u32::try_from(k - 1).unwrap_or(u32::MAX));
        *entry = below
            .and_then(|below| sizes.iter().position(|&s| s > below))
            .and_then(ClassIndex::new);
    }
    table
}

/// Finding the class for a length: the class sizes, and two tables indexed by the bit length
/// of `len − 1`.
#[derive(Debug)]
pub(crate) struct ClassTable {
    /// Class sizes, ascending.
    sizes: Box<[usize]>,
    /// See [`first_class_by_bits`]; class 0 where there is none.
    first_class_by_bits: [ClassIndex; BIT_LENGTHS],
    /// The size of each of those classes; 0 where there is none.
    first_size_by_bits: [usize; BIT_LENGTHS],
}

impl ClassTable {
    /// The table for classes of `sizes` (ascending, validated by the builder).
    pub(crate) fn new(sizes: &[usize]) -> Self {
        let first_classes = first_class_by_bits(sizes);
        Self {
            sizes: sizes.to_vec().into_boxed_slice(),
            first_class_by_bits: first_classes.map(|c| c.unwrap_or(ClassIndex::C0)),
            first_size_by_bits: first_classes.map(|c| c.map_or(0, |c| sizes[c.get()])),
        }
    }

    /// The class sizes, ascending.
    pub(crate) fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The smallest class that holds `len` bytes.
    ///
    /// Starts from the first class above the power of two below `len` (a table lookup by
    /// `len`'s bit length), so with the usual power-of-two classes the first size compared
    /// is the answer, and it is read from a second table beside the first: no bounds checks.
    #[inline]
    pub(crate) fn class_for(&self, len: usize) -> Option<ClassIndex> {
        match self.table_entry(len) {
            (class, true) => Some(class),
            (class, false) => self.class_after(class, len),
        }
    }

    /// [`class_for`](Self::class_for) when the tables alone answer it (always, with
    /// power-of-two classes); else `None`.
    #[inline]
    pub(crate) fn table_class(&self, len: usize) -> Option<usize> {
        match self.table_entry(len) {
            (class, true) => Some(class.get()),
            (_, false) => None,
        }
    }

    /// The tables' class for `len`'s bit length, and whether it holds `len`.
    #[inline]
    fn table_entry(&self, len: usize) -> (ClassIndex, bool) {
        let bits = bit_length(len);
        (
            self.first_class_by_bits[bits],
            self.first_size_by_bits[bits] >= len,
        )
    }

    /// The smallest class after `class` that holds `len` bytes.
    #[cold]
    #[inline(never)]
    fn class_after(&self, class: ClassIndex, len: usize) -> Option<ClassIndex> {
        (class.get() + 1..self.sizes.len())
            .find(|&c| self.sizes[c] >= len)
            .and_then(ClassIndex::new)
    }
}
