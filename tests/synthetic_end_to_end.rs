//! End to end on synthetic tones: isolated notes are written as WAV files,
//! templates are learned from them, a little piece made of the same tones is
//! transcribed, and exactly its notes must come back (pitch, and onset within
//! one 20 ms frame).

mod common;

use std::path::Path;

use sscnmf::attack_decay::AttackDecayLearner;
use sscnmf::factorization::RankOneCnmf;
use sscnmf::notes::Note;
use sscnmf::templates::{NoteRecording, TemplateLearner};
use sscnmf::transcription::{Chunking, Method, Model, Transcriber};

const RATE: u32 = 44100;

fn tone(pitch: u8, seconds: f64) -> Vec<f32> {
    common::tone(RATE, pitch, seconds)
}

fn mix(into: &mut [f32], at_seconds: f64, samples: &[f32]) {
    let start = (at_seconds * f64::from(RATE)) as usize;
    for (i, &s) in samples.iter().enumerate() {
        if let Some(x) = into.get_mut(start + i) {
            *x += s;
        }
    }
}

const PITCHES: [u8; 6] = [48, 55, 60, 64, 67, 72];

/// The piece: a melody over a held chord, with a repeated note.
const SCORE: &[(f64, u8)] = &[(0.5, 48), (0.5, 64), (1.0, 60), (1.5, 67), (2.0, 72), (2.0, 55), (2.6, 60), (3.2, 64)];

/// One isolated-note WAV per pitch of [`PITCHES`] in `dir`: 0.5 s of silence, then 2 s of the tone.
fn isolated_notes(dir: &Path) -> Vec<NoteRecording> {
    PITCHES
        .iter()
        .map(|&p| {
            let mut audio = vec![0.0f32; (0.5 * f64::from(RATE)) as usize];
            audio.extend(tone(p, 2.0));
            let path = dir.join(format!("note{p}.wav"));
            common::write_wav(&path, RATE, &audio);
            NoteRecording { path, pitch: p }
        })
        .collect()
}

/// [`SCORE`] played with the same tones, 5 s.
fn piece() -> Vec<f32> {
    let mut piece = vec![0.0f32; 5 * RATE as usize];
    for &(onset, pitch) in SCORE {
        mix(&mut piece, onset, &tone(pitch, 1.2));
    }
    piece
}

#[test]
fn synthetic_piece_is_transcribed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let notes = isolated_notes(dir.path());
    let learner = TemplateLearner { cnmf: RankOneCnmf { iterations: 100, ..Default::default() }, ..Default::default() };
    let dictionary = learner.learn(&notes, |_| {}).unwrap();
    assert_eq!(dictionary.pitches, PITCHES.to_vec());

    let score = SCORE;
    let piece = piece();
    let mut transcriber = Transcriber::new(dictionary).unwrap();
    // The tones ring on past the 200 ms templates, which gives small
    // secondary activations τ frames after each onset; δ = 0.25 is above them
    // (at 0.05 they become notes, from 0.2 up the result is exact).
    transcriber.detector.threshold = 0.25;
    let found: Vec<Note> = transcriber.transcribe_samples(&piece, 0.0).unwrap().notes;
    let mut expected: Vec<(f64, u8)> = score.to_vec();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let got: Vec<(f64, u8)> = found.iter().map(|n| (n.onset, n.pitch)).collect();
    assert_eq!(got.len(), expected.len(), "found {got:?}, expected {expected:?}");
    for ((t, p), (et, ep)) in got.iter().zip(&expected) {
        assert_eq!(p, ep, "found {got:?}");
        assert!((t - et).abs() <= 0.02 + 1e-9, "onset {t} for pitch {p}, expected {et}: {got:?}");
    }

    // The same piece cut into chunks of 40 frames (0.8 s) with 60 frames of
    // context, through the streaming file path (16-bit WAV): the same notes, and
    // activations within round-off of the unchunked fit.
    let wav = dir.path().join("piece.wav");
    common::write_wav(&wav, RATE, &piece);
    let whole = transcriber.transcribe_file(&wav).unwrap();
    assert_eq!(whole.notes.len(), score.len());
    transcriber.chunking = Chunking { chunk_frames: 40, context_frames: 60 };
    let chunked = transcriber.transcribe_file(&wav).unwrap();
    assert_eq!(chunked.notes, whole.notes);
    assert_eq!(chunked.activations.values.cols, whole.activations.values.cols);
    let scale = whole.activations.max();
    for (a, b) in chunked.activations.values.data.iter().zip(&whole.activations.values.data) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b} (max {scale})");
    }
}

/// The baselines on the same synthetic piece: plain NMF on the templates'
/// first slices, and the attack/decay model trained on the same isolated
/// notes, both read by the same onset rule, find every note (pitch, and
/// onset within two frames: the attack activation rises before the onset
/// spike).
#[test]
fn baselines_transcribe_the_synthetic_piece() {
    let dir = tempfile::tempdir().unwrap();
    let notes = isolated_notes(dir.path());
    let score = SCORE;
    let piece = piece();
    // Compared pitch by pitch: onsets a frame early may reorder simultaneous notes.
    let by_pitch = |a: &(f64, u8), b: &(f64, u8)| a.1.cmp(&b.1).then(a.0.total_cmp(&b.0));
    let mut expected: Vec<(f64, u8)> = score.to_vec();
    expected.sort_by(by_pitch);

    let learner = TemplateLearner { cnmf: RankOneCnmf { iterations: 100, ..Default::default() }, ..Default::default() };
    let templates = Model::Templates(learner.learn(&notes, |_| {}).unwrap());
    let attack_decay = Model::AttackDecay(AttackDecayLearner::default().learn(&notes, |_| {}).unwrap());
    // A model of the wrong kind for the method is refused, naming both.
    let err = Transcriber::for_method(Method::AttackDecay, templates.clone()).unwrap_err().to_string();
    assert!(err.contains("attack-decay") && err.contains("template dictionary"), "{err}");
    for (method, model) in [(Method::Nmf, &templates), (Method::AttackDecay, &attack_decay)] {
        let mut transcriber = Transcriber::for_method(method, model.clone()).unwrap();
        transcriber.detector.threshold = 0.25;
        let found = transcriber.transcribe_samples(&piece, 0.0).unwrap().notes;
        let mut got: Vec<(f64, u8)> = found.iter().map(|n| (n.onset, n.pitch)).collect();
        got.sort_by(by_pitch);
        assert_eq!(got.len(), expected.len(), "{method}: found {got:?}, expected {expected:?}");
        for ((t, p), (et, ep)) in got.iter().zip(&expected) {
            assert_eq!(p, ep, "{method}: found {got:?}");
            assert!((t - et).abs() <= 0.04 + 1e-9, "{method}: onset {t} for pitch {p}, expected {et}: {got:?}");
        }
    }
}
