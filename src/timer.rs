//! Hierarchical timer wheel for call deadlines and lease keepalive refreshes.
//!
//! Time is counted in 1 ms ticks since an origin `Instant`. There are 6 levels
//! of 64 slots; a level-n slot spans 64^n ticks, so the wheel covers 2^36 ticks
//! (~2.2 years). A timer lives at the level of the highest bit in which its
//! deadline differs from the current tick, in slot `(when >> 6n) % 64`; when a
//! slot comes due its timers fire or cascade to a lower level.
//!
//! Why: a client juggles thousands of call deadlines and keepalive refreshes
//! that are mostly cancelled before firing, so insert and cancel are O(1)
//! (slab + intrusive doubly linked lists) and finding the next deadline is a
//! few bit operations per level. No clock is read here: the event loop passes
//! `now` in, which keeps the wheel deterministic and testable.

use std::time::{Duration, Instant};

use slab::Slab;

/// The longest delay a timer is armed for (a year): longer ones are clamped by their users.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Number of levels in the wheel.
const LEVELS: usize = 6;
/// log2 of the number of slots per level.
const SLOT_BITS: usize = 6;
/// Slots per level: one bit each in a `u64` occupancy mask.
const SLOTS: usize = 1 << SLOT_BITS;
/// Deadlines (and `now`) are clamped to this tick so `slot start + level range`
/// can never overflow; it is ~146 million years past the origin.
const MAX_TICK: u64 = 1 << 62;
/// Nanoseconds in one tick (1 ms).
const NANOS_PER_TICK: u128 = 1_000_000;

/// Handle to a scheduled timer, used to cancel it.
///
/// The generation guards against ABA: once a timer fires or is cancelled its
/// slab index can be reused, and the stale key must not cancel the newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    /// Slab index of the entry.
    index: u32,
    /// Generation the entry was created with.
    generation: u32,
}

/// Which list an entry is linked into, so cancel can unlink it in O(1): [`PENDING`] (due,
/// waiting to be returned by `poll`) or a wheel slot, `level * SLOTS + slot`.
type Position = u16;

/// The position of an entry that is due.
const PENDING: Position = Position::MAX;

/// "No entry" in the links of the lists (slab indexes are `u32`, as in [`TimerKey`]).
const NIL: u32 = u32::MAX;

/// Head and tail of an intrusive doubly linked list threaded through the slab ([`NIL`]:
/// none).
#[derive(Clone, Copy, Debug)]
struct List {
    /// First entry.
    head: u32,
    /// Last entry.
    tail: u32,
}

impl Default for List {
    fn default() -> Self {
        List { head: NIL, tail: NIL }
    }
}

/// One wheel level: 64 slot lists plus a bitmask of the non-empty ones.
#[derive(Debug)]
struct Level {
    /// Bit `s` is set iff `slots[s]` is non-empty.
    occupied: u64,
    /// Per-slot entry lists.
    slots: [List; SLOTS],
}

impl Level {
    /// Next occupied slot after `now`'s slot, as `(slot, deadline tick)`.
    ///
    /// The deadline is the start of that slot. Only the top level, whose slots
    /// act as a ring for deadlines beyond the wheel's range, can hold entries
    /// in `now`'s slot or behind it; those are due on the next lap, which is
    /// why the search starts just after `now`'s slot and ends on it.
    fn next_expiration(&self, level: usize, now: u64) -> Option<(usize, u64)> {
        if self.occupied == 0 {
            return None;
        }
        let slot_range = 1u64 << (SLOT_BITS * level);
        let level_range = slot_range << SLOT_BITS;
        let start = slot_for(now, level) as u32 + 1;
        let offset = self.occupied.rotate_right(start).trailing_zeros();
        let slot = (start + offset) as usize % SLOTS;
        let mut deadline = (now & !(level_range - 1)) + slot as u64 * slot_range;
        if deadline <= now {
            debug_assert_eq!(level, LEVELS - 1, "lower levels never lag");
            deadline += level_range;
        }
        Some((slot, deadline))
    }
}

