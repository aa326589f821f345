//! An open-addressing index over a dense vector the caller owns: linear probing over 8-byte
//! slots, each a 32-bit hash tag and a 32-bit position. Where a key's probe starts follows
//! from its hash alone, so a batch of announces can prefetch it before any of them looks it
//! up; a general-purpose map hides that address.
//!
//! The tag is the low 32 bits of the hash and the probe starts at `hash & mask`, so the
//! table can be rebuilt, and a slot's home found, without the caller hashing anything again.
//! That holds while a table has at most 2^32 slots, as positions fit in 32 bits anyway.

/// Slot value of an empty slot: positions are stored plus one.
const EMPTY: u64 = 0;

#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// A power of two long, or empty; at most three quarters full.
    slots: Box<[u64]>,
}

fn pack(hash: u64, pos: usize) -> u64 {
    (u64::from(hash as u32) << 32) | (pos as u64 + 1)
}

fn tag(slot: u64) -> u32 {
    (slot >> 32) as u32
}

fn pos(slot: u64) -> usize {
    (slot as u32) as usize - 1
}

impl Slots {
    /// A table for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        let mut s = Slots::default();
        s.resize(n);
        s
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where the probe for `hash` starts: for prefetching only.
    pub fn home(&self, hash: u64) -> *const u64 {
        self.slots
            .as_ptr()
            .wrapping_add(hash as usize & self.mask())
    }

    /// The slot index and position of the entry with `hash` for which `eq` holds.
    fn find_slot(&self, hash: u64, mut eq: impl FnMut(usize) -> bool) -> Option<(usize, usize)> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if tag(s) == hash as u32 && eq(pos(s)) {
                return Some((i, pos(s)));
            }
            i = (i + 1) & mask;
        }
    }

    /// The position of the entry with `hash` for which `eq` holds.
    pub fn find(&self, hash: u64, eq: impl FnMut(usize) -> bool) -> Option<usize> {
        self.find_slot(hash, eq).map(|(_, p)| p)
    }

    /// The first position whose tag matches `hash`, without comparing entries: a guess good
    /// enough to prefetch.
    pub fn guess(&self, hash: u64) -> Option<usize> {
        self.find_slot(hash, |_| true).map(|(_, p)| p)
    }

    /// Records `pos` under `hash`, for an entry known to be absent. `count` is how many
    /// entries the table then holds.
    pub fn insert(&mut self, hash: u64, pos: usize, count: usize) {
        if count * 4 > self.slots.len() * 3 {
            self.resize(count);
        }
        self.place(pack(hash, pos));
    }

    fn place(&mut self, slot: u64) {
        let mask = self.mask();
        let mut i = tag(slot) as usize & mask;
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Rebuilds the table for `n` entries (at least those it holds) at half load.
    pub fn resize(&mut self, n: usize) {
        let cap = (n * 2).next_power_of_two().max(8);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap].into_boxed_slice());
        for &s in old.iter().filter(|&&s| s != EMPTY) {
            self.place(s);
        }
    }

    /// Slots allocated, for deciding when to shrink.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Forgets the entry at `pos` (hashed `hash`).
    pub fn remove(&mut self, hash: u64, pos: usize) {
        let Some((mut hole, _)) = self.find_slot(hash, |p| p == pos) else {
            return;
        };
        // Backward shift: pull later members of the probe run into the hole while their
        // home is not after it, so no run is ever cut by an empty slot.
        let mask = self.mask();
        let mut i = (hole + 1) & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                break;
            }
            let home = tag(s) as usize & mask;
            if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.slots[hole] = s;
                hole = i;
            }
            i = (i + 1) & mask;
        }
        self.slots[hole] = EMPTY;
    }

    /// The entry at `from` (hashed `hash`) has moved to `to`.
    pub fn repoint(&mut self, hash: u64, from: usize, to: usize) {
        if let Some((i, _)) = self.find_slot(hash, |p| p == from) {
            self.slots[i] = pack(hash, to);
        }
    }

    /// The entries at `a` and `b` (hashed `ha` and `hb`) have traded places.
    pub fn swap(&mut self, ha: u64, a: usize, hb: u64, b: usize) {
        let sa = self.find_slot(ha, |p| p == a).map(|(i, _)| i);
        let sb = self.find_slot(hb, |p| p == b).map(|(i, _)| i);
        if let Some(i) = sa {
            self.slots[i] = pack(ha, b);
        }
        if let Some(i) = sb {
            self.slots[i] = pack(hb, a);
        }
    }
}

/// Asks the CPU to start loading the cache line at `p`. A hint: it never faults, whatever
/// the address, so a stale pointer costs nothing but the wasted load.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch instructions do not access memory architecturally and cannot fault.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of the `bytes` bytes from `p`, up to a short limit: past
/// that the hardware's own stream prefetcher takes over.
#[inline(always)]
pub(crate) fn prefetch_range<T>(p: *const T, bytes: usize) {
    const MAX_LINES: usize = 12;
    if bytes == 0 {
        return;
    }
    let first = p as usize & !63;
    let last = (p as usize + bytes - 1) & !63;
    let lines = ((last - first) / 64 + 1).min(MAX_LINES);
    for line in 0..lines {
        prefetch((first + line * 64) as *const u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Inserts and removals with few distinct hash values (long probe runs, wrapping at
        /// the end) agree with a map, and every live entry stays findable.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((0u64..40, any::<bool>()), 1..400)) {
            let mut slots = Slots::default();
            // key -> position, positions dense as in the callers.
            let mut keys: Vec<u64> = Vec::new();
            let hash = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61 | k << 40;
            for (k, insert) in ops {
                let found = slots.find(hash(k), |p| keys[p] == k);
                let model: HashMap<u64, usize> = keys.iter().enumerate().map(|(p, k)| (*k, p)).collect();
                prop_assert_eq!(found, model.get(&k).copied());
                match (found, insert) {
                    (None, true) => {
                        keys.push(k);
                        slots.insert(hash(k), keys.len() - 1, keys.len());
                    }
                    (Some(p), false) => {
                        slots.remove(hash(k), p);
                        let last = keys.len() - 1;
                        if p != last {
                            slots.repoint(hash(keys[last]), last, p);
                        }
                        keys.swap_remove(p);
                    }
                    _ => {}
                }
                for (p, k) in keys.iter().enumerate() {
                    prop_assert_eq!(slots.find(hash(*k), |q| keys[q] == *k), Some(p));
                }
                prop_assert!(keys.len() * 4 <= slots.capacity() * 3 || keys.is_empty());
            }
        }
    }

    #[test]
    fn swap_trades_positions() {
        let mut s = Slots::with_capacity(4);
        s.insert(7, 0, 1);
        s.insert(7 + 8, 1, 2);
        s.swap(7, 0, 15, 1);
        assert_eq!(s.find(7, |p| p == 1), Some(1));
        assert_eq!(s.find(15, |p| p == 0), Some(0));
        assert_eq!(s.guess(7), Some(1));
        assert_eq!(s.guess(3), None);
    }
}
