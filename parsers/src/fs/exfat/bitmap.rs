//! The allocation bitmap: one bit per cluster, set when in use.

/// Clear bits among the first `bits` of `bytes` (a bitmap slice).
pub fn count_free(bytes: &[u8], bits: u64) -> u64 {
    let full = usize::try_from(bits / 8).unwrap_or(usize::MAX);
    let mut free: u64 = bytes
        .iter()
        .take(full)
        .map(|b| u64::from(b.count_zeros()))
        .sum();
    let rest = (bits % 8) as u32;
    if rest != 0 {
        if let Some(b) = bytes.get(full) {
            let mask = (1u8 << rest) - 1;
            free += u64::from((!b & mask).count_ones());
        }
    }
    free
}
