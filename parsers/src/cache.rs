//! The chunk cache: decoded blocks (decompressed grains, clusters, table
//! pages) kept for reuse, within one byte budget for the whole process.
//!
//! Sharded `lru` caches behind mutexes; a lookup holds a shard lock only to
//! find or insert, never while loading, so a slow read on one thread never
//! blocks another. Two threads missing the same chunk may both load it; the
//! second insert just replaces the first.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;

use crate::Result;

/// Key of a cached chunk: which decoder (an id from [`ChunkCache::owner`])
/// and which chunk of it.
type Key = (u64, u64);

const SHARDS: usize = 16;
/// Default budget of the process-wide cache.
pub const DEFAULT_BUDGET: usize = 256 << 20;

struct Shard {
    map: LruCache<Key, Arc<[u8]>>,
    used: usize,
}

/// A byte-budgeted cache of decoded chunks, shared by all threads.
pub struct ChunkCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters for `info` and benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct CacheStats {
    pub budget: usize,
    pub used: usize,
    pub hits: u64,
    pub misses: u64,
}

impl ChunkCache {
    /// A cache holding at most about `budget` bytes of chunks.
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: LruCache::unbounded(),
                        used: 0,
                    })
                })
                .collect(),
            shard_budget: (budget / SHARDS).max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The process-wide cache every decoder shares.
    pub fn global() -> &'static ChunkCache {
        static GLOBAL: OnceLock<ChunkCache> = OnceLock::new();
        GLOBAL.get_or_init(|| ChunkCache::new(DEFAULT_BUDGET))
    }

    /// A fresh owner id, one per decoder instance, so keys never collide.
    pub fn owner() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The chunk `(owner, index)`, loading it with `load` on a miss.
    pub fn get_or_load(
        &self,
        owner: u64,
        index: u64,
        load: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<[u8]>> {
        let key = (owner, index);
        let shard = self.shard(&key);
        if let Some(hit) = lock(shard).map.get(&key).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let chunk: Arc<[u8]> = load()?.into();
        self.put(key, chunk.clone());
        Ok(chunk)
    }

    /// The chunk `(owner, index)` if held (counted as a hit or a miss).
    pub fn get(&self, owner: u64, index: u64) -> Option<Arc<[u8]>> {
        let hit = lock(self.shard(&(owner, index)))
            .map
            .get(&(owner, index))
            .cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Keeps `chunk` as `(owner, index)`, replacing what was there: for a
    /// loader that fetches several chunks at once.
    pub fn insert(&self, owner: u64, index: u64, chunk: Arc<[u8]>) {
        self.put((owner, index), chunk);
    }

    fn put(&self, key: Key, chunk: Arc<[u8]>) {
        if chunk.len() > self.shard_budget {
            return;
        }
        let mut s = lock(self.shard(&key));
        if let Some(old) = s.map.put(key, chunk.clone()) {
            s.used -= old.len();
        }
        s.used += chunk.len();
        while s.used > self.shard_budget {
            match s.map.pop_lru() {
                Some((_, v)) => s.used -= v.len(),
                None => break,
            }
        }
    }

    /// Budget, bytes held, hits and misses.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            budget: self.shard_budget * SHARDS,
            used: self.shards.iter().map(|s| lock(s).used).sum(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// A poisoned shard only means another thread panicked mid-insert; the map
/// itself is still consistent, so keep using it.
fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_budget_and_hits() -> Result<()> {
        let c = ChunkCache::new(SHARDS * 100);
        let o = ChunkCache::owner();
        for i in 0..1000u64 {
            let v = c.get_or_load(o, i, || Ok(vec![i as u8; 40]))?;
            assert_eq!(v[0], i as u8);
        }
        assert!(c.stats().used <= SHARDS * 100);
        let v = c.get_or_load(o, 999, || panic!("must be cached"))?;
        assert_eq!(v[0], 999u64 as u8);
        assert!(c
            .get_or_load(o, 5000, || Err(crate::Error::NotFound("x".into())))
            .is_err());
        Ok(())
    }
}
