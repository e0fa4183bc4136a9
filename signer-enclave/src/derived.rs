//! Keys derived under HD roots, cached in RAM within a budget of entries. Two generations: a
//! lookup that hits the older one moves the key to the newer; when the newer fills half the
//! budget the older is dropped (its keys wipe themselves) and the newer takes its place. So at
//! most `budget` keys are held, the recently used ones survive, and no operation costs more
//! than a hash-map insert (plus, once per half-budget, dropping a generation).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::backend::Backend;
use crate::ids::KeyId;

type Generation<K> = HashMap<(KeyId, Vec<u32>), Arc<K>>;

struct Generations<K> {
    newer: Generation<K>,
    older: Generation<K>,
}

/// The cache of derived keys.
pub struct DerivedKeys<B: Backend> {
    half: usize,
    generations: RwLock<Generations<B::Key>>,
}

impl<B: Backend> DerivedKeys<B> {
    /// A cache holding at most `budget` keys (0 disables it).
    pub fn new(budget: usize) -> Self {
        Self {
            half: budget / 2,
            generations: RwLock::new(Generations {
                newer: HashMap::new(),
                older: HashMap::new(),
            }),
        }
    }

    /// The key at `path` under `root`, if cached.
    pub fn get(&self, root: &KeyId, path: &[u32]) -> Option<Arc<B::Key>> {
        let id = (*root, path.to_vec());
        {
            let generations = self
                .generations
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(key) = generations.newer.get(&id) {
                return Some(Arc::clone(key));
            }
            generations.older.get(&id)?;
        }
        let mut generations = self
            .generations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let key = generations.older.remove(&id)?;
        self.insert_locked(&mut generations, id, Arc::clone(&key));
        Some(key)
    }

    /// Keeps a freshly derived key.
    pub fn insert(&self, root: &KeyId, path: &[u32], key: Arc<B::Key>) {
        if self.half == 0 {
            return;
        }
        let mut generations = self
            .generations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.insert_locked(&mut generations, (*root, path.to_vec()), key);
    }

    fn insert_locked(
        &self,
        generations: &mut Generations<B::Key>,
        id: (KeyId, Vec<u32>),
        key: Arc<B::Key>,
    ) {
        if generations.newer.len() >= self.half {
            generations.older = std::mem::take(&mut generations.newer);
        }
        generations.newer.insert(id, key);
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        let generations = self
            .generations
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        generations.newer.len() + generations.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::K256;
    use crate::secret::WalletSecret;

    fn key() -> Arc<<K256 as Backend>::Key> {
        Arc::new(K256::load(&WalletSecret::random().unwrap()).unwrap())
    }

    #[test]
    fn holds_at_most_the_budget_and_keeps_what_is_used() {
        let cache = DerivedKeys::<K256>::new(4);
        let root = KeyId::random().unwrap();
        let hot = key();
        cache.insert(&root, &[0], Arc::clone(&hot));
        for i in 1..100u32 {
            cache.insert(&root, &[i], key());
            assert!(cache.len() <= 4);
            // Used between every insert, the hot key is never evicted.
            let got = cache.get(&root, &[0]).expect("hot key stays");
            assert!(Arc::ptr_eq(&got, &hot));
        }
        assert!(cache.get(&root, &[1]).is_none(), "cold keys go");
        assert!(cache.get(&KeyId::random().unwrap(), &[0]).is_none());
        let off = DerivedKeys::<K256>::new(0);
        off.insert(&root, &[0], key());
        assert_eq!(off.len(), 0);
    }
}
