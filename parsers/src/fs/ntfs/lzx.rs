//! LZX as WOF uses it (placeholder).

/// Why an LZX chunk does not decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LzxError(&'static str);

impl std::fmt::Display for LzxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

pub(crate) fn decompress(_src: &[u8], _out: &mut [u8]) -> Result<(), LzxError> {
    Err(LzxError("LZX not supported yet"))
}
