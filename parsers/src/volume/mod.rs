//! Partition tables: a virtual disk -> volumes.
