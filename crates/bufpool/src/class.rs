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
