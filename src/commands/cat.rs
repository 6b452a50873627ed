use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use super::{open, warn_volumes, CliError, CliResult, OpenSpec};

/// `restorefs cat IMAGE PATH`.
pub fn run(image: &Path, path: &str, spec: &OpenSpec) -> CliResult {
    let tree = open(image, spec)?;
    warn_volumes(&tree, Some(path));
    // `file:stream` names an NTFS alternate data stream.
    let (node, stream) = tree
        .resolve_stream(path)
        .map_err(|e| CliError::at(image, e))?;
    let stream = stream.as_deref();
    let size = tree
        .data_len(node, stream)
        .map_err(|e| CliError::at(image, e))?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(buf.len() as u64) as usize;
        let n = tree
            .read_data(node, stream, off, &mut buf[..want])
            .map_err(|e| CliError::at(image, format!("{path}: {e}")))?;
        if n == 0 {
            return Err(CliError::at(
                image,
                format!("{path}: ends at byte {off} of {size}"),
            ));
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(CliError(format!("stdout: {e}")));
        }
        off += n as u64;
    }
    out.flush().ok();
    Ok(ExitCode::SUCCESS)
}
