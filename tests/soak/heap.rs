//! A counting global allocator that attributes live heap bytes to the client under test.
//!
//! The soak asks whether each client's own state stays flat over a long run: the bytes the
//! library holds after everything was cancelled and completed should be what it held before
//! the load started, give or take capacity it keeps (a slab grown to the peak number of
//! calls, say), never something that grows with the number of operations.
//!
//! A process-wide byte count cannot answer that here: the same process runs the TCP proxies,
//! the etcd log readers and the test's own records, which grow by design. So each allocation
//! carries a small header naming the *slot* it is charged to: the slot of the client thread
//! that made it while running library code (inside [`lib`]), or slot 0 (not counted). Frees
//! decrement the slot in the header, whichever thread frees, so a response the library
//! allocated and the test dropped is accounted for. The test's own code runs with slot 0
//! ([`ours`], which every callback wrapper enters), so its records never count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

/// Slots available: one per client thread (0 is "not counted").
pub const SLOTS: usize = 64;

/// Header bytes before each block: enough for the slot and keeps 16-byte alignment.
const HEADER: usize = 16;

static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];

thread_local! {
    /// The slot allocations are charged to right now (0: not counted).
    static CHARGE: Cell<usize> = const { Cell::new(0) };
    /// This thread's client slot, which [`lib`] charges.
    static MINE: Cell<usize> = const { Cell::new(0) };
}

/// The allocator: `System` with a header in front of every block.
pub struct Counting;

/// Header size for `layout`: at least [`HEADER`], and a multiple of the alignment so the
/// user pointer stays aligned.
fn header(layout: Layout) -> usize {
    HEADER.max(layout.align())
}

fn outer(layout: Layout) -> Option<Layout> {
    Layout::from_size_align(layout.size().checked_add(header(layout))?, layout.align().max(HEADER))
        .ok()
}

fn charge() -> usize {
    CHARGE.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every block handed out is `header(layout)` bytes into a `System` block of
// `outer(layout)`; the slot lives in the 8 bytes just before the user pointer, and `dealloc`
// and `realloc` undo exactly that with the same layout arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(outer) = outer(layout) else { return std::ptr::null_mut() };
        // SAFETY: `outer` has a non-zero size (it includes the header).
        let base = unsafe { System.alloc(outer) };
        if base.is_null() {
            return base;
        }
        let slot = charge();
        // SAFETY: the header is inside the block and 8-byte aligned.
        unsafe {
            let user = base.add(header(layout));
            (user.sub(8) as *mut u64).write(slot as u64);
            if slot != 0 {
                LIVE[slot].fetch_add(layout.size() as i64, Ordering::Relaxed);
            }
            user
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` with this layout (GlobalAlloc contract).
        unsafe {
            let slot = (ptr.sub(8) as *const u64).read() as usize;
            if slot != 0 {
                LIVE[slot].fetch_sub(layout.size() as i64, Ordering::Relaxed);
            }
            let outer = outer(layout).expect("valid when allocated");
            System.dealloc(ptr.sub(header(layout)), outer);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The block keeps its slot: growing a buffer does not change whose state it is.
        let h = header(layout);
        let (Some(old), Some(total)) = (outer(layout), new_size.checked_add(h)) else {
            return std::ptr::null_mut();
        };
        // SAFETY: same block and layout as allocated; the header moves with the block.
        unsafe {
            let slot = (ptr.sub(8) as *const u64).read() as usize;
            let base = System.realloc(ptr.sub(h), old, total);
            if base.is_null() {
                return base;
            }
            if slot != 0 {
                LIVE[slot].fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            }
            base.add(h)
        }
    }
}

/// Makes `slot` (1..SLOTS) this thread's client slot, charged inside [`lib`].
pub fn set_thread_slot(slot: usize) {
    assert!((1..SLOTS).contains(&slot), "slot {slot} out of range");
    MINE.with(|m| m.set(slot));
}

/// Runs `f` (a call into the client library) with its allocations charged to this thread's
/// slot.
pub fn lib<R>(f: impl FnOnce() -> R) -> R {
    with_charge(MINE.with(Cell::get), f)
}

/// Runs `f` (the test's own code, e.g. a callback's body) uncounted.
pub fn ours<R>(f: impl FnOnce() -> R) -> R {
    with_charge(0, f)
}

fn with_charge<R>(slot: usize, f: impl FnOnce() -> R) -> R {
    /// Restores the previous charge even if `f` unwinds.
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHARGE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CHARGE.with(|c| c.replace(slot)));
    f()
}

/// Live bytes charged to `slot`.
pub fn live(slot: usize) -> i64 {
    LIVE[slot].load(Ordering::Relaxed)
}
