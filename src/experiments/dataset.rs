//! Datasets: the MAPS layout (pianos with isolated notes and songs) and the
//! MAESTRO layout (a CSV index of performances, no isolated notes).
//!
//! - **MAPS**: `<dir>/<piano>/ISOL/NO/` holds the isolated notes (MAPS
//!   naming, see [`crate::templates::discover_maps_notes`]) and
//!   `<dir>/<piano>/MUS/` the songs, each audio file with its ground truth
//!   beside it (MAPS `.txt` preferred, else `.mid`).
//! - **MAESTRO** (Hawthorne et al., ICLR 2019): `<dir>/maestro-v*.csv` with
//!   the columns `canonical_composer, canonical_title, split, year,
//!   midi_filename, audio_filename, duration`; the file names are relative
//!   to `<dir>`. Only `split`, `midi_filename` and `audio_filename` are used.
//!   All the songs of one split form one test "piano" named
//!   `maestro-<split>`; having no isolated notes, it needs templates from a
//!   MAPS folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::files::sorted_entries;
use crate::templates::is_audio_file;
use crate::{Error, ErrorKind, Result};

/// One song of a dataset and its ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Song {
    /// The audio file's stem.
    pub id: String,
    /// The audio file.
    pub audio: PathBuf,
    /// The ground truth (MAPS .txt or MIDI).
    pub reference: PathBuf,
}

/// One piano of a dataset: a MAPS piano, or one split of MAESTRO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Piano {
    /// Its folder name (MAPS) or `maestro-<split>`.
    pub name: String,
    /// `<piano>/ISOL/NO` when that folder exists (never for MAESTRO).
    pub isolated_notes: Option<PathBuf>,
    /// Its songs, in the order of the folder's sorted names (MAPS) or of
    /// the index (MAESTRO).
    pub songs: Vec<Song>,
}

/// The layout of a dataset folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DatasetLayout {
    /// Piano folders with `ISOL/NO` and `MUS`.
    Maps,
    /// A MAESTRO index file (the last `maestro-v*.csv` by name).
    Maestro {
        /// The index file.
        index: PathBuf,
    },
}

/// MAESTRO when `dir` holds a `maestro-v*.csv` (the last one by name if
/// there are several), else MAPS.
pub fn dataset_layout(dir: &Path) -> Result<DatasetLayout> {
    let mut indexes = sorted_entries(dir, |p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        p.is_file() && name.starts_with("maestro-v") && name.ends_with(".csv")
    })?;
    Ok(indexes.pop().map_or(DatasetLayout::Maps, |index| DatasetLayout::Maestro { index }))
}

/// The pianos of a MAPS-layout folder: every sub-folder with `ISOL/NO` or
/// `MUS`, sorted by name.
pub fn discover_maps_dataset(dir: &Path) -> Result<Vec<Piano>> {
    let mut pianos = Vec::new();
    for path in sorted_entries(dir, |p| p.is_dir())? {
        let isol = path.join("ISOL").join("NO");
        let mus = path.join("MUS");
        if !isol.is_dir() && !mus.is_dir() {
            continue;
        }
        let mut songs = Vec::new();
        if mus.is_dir() {
            for audio in sorted_entries(&mus, is_audio_file)? {
                let txt = audio.with_extension("txt");
                let mid = audio.with_extension("mid");
                let reference = if txt.is_file() {
                    txt
                } else if mid.is_file() {
                    mid
                } else {
                    continue;
                };
                songs.push(Song { id: stem(&audio), audio, reference });
            }
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        pianos.push(Piano { name, isolated_notes: isol.is_dir().then_some(isol), songs });
    }
    if pianos.is_empty() {
        return Err(Error::invalid_input("no piano folders with ISOL/NO or MUS inside").with_path(dir));
    }
    Ok(pianos)
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap_or_default().to_string_lossy().into_owned()
}

/// MAESTRO's splits.
pub const MAESTRO_SPLITS: [&str; 3] = ["train", "validation", "test"];

/// The songs of one split of a MAESTRO index, in the index's order, as one
/// piano named `maestro-<split>`. Rows whose files are missing are kept (a
/// song that cannot be read is reported as failed by the experiment).
pub fn discover_maestro_dataset(index: &Path, split: &str) -> Result<Piano> {
    if !MAESTRO_SPLITS.contains(&split) {
        return Err(Error::invalid_input(format!("no MAESTRO split `{split}` (expected train, validation or test)")));
    }
    let bad = |message: String| Error::new(ErrorKind::InvalidInput, message).with_path(index);
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header = csv_fields(lines.next().ok_or_else(|| bad("empty MAESTRO index".into()))?.1);
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| bad(format!("MAESTRO index without a `{name}` column")))
    };
    let (split_col, midi_col, audio_col) = (column("split")?, column("midi_filename")?, column("audio_filename")?);
    let root = index.parent().unwrap_or(Path::new("."));
    let mut songs = Vec::new();
    for (i, line) in lines {
        let fields = csv_fields(line);
        let field = |c: usize| {
            fields
                .get(c)
                .map(|f| f.trim())
                .ok_or_else(|| bad(format!("line {}: {} fields, expected {}", i + 1, fields.len(), header.len())))
        };
        if field(split_col)? != split {
            continue;
        }
        let audio = root.join(field(audio_col)?);
        songs.push(Song { id: stem(&audio), audio, reference: root.join(field(midi_col)?) });
    }
    if songs.is_empty() {
        return Err(bad(format!("no song of the `{split}` split in the MAESTRO index")));
    }
    Ok(Piano { name: format!("maestro-{split}"), isolated_notes: None, songs })
}

/// The fields of one CSV line (RFC 4180 quoting: `"a, b"` and `""` inside
/// quotes; MAESTRO quotes titles that hold commas).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("at least one field");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            _ => field.push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc_4180_quoting() {
        assert_eq!(csv_fields("a,b,,c"), ["a", "b", "", "c"]);
        assert_eq!(csv_fields(r#"Bach,"Prelude, Fugue",test"#), ["Bach", "Prelude, Fugue", "test"]);
        assert_eq!(csv_fields(r#""say ""hi""",x"#), [r#"say "hi""#, "x"]);
    }

    #[test]
    fn maestro_index_gives_the_songs_of_one_split() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("maestro-v3.0.0.csv");
        std::fs::write(
            &index,
            "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n\
             Bach,\"Prelude, BWV 846\",test,2004,2004/a.midi,2004/a.wav,30.5\n\
             Liszt,Etude,train,2006,2006/b.midi,2006/b.wav,100.0\n\
             Chopin,Ballade,test,2008,2008/c.midi,2008/c.wav,200.0\n",
        )
        .unwrap();
        assert_eq!(dataset_layout(dir.path()).unwrap(), DatasetLayout::Maestro { index: index.clone() });
        let piano = discover_maestro_dataset(&index, "test").unwrap();
        assert_eq!(piano.name, "maestro-test");
        assert_eq!(piano.isolated_notes, None);
        assert_eq!(piano.songs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(piano.songs[1].reference, dir.path().join("2008/c.midi"));
        let err = discover_maestro_dataset(&index, "validation").unwrap_err().to_string();
        assert!(err.contains("maestro-v3.0.0.csv") && err.contains("validation"), "{err}");
        assert!(discover_maestro_dataset(&index, "dev").unwrap_err().to_string().contains("no MAESTRO split"));
        std::fs::write(&index, "split,audio_filename\ntest,a.wav\n").unwrap();
        let err = discover_maestro_dataset(&index, "test").unwrap_err().to_string();
        assert!(err.contains("midi_filename"), "{err}");
    }
}