/// A scheduled timer: 24 bytes plus the payload (a keepalive has one armed at all times,
/// so this is paid per keepalive).
#[derive(Debug)]
struct Entry<T> {
    /// Deadline tick (rounded up, so it never fires early).
    when: u64,
    /// The caller's payload, handed back on fire or cancel.
    value: T,
    /// Copied into the `TimerKey` to detect stale keys.
    generation: u32,
    /// Previous entry in the same list ([`NIL`]: none).
    prev: u32,
    /// Next entry in the same list ([`NIL`]: none).
    next: u32,
    /// The list this entry is linked into.
    position: Position,
}

/// Hierarchical timer wheel with 1 ms resolution and O(1) insert/cancel.
#[derive(Debug)]
pub(crate) struct TimerWheel<T> {
    /// Instant of tick 0.
    origin: Instant,
    /// Ticks processed so far; never decreases.
    elapsed: u64,
    /// Storage for all live entries, in a slot or pending.
    entries: Slab<Entry<T>>,
    /// The wheel levels, finest first.
    levels: [Level; LEVELS],
    /// Entries that are due and not yet returned by `poll`.
    pending: List,
    /// Generation for the next inserted entry.
    next_generation: u32,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose tick 0 is `origin`.
    pub(crate) fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            elapsed: 0,
            entries: Slab::new(),
            levels: std::array::from_fn(|_| Level { occupied: 0, slots: [List::default(); SLOTS] }),
            pending: List::default(),
            next_generation: 0,
        }
    }

    /// Schedules `value` to be returned by `poll` once `now >= at`.
    ///
    /// `at` rounds up to the next tick so the timer never fires early; an `at`
    /// at or before the processed time is due on the next `poll`.
    pub(crate) fn insert(&mut self, at: Instant, value: T) -> TimerKey {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        let when = clamp_tick(nanos.div_ceil(NANOS_PER_TICK));
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        crate::core::registry::grow(&mut self.entries);
        let index = self.entries.insert(Entry {
            when,
            value,
            generation,
            prev: NIL,
            next: NIL,
            position: PENDING,
        });
        let index = u32::try_from(index).expect("fewer than 2^32 timers");
        self.place(index);
        TimerKey { index, generation }
    }

    /// Removes the timer and returns its value; `None` if it already fired or
    /// was cancelled (even if its slab slot has since been reused).
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        self.detach(key.index);
        Some(self.entries.remove(key.index as usize).value)
    }

    /// Earliest instant at which `poll` may have work, to size the event
    /// loop's sleep.
    ///
    /// It may be early (a higher-level slot is due at its start, then
    /// cascades) but never late. With due timers pending it is the processed
    /// instant, i.e. already passed.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let tick = if self.pending.head != NIL { self.elapsed } else { self.next_expiration()?.2 };
        // Only fails near the end of `Instant`'s range; early beats late.
        Some(self.origin.checked_add(Duration::from_millis(tick)).unwrap_or(self.origin))
    }

    /// Returns the next value whose deadline is `<= now`, or `None` once
    /// nothing more is due; call it in a loop after each wakeup.
    ///
    /// A `now` earlier than the time already processed counts as that time.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<T> {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        let now = clamp_tick(nanos / NANOS_PER_TICK).max(self.elapsed);
        loop {
            let index = self.pending.head;
            if index != NIL {
                unlink(&mut self.entries, &mut self.pending, index);
                return Some(self.entries.remove(index as usize).value);
            }
            match self.next_expiration() {
                Some((level, slot, deadline)) if deadline <= now => {
                    self.process_expiration(level, slot, deadline);
                }
                _ => {
                    self.elapsed = now;
                    return None;
                }
            }
        }
    }

    /// Number of timers scheduled or pending.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no timers are scheduled or pending.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest due slot as `(level, slot, deadline tick)`; lower levels
    /// always come due before higher ones.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        self.levels.iter().enumerate().find_map(|(level, lvl)| {
            let (slot, deadline) = lvl.next_expiration(level, self.elapsed)?;
            Some((level, slot, deadline))
        })
    }

    /// Advances to the slot's deadline and moves each of its entries to
    /// pending (due) or to a lower level (cascade, or a later lap of the top
    /// level for deadlines beyond the wheel's range).
    fn process_expiration(&mut self, level: usize, slot: usize, deadline: u64) {
        debug_assert!(deadline >= self.elapsed);
        self.elapsed = deadline;
        let level = &mut self.levels[level];
        let mut cursor = std::mem::take(&mut level.slots[slot]).head;
        level.occupied &= !(1 << slot);
        while cursor != NIL {
            let index = cursor;
            cursor = self.entries[index as usize].next;
            self.place(index);
        }
    }

    /// Links an unlinked entry into pending (if due) or its wheel slot.
    fn place(&mut self, index: u32) {
        let when = self.entries[index as usize].when;
        if when <= self.elapsed {
            self.entries[index as usize].position = PENDING;
            push_back(&mut self.entries, &mut self.pending, index);
            return;
        }
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when, level);
        self.entries[index as usize].position = (level * SLOTS + slot) as Position;
        let lvl = &mut self.levels[level];
        lvl.occupied |= 1 << slot;
        push_back(&mut self.entries, &mut lvl.slots[slot], index);
    }

    /// Unlinks an entry from whichever list holds it.
    fn detach(&mut self, index: u32) {
        match self.entries[index as usize].position {
            PENDING => unlink(&mut self.entries, &mut self.pending, index),
            position => {
                let (level, slot) = (position as usize / SLOTS, position as usize % SLOTS);
                let lvl = &mut self.levels[level];
                unlink(&mut self.entries, &mut lvl.slots[slot], index);
                if lvl.slots[slot].head == NIL {
                    lvl.occupied &= !(1 << slot);
                }
            }
        }
    }
}

