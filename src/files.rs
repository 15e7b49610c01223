//! Writing output files safely: never a partial file, never a silent
//! overwrite of an input.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Result};

/// Temporary files being written by [`write_atomically`] right now.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the temporary files that [`write_atomically`] is writing at this
/// moment; for an interrupt handler about to end the process (which would
/// otherwise leave them behind: a temporary file is removed on drop, and
/// exiting drops nothing). Finished outputs are untouched, and an output
/// whose rename is under way is either whole or not there.
///
/// The process must end right after: the list stays locked, so that no
/// thread still at work (a batch writes several outputs at once) can make a
/// temporary file after the sweep; such a thread waits until the exit.
pub fn remove_pending_temporary_files() {
    let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    for path in pending.iter() {
        let _ = std::fs::remove_file(path);
    }
    std::mem::forget(pending);
}

/// The folder an output file goes into (`.` for a bare file name).
fn output_folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks, before any work is done, that `path` can be written: its folder
/// exists, is a folder, and accepts a new file (a temporary file is made
/// there and removed). Errors name `path`.
pub fn check_output_folder(path: &Path) -> Result<()> {
    let dir = output_folder(path);
    check_folder(path, dir)?;
    // Made and removed under the lock, so an interrupt cannot leave it.
    let _pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    temporary_file(path, dir).map(drop)
}

fn check_folder(path: &Path, dir: &Path) -> Result<()> {
    let missing = |message: &str| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "folder does not exist"))
            .with_message(format!("cannot write: {message}"))
    };
    if dir.is_dir() {
        Ok(())
    } else if dir.exists() {
        Err(missing(&format!("{} is not a folder", dir.display())))
    } else {
        Err(missing("folder does not exist"))
    }
}

fn temporary_file(path: &Path, dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".sscnmf-").suffix(".tmp");
    // tempfile creates files readable by the owner only; outputs should get
    // the usual 0666 less the umask, like any file the user writes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically: into a temporary file in the same
/// folder, flushed, then renamed over `path`. If anything fails, `path` is
/// untouched and the temporary file is removed, so a reader never sees a
/// half-written file and an interrupted run leaves no debris.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// [`write_atomically`] for an output made piece by piece (too large to
/// hold in memory): `write` writes it into the temporary file through a
/// buffer (which also seeks, for formats whose header is patched at the
/// end); an error from `write` leaves `path` untouched.
pub fn write_atomically_with(path: &Path, write: impl FnOnce(&mut BufWriter<&File>) -> Result<()>) -> Result<()> {
    let dir = output_folder(path);
    check_folder(path, dir)?;
    // Made and listed under the lock: the interrupt handler's sweep sees
    // every temporary file that exists.
    let (tmp, tmp_path) = {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = temporary_file(path, dir)?;
        let tmp_path = tmp.path().to_path_buf();
        pending.push(tmp_path.clone());
        (tmp, tmp_path)
    };
    let result = (|| {
        let mut w = BufWriter::new(tmp.as_file());
        write(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
        drop(w);
        tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    })();
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != &tmp_path);
    result
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

/// Named f64 arrays, each `(name, shape, values in row-major order)`, and
/// string metadata as (canonical) safetensors bytes with F64 tensors: for
/// analysis results meant to be read by other tools (numpy, torch).
pub fn f64_safetensors(
    tensors: &[(&str, Vec<usize>, Vec<f64>)],
    metadata: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
    use safetensors::tensor::{serialize, Dtype, TensorView};
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F64, shape.clone(), data)
            .map_err(|e| Error::internal(format!("tensor {name}: {e}")))?;
        views.push((name.to_string(), view));
    }
    let bytes = serialize(views, &Some(metadata)).map_err(|e| Error::internal(format!("serialising tensors: {e}")))?;
    canonical_safetensors(bytes)
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
