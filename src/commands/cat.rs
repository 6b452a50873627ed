use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use super::{open, CliError, CliResult, OpenSpec};

/// `restorefs cat IMAGE PATH`.
pub fn run(image: &Path, path: &str, spec: &OpenSpec) -> CliResult {
    let tree = open(image, spec)?;
    let node = tree.resolve(path).map_err(|e| CliError::at(image, e))?;
    let size = tree.stat(node).map_err(|e| CliError::at(image, e))?.size;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(buf.len() as u64) as usize;
        let n = tree
            .read(node, off, &mut buf[..want])
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