/// Converts a tick count to `u64`, saturating at `MAX_TICK`.
fn clamp_tick(ticks: u128) -> u64 {
    u64::try_from(ticks).map_or(MAX_TICK, |t| t.min(MAX_TICK))
}

/// Level for a deadline: the 6-bit digit of the highest bit in which `when`
/// differs from `elapsed`, capped to the top level for far deadlines.
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    (significant / SLOT_BITS).min(LEVELS - 1)
}

/// Slot of `when` within `level`: its 6-bit digit at that level.
fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (SLOT_BITS * level)) % SLOTS as u64) as usize
}

/// Appends `index` to `list`.
fn push_back<T>(entries: &mut Slab<Entry<T>>, list: &mut List, index: u32) {
    let entry = &mut entries[index as usize];
    entry.prev = list.tail;
    entry.next = NIL;
    match list.tail {
        NIL => list.head = index,
        tail => entries[tail as usize].next = index,
    }
    list.tail = index;
}

/// Removes `index` from `list`, which must contain it.
fn unlink<T>(entries: &mut Slab<Entry<T>>, list: &mut List, index: u32) {
    let (prev, next) = (entries[index as usize].prev, entries[index as usize].next);
    match prev {
        NIL => list.head = next,
        prev => entries[prev as usize].next = next,
    }
    match next {
        NIL => list.tail = prev,
        next => entries[next as usize].prev = prev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// Instant `ms` milliseconds after `origin`.
    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    #[test]
    fn level_and_slot_math() {
        for n in 0..LEVELS {
            let span = 1u64 << (SLOT_BITS * n);
            assert_eq!(level_for(0, span * 64 - 1), n);
            assert_eq!(slot_for(span * 5 + span / 2, n), 5);
        }
        assert_eq!(level_for(0, 1 << 36), LEVELS - 1);
        assert_eq!(level_for(7, u64::MAX >> 2), LEVELS - 1);
        // Around every 64^n boundary, from several starting points: the entry's
        // digit at its level is ahead of elapsed's, and higher digits agree.
        for elapsed in [0, 1, 63, 64, 4095, 123_456_789, (1 << 36) - 1, 1 << 40] {
            for n in 0..=LEVELS {
                for delta in [-1, 0, 1].map(|d| (1i64 << (SLOT_BITS * n)) + d) {
                    let when = elapsed + delta.max(1) as u64;
                    let level = level_for(elapsed, when);
                    if (elapsed ^ when) >> 36 != 0 {
                        assert_eq!(level, LEVELS - 1, "beyond the wheel");
                    } else {
                        assert!(slot_for(when, level) > slot_for(elapsed, level));
                        let above = SLOT_BITS * (level + 1);
                        assert_eq!(when >> above, elapsed >> above);
                    }
                }
            }
        }
    }

    #[test]
    fn never_fires_early_and_fires_on_its_tick() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        wheel.insert(at(origin, 10) + Duration::from_micros(500), "a");
        wheel.insert(at(origin, 700), "b");
        wheel.insert(origin - Duration::from_millis(3), "past");
        assert_eq!(wheel.next_deadline(), Some(origin));
        assert_eq!(wheel.poll(origin), Some("past"));
        assert_eq!(wheel.poll(origin), None);
        assert_eq!(wheel.next_deadline(), Some(at(origin, 11)));
        assert_eq!(wheel.poll(at(origin, 11) - Duration::from_nanos(1)), None);
        assert_eq!(wheel.poll(at(origin, 11)), Some("a"));
        assert_eq!(wheel.poll(at(origin, 699)), None);
        assert!(wheel.next_deadline().unwrap() <= at(origin, 700));
        assert_eq!(wheel.poll(at(origin, 700)), Some("b"));
        assert!(wheel.is_empty() && wheel.next_deadline().is_none());
        // A `now` behind the processed time counts as the processed time.
        wheel.insert(at(origin, 500), "late");
        assert_eq!(wheel.next_deadline(), Some(at(origin, 700)));
        assert_eq!(wheel.poll(at(origin, 1)), Some("late"));
        assert_eq!(wheel.poll(origin), None);
    }

    #[test]
    fn cancel_and_stale_keys() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let a = wheel.insert(at(origin, 5000), 1);
        let b = wheel.insert(at(origin, 5000), 2);
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        let c = wheel.insert(at(origin, 9000), 3);
        assert_eq!(c.index, a.index, "slab slot reused");
        assert_eq!(wheel.cancel(a), None, "stale key hit the newcomer");
        assert_eq!(wheel.poll(at(origin, 5000)), Some(2));
        assert_eq!(wheel.cancel(b), None, "fired");
        assert_eq!(wheel.cancel(c), Some(3));
        assert!(wheel.is_empty() && wheel.next_deadline().is_none());
    }

    #[test]
    fn far_future_fires_exactly_on_its_tick() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let target = (3 << 36) + (5 << 30) + 12_345;
        wheel.insert(at(origin, target), "far");
        wheel.insert(at(origin, 1 << 42), "farther");
        let mut steps = 0;
        loop {
            let next = wheel.next_deadline().unwrap();
            assert!(next <= at(origin, target), "late deadline");
            steps += 1;
            if let Some(v) = wheel.poll(next) {
                assert_eq!((v, next), ("far", at(origin, target)));
                break;
            }
        }
        assert!(steps < 40, "{steps} wakeups");
        assert_eq!(wheel.poll(at(origin, (1 << 42) - 1)), None);
        assert_eq!(wheel.poll(at(origin, 1 << 42)), Some("farther"));
    }

    /// xorshift64 PRNG, so the model test needs no extra crates.
    struct Rng(u64);

    impl Rng {
        /// Uniform-ish value in `0..n`.
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random delay spanning all levels (and a bit beyond the wheel).
    fn delay(rng: &mut Rng) -> u64 {
        const RANGES: [u64; 6] = [64, 4096, 262_144, 1 << 24, 1 << 31, 1 << 38];
        let range = RANGES[rng.below(RANGES.len() as u64) as usize];
        rng.below(range)
    }

    /// Random operations checked against a `BTreeMap<(tick, id), id>` model.
    fn run_model(seed: u64, ops: u64) {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let (mut rng, mut now) = (Rng(seed), 0u64);
        let mut model = BTreeMap::new();
        let mut live: HashMap<u64, u64> = HashMap::new(); // id -> tick
        let mut keys: Vec<(u64, TimerKey)> = Vec::new();
        for id in 0..ops {
            match rng.below(10) {
                0..=4 => {
                    let (d, sub_ms) = (delay(&mut rng), rng.below(2) * 300);
                    let past = rng.below(20) == 0; // already due
                    let ms = if past { now.saturating_sub(d) } else { now + d };
                    let tick = ms + u64::from(sub_ms > 0);
                    let key = wheel.insert(at(origin, ms) + Duration::from_micros(sub_ms), id);
                    model.insert((tick, id), id);
                    live.insert(id, tick);
                    keys.push((id, key));
                }
                5 | 6 if !keys.is_empty() => {
                    let (victim, key) = keys.swap_remove(rng.below(keys.len() as u64) as usize);
                    let expected = live.remove(&victim).map(|tick| {
                        model.remove(&(tick, victim));
                        victim
                    });
                    assert_eq!(wheel.cancel(key), expected);
                }
                _ => advance_and_check(&mut wheel, &mut rng, &mut now, &mut model, &mut live),
            }
        }
    }

    /// Moves `now` forward, drains the wheel and compares with the model.
    fn advance_and_check(
        wheel: &mut TimerWheel<u64>,
        rng: &mut Rng,
        now: &mut u64,
        model: &mut BTreeMap<(u64, u64), u64>,
        live: &mut HashMap<u64, u64>,
    ) {
        let origin = wheel.origin;
        *now = match rng.below(8) {
            0 => *now,
            1 => *now + rng.below(1 << 41),
            2 => wheel.next_deadline().map_or(*now, |d| (d - origin).as_millis() as u64),
            _ => *now + delay(rng),
        };
        let now_instant = at(origin, *now) + Duration::from_micros(rng.below(1000));
        let mut fired = Vec::new();
        while let Some(id) = wheel.poll(now_instant) {
            fired.push(id);
            assert!(fired.len() <= live.len(), "fired more than scheduled");
        }
        let remaining = model.split_off(&(*now + 1, 0));
        let mut due: Vec<u64> = std::mem::replace(model, remaining).into_values().collect();
        fired.sort_unstable();
        due.sort_unstable();
        assert_eq!(fired, due, "at tick {now}");
        due.iter().for_each(|id| assert!(live.remove(id).is_some()));
        assert_eq!(wheel.len(), model.len());
        match (wheel.next_deadline(), model.keys().next()) {
            (None, None) => {}
            (Some(next), Some(&(tick, _))) => {
                assert!(next > now_instant, "poll returned None with work due");
                assert!(next <= at(origin, tick), "late for tick {tick}");
            }
            other => panic!("next_deadline/model mismatch: {other:?}"),
        }
    }

    #[test]
    fn matches_model_under_random_operations() {
        for seed in [1, 2, 0x9E37_79B9_7F4A_7C15, 0xDEAD_BEEF, 42, 7_777_777] {
            run_model(seed, 5000);
        }
    }

    #[test]
    fn an_entry_is_24_bytes_plus_its_payload() {
        assert_eq!(std::mem::size_of::<Entry<crate::core::cx::Timer>>(), 40);
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 32);
    }
}
