use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;

use restorefs_parsers::{ReadAt, Source};

use super::{open, CliError, CliResult, OpenSpec};

/// `restorefs raw IMAGE [VOLUME] [-o FILE]`.
pub fn run(
    image: &Path,
    volume: Option<&str>,
    output: Option<&Path>,
    force: bool,
    spec: &OpenSpec,
) -> CliResult {
    let tree = open(image, spec)?;
    let src: Source = match volume {
        None => tree.image.disk.clone(),
        Some(name) => tree
            .volume_named(name)
            .map(|v| v.source.clone())
            .ok_or_else(|| CliError::at(image, format!("no volume named {name}")))?,
    };
    let size = src.size();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    match output {
        Some(path) => {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(!force)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            while off < size {
                let n = read_chunk(&src, image, off, size, &mut buf)?;
                let chunk = &buf[..n];
                let res = if chunk.iter().all(|&b| b == 0) {
                    f.seek(SeekFrom::Current(n as i64)).map(|_| ())
                } else {
                    f.write_all(chunk)
                };
                res.map_err(|e| CliError(format!("{}: {e}", path.display())))?;
                off += n as u64;
            }
            f.set_len(size)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        }
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            while off < size {
                let n = read_chunk(&src, image, off, size, &mut buf)?;
                match out.write_all(&buf[..n]) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => return Err(CliError(format!("stdout: {e}"))),
                }
                off += n as u64;
            }
            out.flush().ok();
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_chunk(
    src: &Source,
    image: &Path,
    off: u64,
    size: u64,
    buf: &mut [u8],
) -> Result<usize, CliError> {
    let want = (size - off).min(buf.len() as u64) as usize;
    let buf = &mut buf[..want];
    src.read_exact_at(off, buf)
        .map_err(|e| CliError::at(image, format!("read error at offset {off}: {e}")))?;
    Ok(want)
}
