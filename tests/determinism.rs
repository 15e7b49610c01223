//! Determinism (issue 6): the same input and options give byte-identical
//! files across runs and with 1 or 2 threads (`RAYON_NUM_THREADS`), through
//! the command line: `learn` (templates) and `transcribe` (MIDI) of a
//! recording long enough to be fitted in chunks (40 s > 32 s).
//!
//! The recording is a dev song (`$SSCNMF_DATA`, else `../shared/data/dev`,
//! as in `tests/dev_data.rs`) with templates learned from three of its
//! piano's isolated notes; without the dev data, a synthetic song and notes.
//! A batch gives the same files whatever `--jobs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const RATE: u32 = 44100;

/// Runs `sscnmf args` with `threads` rayon threads; panics on failure.
fn sscnmf(threads: usize, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_sscnmf"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("runs");
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn dev_data() -> Option<PathBuf> {
    let dir = common::dev_data_root();
    dir.join("FluidR3").is_dir().then_some(dir)
}

/// A manifest of three isolated notes and a song, from the dev data when
/// present, else synthetic, written in `dir`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let manifest = dir.join("notes.csv");
    let mut csv = String::from("path,midi\n");
    let song = match dev_data() {
        Some(data) => {
            let piano = data.join("FluidR3");
            for pitch in [60, 64, 67] {
                let note = piano.join(format!("ISOL/NO/MAPS_ISOL_NO_M_S0_M{pitch}_FluidR3.flac"));
                csv.push_str(&format!("{},{pitch}\n", note.display()));
            }
            piano.join("MUS/MAPS_MUS-bach-bwv846_FluidR3.flac")
        }
        None => {
            eprintln!("note: dev data not found; a synthetic song is used");
            let mut song = vec![0.0f32; 45 * RATE as usize];
            for (i, pitch) in [60u8, 64, 67].into_iter().enumerate() {
                let path = dir.join(format!("note{pitch}.wav"));
                common::write_wav(&path, RATE, &common::tone(RATE, pitch, 1.5));
                csv.push_str(&format!("{},{pitch}\n", path.display()));
                for k in 0..40 {
                    let start = ((k as f64 + i as f64 / 3.0) * f64::from(RATE)) as usize;
                    for (j, s) in common::tone(RATE, pitch, 0.8).into_iter().enumerate() {
                        song[start + j] += s;
                    }
                }
            }
            let path = dir.join("song.wav");
            common::write_wav(&path, RATE, &song);
            path
        }
    };
    std::fs::write(&manifest, csv).unwrap();
    (manifest, song)
}

#[test]
fn same_bytes_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (manifest, song) = inputs(d);
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();

    let mut templates = Vec::new();
    for (threads, name) in [(1, "t1.templates"), (2, "t2.templates")] {
        let m = manifest.to_str().unwrap();
        sscnmf(threads, &["learn", "--manifest", m, "-o", &path(name), "--iterations", "100", "--quiet"]);
        templates.push(std::fs::read(d.join(name)).unwrap());
    }
    assert!(templates[0] == templates[1], "templates differ between 1 and 2 threads");

    let mut midis = Vec::new();
    for (threads, name) in [(1, "a.mid"), (2, "b.mid"), (2, "c.mid")] {
        let s = song.to_str().unwrap();
        sscnmf(
            threads,
            &["transcribe", s, "--templates", &path("t1.templates"), "--duration", "40", "-o", &path(name), "-q"],
        );
        midis.push(std::fs::read(d.join(name)).unwrap());
    }
    let notes = sscnmf::notes::parse_midi(&midis[0]).unwrap();
    assert!(notes.len() > 10, "a real transcription: {} notes", notes.len());
    assert!(midis[0] == midis[1], "MIDI differs between 1 and 2 threads");
    assert!(midis[1] == midis[2], "MIDI differs between two runs");

    // The faithful path (the paper's iterations in f32) too.
    let mut faithful = Vec::new();
    for (threads, name) in [(1, "f1.mid"), (2, "f2.mid")] {
        let (s, t) = (song.to_str().unwrap(), path("t1.templates"));
        sscnmf(
            threads,
            &["transcribe", s, "--templates", &t, "--duration", "40", "--faithful", "-o", &path(name), "-q"],
        );
        faithful.push(std::fs::read(d.join(name)).unwrap());
    }
    let faithful_notes = sscnmf::notes::parse_midi(&faithful[0]).unwrap();
    assert!(faithful_notes.len() > 10, "a real transcription: {} notes", faithful_notes.len());
    assert!(faithful[0] == faithful[1], "the faithful path's MIDI differs between 1 and 2 threads");
}

/// Issue 5: a batch gives the same files whatever `--jobs` and the number
/// of threads (files one at a time on two threads, three at a time on one
/// thread each, two at a time with one thread in all): MIDI, CSV and the
/// sonified WAV, with the built-in dictionary.
#[test]
fn batch_outputs_do_not_depend_on_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let songs = dir.path().join("songs");
    std::fs::create_dir(&songs).unwrap();
    for (k, pitches) in [[60u8, 64, 67], [57, 62, 69], [48, 55, 72]].into_iter().enumerate() {
        let mut song = vec![0.0f32; 4 * RATE as usize];
        for (i, pitch) in pitches.into_iter().enumerate() {
            let start = ((0.3 + i as f64) * f64::from(RATE)) as usize;
            for (j, s) in common::tone(RATE, pitch, 0.9).into_iter().enumerate() {
                song[start + j] += s;
            }
        }
        common::write_wav(&songs.join(format!("song{k}.wav")), RATE, &song);
    }
    let mut runs = Vec::new();
    for (threads, jobs) in [(2, "1"), (3, "3"), (1, "2")] {
        let out = dir.path().join(format!("out-{threads}-{jobs}"));
        std::fs::create_dir(&out).unwrap();
        let (s, o) = (songs.to_str().unwrap(), out.to_str().unwrap());
        sscnmf(threads, &["transcribe", s, "-o", o, "--jobs", jobs, "--format", "csv", "--sonify", "-q"]);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        runs.push(files);
    }
    assert_eq!(runs[0].len(), 9, "{:?}", runs[0].iter().map(|f| &f.0).collect::<Vec<_>>());
    let midi = runs[0].iter().find(|f| f.0 == "song0.mid").expect("song0.mid");
    let notes = sscnmf::notes::parse_midi(&midi.1).unwrap();
    assert!(notes.len() >= 3, "a real transcription: {} notes", notes.len());
    for run in &runs[1..] {
        for (a, b) in runs[0].iter().zip(run) {
            assert!(a == b, "{} differs between runs", a.0);
        }
    }
}
