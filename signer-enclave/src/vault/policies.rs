//! Values many keys share, stored once and referred to by a `u32` index: policies (parsed once
//! per distinct policy) and keyring ids. A vault holds millions of keys and few of these.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Error;
use crate::policy::KeyPolicy;

/// A policy in force for one or more keys: parsed once, shared by every key that has it.
#[derive(Debug)]
pub(crate) struct PolicyEntry {
    /// SHA-256 of `bytes` (see [`crate::seal::policy_hash`]).
    pub hash: [u8; 32],
    /// The encoded policy, as sealed.
    pub bytes: Vec<u8>,
    /// The parsed policy.
    pub policy: KeyPolicy,
}

/// Distinct policies in use, at most `capacity`, each counted by the keys that have it. A
/// policy no key has any more (superseded by a change) is dropped, so churning one key's policy
/// cannot fill the table for everyone.
#[derive(Debug)]
pub(super) struct PolicyTable {
    index: HashMap<[u8; 32], u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    capacity: usize,
}

#[derive(Debug)]
struct Slot {
    entry: Arc<PolicyEntry>,
    users: usize,
}

impl PolicyTable {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
        }
    }

    fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether a policy with `hash` is held or would fit once `replaced` gives back one use.
    pub(super) fn has_room_replacing(&self, hash: &[u8; 32], replaced: u32) -> bool {
        let frees_a_slot = self
            .slots
            .get(usize::try_from(replaced).unwrap_or(usize::MAX))
            .and_then(Option::as_ref)
            .is_some_and(|slot| slot.users == 1);
        self.index.contains_key(hash) || self.live() < self.capacity || frees_a_slot
    }

    /// Takes one more use of the policy `bytes` (hashing to `hash`), parsing it with `parse` only
    /// if it is not held yet.
    ///
    /// # Errors
    /// [`Error::Capacity`] when the table is full; whatever `parse` returns.
    pub(super) fn acquire(
        &mut self,
        hash: [u8; 32],
        bytes: &[u8],
        parse: impl FnOnce() -> Result<KeyPolicy, Error>,
    ) -> Result<u32, Error> {
        if let Some(&i) = self.index.get(&hash) {
            if let Some(slot) = self.slot_mut(i) {
                slot.users += 1;
            }
            return Ok(i);
        }
        if self.live() >= self.capacity {
            return Err(Error::Capacity("policy capacity reached"));
        }
        let slot = Slot {
            entry: Arc::new(PolicyEntry {
                hash,
                bytes: bytes.to_vec(),
                policy: parse()?,
            }),
            users: 1,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[usize::try_from(i).expect("u32 fits in usize qed")] = Some(slot);
                i
            }
            None => {
                let i = u32::try_from(self.slots.len())
                    .map_err(|_| Error::Capacity("policy capacity reached"))?;
                self.slots.push(Some(slot));
                i
            }
        };
        self.index.insert(hash, i);
        Ok(i)
    }

    /// Gives back one use; the policy is dropped with its last.
    pub(super) fn release(&mut self, i: u32) {
        let Some(slot) = self.slot_mut(i) else { return };
        slot.users -= 1;
        if slot.users == 0 {
            let hash = slot.entry.hash;
            self.index.remove(&hash);
            self.slots[usize::try_from(i).expect("u32 fits in usize qed")] = None;
            self.free.push(i);
        }
    }

    fn slot_mut(&mut self, i: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(usize::try_from(i).ok()?)
            .and_then(Option::as_mut)
    }

    /// The policy at `i`, which a loaded key holds.
    pub(super) fn get(&self, i: u32) -> Arc<PolicyEntry> {
        let slot = self.slots[usize::try_from(i).expect("u32 fits in usize qed")]
            .as_ref()
            .expect("a policy in use is held qed");
        Arc::clone(&slot.entry)
    }
}

/// Small `Copy` values shared by many keys (keyring ids).
#[derive(Debug)]
pub(super) struct Interned<T> {
    index: HashMap<T, u32>,
    values: Vec<T>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            values: Vec::new(),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Interned<T> {
    /// Keyrings are capped far below 2^32, so the index always fits.
    pub(super) fn intern(&mut self, value: T) -> u32 {
        if let Some(&i) = self.index.get(&value) {
            return i;
        }
        let i = u32::try_from(self.values.len()).expect("fewer than 2^32 keyrings qed");
        self.values.push(value);
        self.index.insert(value, i);
        i
    }

    pub(super) fn get(&self, i: u32) -> T {
        self.values[usize::try_from(i).expect("u32 fits in usize qed")]
    }
}
