//! Parsed structures kept for reuse: directories, extent lists, cluster
//! chains, FAT pages, NTFS nodes. One bounded LRU map per kind and
//! filesystem, shared by every reader thread.
//!
//! The lock is held only to look up and to insert, never while parsing
//! (which reads the image): two threads missing the same key both parse it
//! and the second insert wins, harmlessly, since both parsed the same
//! bytes. A poisoned lock is taken over: a get or a put cannot leave the
//! map half-changed.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::Result;

/// A bounded map from keys to shared parsed values.
pub struct Memo<K: Hash + Eq, V: ?Sized> {
    map: Mutex<LruCache<K, Arc<V>>>,
}

impl<K: Hash + Eq, V: ?Sized> Memo<K, V> {
    /// A map keeping the `entries` most recently used values (at least one).
    pub fn new(entries: usize) -> Self {
        Memo {
            map: Mutex::new(LruCache::new(
                NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<K, Arc<V>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value for `key`: kept, or made by `make` (outside the lock) and
    /// kept. An error from `make` is returned and nothing is kept.
    pub fn get_or_make(&self, key: K, make: impl FnOnce() -> Result<Arc<V>>) -> Result<Arc<V>> {
        if let Some(v) = self.lock().get(&key) {
            return Ok(v.clone());
        }
        let v = make()?;
        self.lock().put(key, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn makes_once_keeps_the_newest_and_not_errors() -> Result<()> {
        let m: Memo<u32, String> = Memo::new(2);
        let mut made = 0;
        for _ in 0..3 {
            let v = m.get_or_make(1, || {
                made += 1;
                Ok(Arc::new("one".to_string()))
            })?;
            assert_eq!(*v, "one");
        }
        assert_eq!(made, 1);
        let e = m.get_or_make(2, || Err(Error::corrupt("test", 0, "bad")));
        assert!(e.is_err());
        // The failure was not kept: the next call makes it.
        assert_eq!(*m.get_or_make(2, || Ok(Arc::new("two".into())))?, "two");
        // Bounded: a third key evicts the least recently used (1).
        m.get_or_make(3, || Ok(Arc::new("three".into())))?;
        let mut remade = false;
        m.get_or_make(1, || {
            remade = true;
            Ok(Arc::new("one".into()))
        })?;
        assert!(remade);
        Ok(())
    }
}
