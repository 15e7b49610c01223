//! Writing output files safely: never a partial file, never a silent
//! overwrite of an input.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: into a temporary file in the same
/// folder, flushed, then renamed over `path`. If anything fails, `path` is
/// untouched and the temporary file is removed, so a reader never sees a
/// half-written file and an interrupted run leaves no debris.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "folder does not exist"))
            .with_message("cannot write: folder does not exist"));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix(".sscnmf-").suffix(".tmp");
    // tempfile creates files readable by the owner only; outputs should get
    // the usual 0666 less the umask, like any file the user writes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// The entries of folder `dir` that `keep` accepts, sorted by path (an
/// unreadable folder is an error naming it; unreadable entries are skipped).
pub fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<std::path::PathBuf>> {
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| keep(p))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Rewrites a safetensors file's JSON header with its keys sorted.
/// `safetensors::serialize` takes the metadata as a `HashMap`, whose order
/// changes from run to run; with a canonical header the same content always
/// gives the same bytes. The header stays padded with spaces to a multiple
/// of 8 bytes, as safetensors writes it; the tensor data is untouched (its
/// offsets are relative to the end of the header).
pub fn canonical_safetensors(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = || Error::internal("malformed safetensors buffer");
    let len = bytes.get(..8).ok_or_else(bad)?;
    let n = u64::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    // serde_json's map is a BTreeMap: keys come out sorted.
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|_| bad())?;
    let mut text = serde_json::to_vec(&value).map_err(|_| bad())?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        write_atomically(&target, b"abc").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        write_atomically(&target, b"defg").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"defg");
        let missing = dir.path().join("no/such/folder/out.bin");
        let err = write_atomically(&missing, b"x").unwrap_err().to_string();
        assert!(err.contains("folder does not exist") && err.contains("out.bin"), "{err}");
        // Nothing but the target is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
