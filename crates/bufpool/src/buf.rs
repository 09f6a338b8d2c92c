//! The buffer handed out by the pool, and its frozen form.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::class::ClassIndex;
use crate::local;
use crate::pool::Shared;

/// The largest size class or oversized request a pool accepts: charges stay below
/// `isize::MAX`, as allocations do.
pub(crate) const MAX_CHARGE: usize = isize::MAX as usize;

/// A buffer from a [`BufPool`](crate::BufPool), used as a [`BytesMut`] through `Deref`.
///
/// It starts empty with the capacity of its size class. Dropping it returns it to the pool;
/// so does [`freeze`](Self::freeze) followed by dropping the last clone of the [`Bytes`].
///
/// A buffer that was grown past its class (by writing more than its capacity) or that lost
/// capacity (`split_off`, `split_to`, or `split` keeping a part elsewhere) is freed on return
/// rather than pooled, and its charge returned to the budget. Memory split off into another
/// `BytesMut` or `Bytes` is outside the pool's accounting: split a frozen buffer's `Bytes`
/// instead, which keeps the whole buffer accounted until the last part is dropped.
///
/// ```
/// use bytes::BufMut;
/// use sssonector_bufpool::BufPool;
///
/// let pool = BufPool::default();
/// let mut buf = pool.try_get(1500)?;
/// buf.put_slice(b"hello");
/// let frame = buf.freeze(); // a `Bytes`; the buffer returns when the last clone drops
/// let copy = frame.clone();
/// drop(frame);
/// assert_eq!(&copy[..], b"hello");
/// drop(copy);
/// pool.assert_no_outstanding();
/// # Ok::<(), sssonector_bufpool::GetError>(())
/// ```
pub struct PooledBuf {
    // `None` only once the buffer has gone back (during drop). `ManuallyDrop` so that the
    // drop glue does not look at the field again after `Drop::drop` has taken it (that reload
    // and its registers were a tenth of the return path); `Drop::drop` always takes it.
    node: ManuallyDrop<Option<Box<Node>>>,
}

/// A buffer with what it takes to return it. Boxed, so handing a buffer out and taking it
/// back moves one pointer: moving the `BytesMut` itself through caches and handles measured
/// about three times slower.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) buf: BytesMut,
    /// The pool, held wherever the buffer is: out, in a thread cache or in the pool's shared
    /// queue (see [`Shared::put_idle`] for how that cycle is broken).
    pub(crate) pool: Arc<Shared>,
    /// The capacity the buffer must have to be pooled on return: its class's size, or
    /// `usize::MAX` (no capacity) for an oversized buffer, which is freed on return. So one
    /// comparison says "a class buffer, intact".
    keep: usize,
    /// Bytes charged to the budget: the class's size, or the length an oversized buffer was
    /// asked for.
    charge: usize,
    /// The size class; meaningless for an oversized buffer.
    class: ClassIndex,
}

impl Node {
    /// A new empty buffer of `class`, `size` bytes.
    pub(crate) fn of_class(pool: Arc<Shared>, class: ClassIndex, size: usize) -> Box<Self> {
        Box::new(Self {
            buf: BytesMut::with_capacity(size),
            pool,
            keep: size,
            charge: size,
            class,
        })
    }

    /// A new empty oversized buffer of `len` bytes.
    pub(crate) fn oversized(pool: Arc<Shared>, len: usize) -> Box<Self> {
        Box::new(Self {
            buf: BytesMut::with_capacity(len),
            pool,
            keep: usize::MAX,
            charge: len,
            class: ClassIndex::C0,
        })
    }

    /// The class, or `None` for an oversized buffer.
    #[inline]
    pub(crate) fn class_index(&self) -> Option<usize> {
        (self.keep != usize::MAX).then_some(self.class.get())
    }

    /// Bytes this buffer is charged to the budget.
    #[inline]
    pub(crate) fn charge(&self) -> usize {
        self.charge
    }
}

impl PooledBuf {
    #[inline]
    pub(crate) fn new(node: Box<Node>) -> Self {
        Self {
            node: ManuallyDrop::new(Some(node)),
        }
    }

    #[inline]
    fn node(&self) -> &Node {
        match &*self.node {
            Some(node) => node,
            None => unreachable!("a PooledBuf is emptied only when dropped"),
        }
    }

    #[inline]
    fn node_mut(&mut self) -> &mut Node {
        match &mut *self.node {
            Some(node) => node,
            None => unreachable!("a PooledBuf is emptied only when dropped"),
        }
    }

    /// Freezes the contents into [`Bytes`] without copying. The buffer returns to the pool
    /// when the last clone (or slice) of the `Bytes` is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(Frozen(self))
    }

    /// The capacity of the buffer's size class (or its length, if it was oversized): what it
    /// is charged to the pool's budget.
    pub fn charge(&self) -> usize {
        self.node().charge()
    }
}

impl Deref for PooledBuf {
    type Target = BytesMut;

    #[inline]
    fn deref(&self) -> &BytesMut {
        &self.node().buf
    }
}

impl DerefMut for PooledBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.node_mut().buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.node().buf
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.node_mut().buf
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = self.node();
        f.debug_struct("PooledBuf")
            .field("len", &node.buf.len())
            .field("capacity", &node.buf.capacity())
            .field("charge", &node.charge())
            .finish()
    }
}

impl Drop for PooledBuf {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(node) = Option::take(&mut self.node) {
            release(node);
        }
    }
}

/// Takes a buffer back: into this thread's cache when it has room, else the shared queue.
/// A buffer whose capacity no longer matches its class is freed.
///
/// Inline is only the common case, a buffer of a size class with its capacity intact going
/// into this thread's cache; the rest is out of line so the drop stays small.
#[inline(always)]
fn release(mut node: Box<Node>) {
    node.buf.clear();
    if node.buf.capacity() == node.keep {
        let class = node.class.get();
        if let Err(node) = local::push(node, class) {
            Shared::put_slow(node);
        }
        return;
    }
    release_slow(node);
}

/// [`release`] of an oversized buffer, or of one whose capacity changed.
#[cold]
#[inline(never)]
fn release_slow(mut node: Box<Node>) {
    match node.class_index() {
        Some(class) if reclaim(&mut node) => {
            if let Err(node) = local::push(node, class) {
                Shared::put_slow(node);
            }
        }
        Some(_) => Shared::discard(node),
        None => Shared::put_slow(node),
    }
}

/// After `advance` or a `split_to` whose other part is gone, the original allocation can be
/// taken back without copying; anything else is not the buffer we charged for.
#[cold]
fn reclaim(node: &mut Node) -> bool {
    let size = node.charge();
    node.buf.capacity() < size && node.buf.try_reclaim(size) && node.buf.capacity() == size
}

/// The owner behind a frozen buffer's [`Bytes`]; dropping it returns the buffer.
struct Frozen(PooledBuf);

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        &self.0.node().buf
    }
}
