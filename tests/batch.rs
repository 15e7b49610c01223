//! Batch use (issue 5, item 7): `transcribe` over a folder or a glob, files
//! transcribed in parallel, a failed file reported and the others done, a
//! summary at the end, `--json` per-file results and a summary object.
//! (That the outputs do not depend on `--jobs` is in `tests/determinism.rs`.)

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A folder `songs` with a.wav and b.wav (0.5 s of a tone at 8 kHz) and
/// broken.wav (not audio), an empty folder `out`, and the tiny dictionary.
fn setup(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let templates = d.join("tiny.templates");
    common::tiny_dictionary().save(&templates).unwrap();
    let (songs, out) = (d.join("songs"), d.join("out"));
    std::fs::create_dir_all(&songs).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for name in ["a.wav", "b.wav"] {
        let tone: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.3).sin() * 0.2).collect();
        common::write_wav(&songs.join(name), 8000, &tone);
    }
    std::fs::write(songs.join("broken.wav"), b"RIFF....WAVEfmt garbage").unwrap();
    (templates, songs, out)
}

fn transcribe(templates: &Path, inputs: &[&str], out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["transcribe"];
    args.extend(inputs);
    args.extend(["--templates", templates.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    args.extend(extra);
    common::sscnmf(&args)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The reason broken.wav fails, as the decoder words it.
const BROKEN: &str = "corrupt audio header";

#[test]
fn a_bad_file_does_not_stop_the_batch_and_the_summary_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, songs, out) = setup(dir.path());
    let o = transcribe(&templates, &[songs.to_str().unwrap()], &out, &["--jobs", "2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "one file failed: {err}");
    assert_eq!(names(&out), ["a.mid", "b.mid"]);
    assert!(o.stdout.is_empty());
    let broken = songs.join("broken.wav");
    // Per-file lines in input order, then the summary and its failure list.
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with(&format!("{}: ", songs.join("a.wav").display())), "{err}");
    assert!(lines[1].starts_with(&format!("{}: ", songs.join("b.wav").display())), "{err}");
    assert!(lines[2].starts_with(&format!("error: {}: {BROKEN}", broken.display())), "{err}");
    let summary = lines.iter().find(|l| l.starts_with("3 files: ")).unwrap_or_else(|| panic!("no summary: {err}"));
    assert!(summary.contains("2 transcribed, 1 failed, 0 skipped; 1.0 s of audio in "), "{summary}");
    assert!(summary.contains("x real time, 2 at a time)"), "{summary}");
    assert!(err.contains(&format!("  failed: {}: {BROKEN}", broken.display())), "{err}");
    assert_eq!(lines.last().unwrap(), &"error: 1 of 3 files failed");

    // --quiet: no per-file lines, no summary; the failure is still said.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::create_dir(&out).unwrap();
    let o = transcribe(&templates, &[songs.to_str().unwrap()], &out, &["-q"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.starts_with(&format!("error: {}: {BROKEN}", broken.display())), "{err}");
    assert_eq!(names(&out), ["a.mid", "b.mid"]);
}

#[test]
fn json_gives_per_file_results_in_input_order_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, songs, out) = setup(dir.path());
    let o = transcribe(&templates, &[songs.to_str().unwrap()], &out, &["--json", "--format", "csv", "--sonify"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "three files and the summary");
    for (v, name) in lines.iter().zip(["a.wav", "b.wav", "broken.wav"]) {
        assert_eq!(v["input"], songs.join(name).to_str().unwrap());
    }
    for v in &lines[..2] {
        assert_eq!(v["status"], "ok");
        assert!(v["notes"].as_u64().is_some(), "{v}");
        assert!((v["audio_seconds"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{v}");
        assert!(v["seconds"].as_f64().unwrap() > 0.0, "{v}");
        let outputs: Vec<&str> = v["outputs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(outputs.len(), 3, "{v}");
        assert!(outputs[0].ends_with(".mid") && outputs[1].ends_with(".csv") && outputs[2].ends_with(".sonified.wav"));
        assert!(outputs.iter().all(|p| Path::new(p).is_file()), "{v}");
    }
    let bad = &lines[2];
    assert_eq!(bad["status"], "error");
    assert!(bad["reason"].as_str().unwrap().starts_with(BROKEN), "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("broken.wav"), "{bad}");
    let s = &lines[3]["summary"];
    assert_eq!((s["files"].as_u64(), s["done"].as_u64(), s["failed"].as_u64()), (Some(3), Some(2), Some(1)), "{s}");
    assert_eq!(s["skipped"], 0);
    assert_eq!(s["failures"].as_array().unwrap().len(), 1);
    assert!(s["failures"][0]["input"].as_str().unwrap().ends_with("broken.wav"), "{s}");
    assert!(s["failures"][0]["reason"].as_str().unwrap().starts_with(BROKEN), "{s}");
    assert!((s["audio_seconds"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{s}");
    assert!((s["audio_hours"].as_f64().unwrap() - 1.0 / 3600.0).abs() < 1e-12, "{s}");
    assert!(s["wall_seconds"].as_f64().unwrap() > 0.0 && s["speed"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["jobs"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(names(&out), ["a.csv", "a.mid", "a.sonified.wav", "b.csv", "b.mid", "b.sonified.wav"]);

    // A re-run with --skip-existing reports the done files as skipped.
    let o = transcribe(
        &templates,
        &[songs.to_str().unwrap()],
        &out,
        &["--json", "--skip-existing", "--sonify", "--format", "csv"],
    );
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|v| v["status"] == "skipped").count(), 2);
    assert_eq!(lines[3]["summary"]["skipped"], 2);
}

#[test]
fn globs_are_expanded_when_the_shell_did_not() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, songs, out) = setup(dir.path());
    std::fs::write(songs.join("notes.txt"), "not audio").unwrap();
    let pattern = songs.join("*.wav");
    // broken.wav matches too; a.wav given again is done once.
    let a = songs.join("a.wav");
    let o = transcribe(&templates, &[a.to_str().unwrap(), pattern.to_str().unwrap()], &out, &["--json", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(names(&out), ["a.mid", "b.mid"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4);

    // Only audio files are kept: '*' matches notes.txt and is fine.
    std::fs::remove_file(songs.join("broken.wav")).unwrap();
    let o = transcribe(&templates, &[songs.join("*").to_str().unwrap()], &out, &["-q", "--overwrite"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = transcribe(&templates, &[songs.join("[b]*.wav").to_str().unwrap()], &out, &["-q", "--overwrite"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    for (pattern, message) in [("*.flac", "no audio files (wav, flac, mp3, ogg) match"), ("[", "not a valid pattern")] {
        let p = songs.join(pattern);
        let o = transcribe(&templates, &[p.to_str().unwrap()], &out, &["-q"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(p.to_str().unwrap()) && err.contains(message), "{err}");
    }
    // A file whose name looks like a pattern is a file.
    let literal = songs.join("take[1].wav");
    std::fs::copy(songs.join("a.wav"), &literal).unwrap();
    let o = transcribe(&templates, &[literal.to_str().unwrap()], &out.join("take.mid"), &["-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.join("take.mid").is_file());
}
