//! `transcribe --adapt`: the switch on the command line (help, refusals,
//! output) and the transcriber's adaptation of long recordings chunk by
//! chunk.

use std::process::Output;

mod common;

use sscnmf::factorization::Adaptation;
use sscnmf::transcription::Transcriber;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_shows_the_switch_with_an_example() {
    let help = String::from_utf8_lossy(&common::sscnmf(&["transcribe", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--adapt ")
            && help.contains("--adapt-rounds")
            && help.contains("--adapt-strength")
            && help.contains("--adapt-refit")
            && help.contains("--adapt-dense-first-pass")
            && help.contains("--adapt-filter-bands")
            && help.contains("--adapt-filter-strength"),
        "{help}"
    );
    assert!(help.contains("--templates other-piano.templates --adapt"), "{help}");
    let help = String::from_utf8_lossy(&common::sscnmf(&["experiment", "--help"]).stdout).into_owned();
    assert!(help.contains("experiment ../shared/data/dev --adapt"), "{help}");
}

#[test]
fn transcribe_adapts_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let templates = d.join("tiny.templates");
    common::tiny_dictionary().save(&templates).unwrap();
    let audio = d.join("tone.wav");
    common::write_wav(&audio, 8000, &(0..8000).map(|i| (i as f32 * 0.2).sin() * 0.3).collect::<Vec<_>>());
    let base = ["transcribe", audio.to_str().unwrap(), "--templates", templates.to_str().unwrap(), "--quiet"];
    let with = |extra: &[&str]| common::sscnmf(&[&base[..], extra, &["--overwrite"]].concat());
    let o = with(&["--adapt", "--adapt-rounds", "3", "--adapt-strength", "0.5"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(d.join("tone.mid").is_file());
    let o = with(&["--adapt", "--adapt-rounds", "3", "--adapt-refit", "--adapt-dense-first-pass"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = with(&["--adapt", "--adapt-rounds", "3", "--adapt-cycles", "2", "--adapt-filter-bands", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The settings need the switch; a negative strength is bad input.
    assert_eq!(with(&["--adapt-rounds", "3"]).status.code(), Some(2));
    assert_eq!(with(&["--adapt-filter-bands", "3"]).status.code(), Some(2));
    common::assert_input_error(
        &with(&["--adapt", "--adapt-filter-bands", "3", "--adapt-filter-strength=-1"]),
        "strength",
    );
    assert_eq!(with(&["--adapt-refit"]).status.code(), Some(2));
    assert_eq!(with(&["--adapt-dense-first-pass"]).status.code(), Some(2));
    common::assert_input_error(&with(&["--adapt", "--adapt-strength=-1"]), "strength");
}

/// A recording longer than a chunk: every chunk adapts its own copy of the
/// templates, the activations cover every frame, adaptation changes them,
/// and an overwhelming pull towards the learned templates gives back the
/// fixed templates' activations.
#[test]
fn long_recordings_adapt_chunk_by_chunk() {
    let dictionary = common::tiny_dictionary();
    let samples: Vec<f32> =
        (0..12_000).map(|i| ((i as f32 * 0.2).sin() + 0.5 * (i as f32 * 0.37).sin()) * 0.3).collect();
    let mut fixed = Transcriber::new(dictionary).unwrap();
    fixed.chunking.chunk_frames = 700;
    fixed.chunking.context_frames = 50;
    let h = fixed.activations(&samples, 0.0).unwrap().values;
    let mut adapted = fixed.clone();
    adapted.adaptation = Some(Adaptation { rounds: 5, strength: 0.1, ..Adaptation::default() });
    let ha = adapted.activations(&samples, 0.0).unwrap().values;
    assert_eq!((ha.rows, ha.cols), (h.rows, h.cols));
    assert!(h.cols > 2 * 700, "{} frames: more than two chunks", h.cols);
    let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let top = h.data.iter().copied().fold(0.0, f64::max);
    assert!(diff(&ha.data, &h.data) > 1e-3 * top, "adaptation changed nothing");
    adapted.adaptation = Some(Adaptation { rounds: 5, strength: 1e9, ..Adaptation::default() });
    let held = adapted.activations(&samples, 0.0).unwrap().values;
    assert!(diff(&held.data, &h.data) < 0.05 * top, "{} vs {top}", diff(&held.data, &h.data));
}
