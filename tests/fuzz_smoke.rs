//! A smoke run of the fuzz targets on stable (issue 6): the entry points of
//! `fuzz/` (`sscnmf::fuzzing`) driven by proptest with arbitrary bytes and
//! with valid files (WAV, FLAC, templates, MIDI, MAPS txt) truncated and
//! with bytes overwritten, and every input kept under `fuzz/regressions/`
//! replayed. None may panic.

mod common;

use std::io::Cursor;
use std::path::Path;

use proptest::prelude::*;
use sscnmf::fuzzing;
use sscnmf::notes::{to_maps_txt, to_midi_bytes, Note};

fn wav_bytes(channels: u16, bits: u16, float: bool) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: 8000,
        bits_per_sample: bits,
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..200 * u32::from(channels) {
        let x = (i as f32 * 0.1).sin() * 0.5;
        if float {
            w.write_sample(x).unwrap();
        } else {
            w.write_sample((x * ((1i64 << (bits - 1)) - 1) as f32) as i32).unwrap();
        }
    }
    w.finalize().unwrap();
    out.into_inner()
}

fn flac_bytes() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sine440-660-16bit-22050Hz-stereo-0.25s.flac"),
    )
    .unwrap()
}

fn template_bytes() -> Vec<u8> {
    common::tiny_dictionary().to_bytes().unwrap()
}

fn sample_notes() -> Vec<Note> {
    [(0.0, 0.5, 60), (0.25, 1.0, 64), (0.25, 0.3, 60), (2.0, 2.5, 108)]
        .iter()
        .map(|&(onset, offset, pitch)| Note { onset, offset, pitch, velocity: 80 })
        .collect()
}

/// `bytes` cut to `keep` (a fraction) with `edits` overwritten (position
/// as a fraction of the length, value).
fn mutate(mut bytes: Vec<u8>, keep: f64, edits: &[(f64, u8)]) -> Vec<u8> {
    bytes.truncate(((bytes.len() as f64) * keep).ceil() as usize);
    if !bytes.is_empty() {
        for &(at, value) in edits {
            let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
            bytes[i] = value;
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = (f64, Vec<(f64, u8)>)> {
    (prop_oneof![Just(1.0), 0.0..1.0f64], prop::collection::vec((0.0..1.0f64, any::<u8>()), 0..6))
}

/// Edits biased to the header, where they do the most harm.
fn header_mutation() -> impl Strategy<Value = (f64, Vec<(f64, u8)>)> {
    (prop_oneof![Just(1.0), 0.0..1.0f64], prop::collection::vec((0.0..0.15f64, any::<u8>()), 1..4))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::decode(&bytes);
        fuzzing::templates(&bytes);
        fuzzing::midi(&bytes);
        fuzzing::note_text(&bytes);
    }

    #[test]
    fn mutated_wav(kind in 0usize..5, (keep, edits) in header_mutation()) {
        let (channels, bits, float) = [(1, 16, false), (2, 24, false), (6, 8, false), (1, 32, true), (2, 32, false)][kind];
        fuzzing::decode(&mutate(wav_bytes(channels, bits, float), keep, &edits));
    }

    #[test]
    fn mutated_flac((keep, edits) in mutation()) {
        fuzzing::decode(&mutate(flac_bytes(), keep, &edits));
    }

    #[test]
    fn mutated_templates((keep, edits) in mutation()) {
        fuzzing::templates(&mutate(template_bytes(), keep, &edits));
    }

    #[test]
    fn mutated_midi((keep, edits) in mutation()) {
        fuzzing::midi(&mutate(to_midi_bytes(&sample_notes()), keep, &edits));
    }

    #[test]
    fn mutated_maps_txt((keep, edits) in mutation()) {
        fuzzing::note_text(&mutate(to_maps_txt(&sample_notes()).into_bytes(), keep, &edits));
    }
}

/// A fuzz target: its name and the function that takes its input.
type Target = (&'static str, fn(&[u8]));

/// Inputs kept under `fuzz/regressions/<target>/` (found by fuzzing, or
/// written by hand) are replayed through their target.
#[test]
fn regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let targets: [Target; 4] = [
        ("decode", fuzzing::decode),
        ("templates", fuzzing::templates),
        ("midi", fuzzing::midi),
        ("note_text", fuzzing::note_text),
    ];
    let mut replayed = 0;
    for (name, target) in targets {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() && path.extension().is_none_or(|x| x != "md") {
                target(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no regression inputs under {}", root.display());
}
