//! The command line as a user runs it: exit codes, one-line errors naming the
//! file, no partial outputs, JSON shapes.

use std::path::Path;
use std::process::Output;

use sscnmf::notes::read_notes;

mod common;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// A tiny but valid dictionary ([`common::tiny_dictionary`]) saved in `dir`.
fn tiny_templates(dir: &Path) -> std::path::PathBuf {
    let d = common::tiny_dictionary();
    let path = dir.join("tiny.templates");
    d.save(&path).unwrap();
    path
}

/// The tiny dictionary and a 1 s tone at 8 kHz (`tone.wav`) in `dir`.
fn tiny_templates_and_tone(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let audio = dir.join("tone.wav");
    common::write_wav(&audio, 8000, &(0..8000).map(|i| (i as f32 * 0.2).sin() * 0.3).collect::<Vec<_>>());
    (tiny_templates(dir), audio)
}

#[test]
fn help_teaches_and_exits_zero() {
    for cmd in [
        &["--help"][..],
        &["learn", "--help"],
        &["transcribe", "--help"],
        &["evaluate", "--help"],
        &["experiment", "--help"],
        &["render", "--help"],
        &["plot", "--help"],
        &["plot", "spectrogram", "--help"],
        &["plot", "templates", "--help"],
        &["plot", "activations", "--help"],
        &["plot", "roll", "--help"],
        &["decompose", "--help"],
    ] {
        let o = common::sscnmf(cmd);
        assert_eq!(o.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Example"), "{cmd:?}");
    }
    assert_eq!(common::sscnmf(&["transcribe"]).status.code(), Some(2));
    assert_eq!(common::sscnmf(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn experiment_help_teaches_maestro_and_a_maestro_folder_needs_templates() {
    let help = String::from_utf8_lossy(&common::sscnmf(&["experiment", "--help"]).stdout).into_owned();
    assert!(help.contains("--split test") && help.contains("--templates-from MAPS"), "{help}");
    assert!(help.contains("--methods cnmf,nmf,attack-decay"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("maestro-v3.0.0.csv"), b"split,midi_filename,audio_filename\ntest,a.midi,a.wav\n");
    let o = common::sscnmf(&["experiment", d.to_str().unwrap(), "--quiet"]);
    common::assert_input_error(&o, "--templates-from");
    let o = common::sscnmf(&["experiment", d.to_str().unwrap(), "--split", "dev"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("possible values: train, validation, test"), "{}", stderr(&o));
    common::assert_input_error(
        &common::sscnmf(&["experiment", d.to_str().unwrap(), "--pianos", "X", "-q"]),
        "no pianos to pick",
    );
}

#[test]
fn bad_inputs_get_one_line_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let templates = tiny_templates(d);
    let t = templates.to_str().unwrap();

    let missing = d.join("missing.wav");
    common::assert_input_error(
        &common::sscnmf(&["transcribe", missing.to_str().unwrap(), "--templates", t]),
        "missing.wav",
    );

    let empty = d.join("empty.wav");
    write(&empty, b"");
    common::assert_input_error(
        &common::sscnmf(&["transcribe", empty.to_str().unwrap(), "--templates", t]),
        "empty.wav",
    );
    assert!(!d.join("empty.mid").exists());

    let text = d.join("text.wav");
    write(&text, b"this is not audio at all, just some words in a file");
    common::assert_input_error(&common::sscnmf(&["transcribe", text.to_str().unwrap(), "--templates", t]), "text.wav");
    assert!(!d.join("text.mid").exists());

    let audio = d.join("tone.wav");
    common::write_wav(&audio, 8000, &(0..8000).map(|i| (i as f32 * 0.2).sin() * 0.3).collect::<Vec<_>>());
    let bad_templates = d.join("bad.templates");
    let bytes = std::fs::read(&templates).unwrap();
    write(&bad_templates, &bytes[..bytes.len() / 2]);
    common::assert_input_error(
        &common::sscnmf(&["transcribe", audio.to_str().unwrap(), "--templates", bad_templates.to_str().unwrap()]),
        "bad.templates",
    );

    let out = d.join("no/such/folder/out.mid");
    common::assert_input_error(
        &common::sscnmf(&["transcribe", audio.to_str().unwrap(), "--templates", t, "-o", out.to_str().unwrap()]),
        "out.mid",
    );
    common::assert_input_error(
        &common::sscnmf(&["transcribe", audio.to_str().unwrap(), "--templates", t, "-o", audio.to_str().unwrap()]),
        "overwrite an input",
    );

    // Nothing but our own files is left behind (no temporary files).
    let mut names: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["bad.templates", "empty.wav", "text.wav", "tiny.templates", "tone.wav"]);
}

#[test]
fn transcribe_writes_all_formats_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (templates, audio) = tiny_templates_and_tone(d);
    let args = ["transcribe", audio.to_str().unwrap(), "--templates", templates.to_str().unwrap(), "--quiet"];
    let o = common::sscnmf(&[&args[..], &["--format", "csv", "--format", "txt", "--format", "json"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for ext in ["mid", "csv", "txt", "json"] {
        assert!(d.join(format!("tone.{ext}")).is_file(), "tone.{ext}");
    }
    let csv = std::fs::read_to_string(d.join("tone.csv")).unwrap();
    assert!(csv.starts_with("start_time_s,end_time_s,pitch_midi,velocity"));
    common::assert_input_error(&common::sscnmf(&args), "already exists");
    assert_eq!(common::sscnmf(&[&args[..], &["--overwrite"]].concat()).status.code(), Some(0));
}

/// One input and `-o FILE`: the extension picks the notes' format (CSV under
/// a .csv name, not MIDI bytes); an extension that names no notes format is a
/// one-line error before any work, and nothing is written.
#[test]
fn the_output_extension_picks_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (templates, audio) = tiny_templates_and_tone(d);
    let run_with = |out: &Path, more: &[&str]| {
        let args = ["transcribe", audio.to_str().unwrap(), "--templates", templates.to_str().unwrap(), "-q", "-o"];
        common::sscnmf(&[&args[..], &[out.to_str().unwrap()], more].concat())
    };
    let run = |out: &Path| run_with(out, &[]);
    let csv = d.join("notes.csv");
    let o = run(&csv);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("start_time_s,end_time_s,pitch_midi,velocity"), "{text}");
    assert!(text.lines().count() > 1, "no note in {text}");
    assert!(!d.join("notes.mid").exists());
    // --format adds formats beside it, MIDI included.
    let o = run_with(&csv, &["--overwrite", "--format", "mid", "--format", "txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(d.join("notes.mid")).unwrap().starts_with(b"MThd"));
    assert_eq!(read_notes(&d.join("notes.txt")).unwrap().len(), text.lines().count() - 1);
    // A folder to be made is not a file name, even with a dot in it.
    let o = run(&d.join("out.v2/"));
    assert!(!stderr(&o).contains("-o names the notes file"), "{}", stderr(&o));
    let json = d.join("notes.json");
    assert_eq!(run(&json).status.code(), Some(0));
    assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&json).unwrap()).is_ok());
    let midi = d.join("notes.MID");
    assert_eq!(run(&midi).status.code(), Some(0));
    assert!(std::fs::read(&midi).unwrap().starts_with(b"MThd"));
    let wav = d.join("notes.wav");
    let o = run(&wav);
    common::assert_input_error(&o, ".wav");
    assert!(stderr(&o).contains("--sonify"), "{}", stderr(&o));
    assert!(!wav.exists());
}

/// `--max-frequency` (transcribe, bench): above 0 Hz and at most the
/// templates' Nyquist frequency (4000 Hz for the tiny 8 kHz dictionary), else
/// a one-line error naming the templates file and nothing written; a valid
/// cut transcribes.
#[test]
fn max_frequency_is_checked_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (templates, audio) = tiny_templates_and_tone(d);
    let (a, t) = (audio.to_str().unwrap(), templates.to_str().unwrap());
    for bad in ["-5", "0", "NaN", "4000.5", "inf"] {
        let value = format!("--max-frequency={bad}");
        for command in ["transcribe", "bench"] {
            let o = common::sscnmf(
                &[command, a, "--templates", t, &value, "--quiet"][..if command == "bench" { 5 } else { 6 }],
            );
            common::assert_input_error(&o, "tiny.templates");
            assert!(stderr(&o).contains("at most the Nyquist frequency 4000 Hz"), "{bad}: {}", stderr(&o));
        }
        assert!(!d.join("tone.mid").exists(), "{bad}");
    }
    let o = common::sscnmf(&["transcribe", a, "--templates", t, "--max-frequency", "2000", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(d.join("tone.mid").is_file());
    // The built-in dictionary is at 44.1 kHz.
    let o = common::sscnmf(&["transcribe", a, "--max-frequency", "30000", "-o", d.join("x.mid").to_str().unwrap()]);
    common::assert_input_error(&o, "at most the Nyquist frequency 22050 Hz");
}

#[test]
fn evaluate_prints_the_stable_json() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.txt");
    let estimate = dir.path().join("est.csv");
    write(&reference, b"OnsetTime\tOffsetTime\tMidiPitch\n0.5\t1.0\t60\n1.0\t1.5\t64\n");
    write(&estimate, b"start_time_s,end_time_s,pitch_midi,velocity\n0.52,1.0,60,80\n2.0,2.5,67,80\n");
    let o = common::sscnmf(&["evaluate", reference.to_str().unwrap(), estimate.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["onset", "onset_offset"] {
        for field in ["precision", "recall", "f_measure", "accuracy", "matched"] {
            assert!(v[key][field].is_number(), "{key}.{field}");
        }
    }
    assert_eq!(v["onset"]["matched"], 1);
    assert_eq!(v["n_reference"], 2);
    assert_eq!(v["n_estimate"], 2);
    assert!((v["onset"]["f_measure"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    assert!((v["onset"]["accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    let bad = dir.path().join("bad.csv");
    write(&bad, b"start_time_s,end_time_s,pitch_midi\n1.0,0.5,60\n");
    common::assert_input_error(
        &common::sscnmf(&["evaluate", reference.to_str().unwrap(), bad.to_str().unwrap()]),
        "bad.csv",
    );
}
