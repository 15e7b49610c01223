//! Learning templates from a SoundFont: rendering isolated notes with
//! rustysynth, learning from them in memory, and the CLI's `learn
//! --soundfont`. Uses a tiny SF2 written by the test itself
//! (`common::tiny_soundfont`), so nothing outside the repository is needed.

use std::path::Path;

use sscnmf::factorization::RankOneCnmf;
use sscnmf::notes::Note;
use sscnmf::soundfont::{render_isolated_notes, IsolatedNoteTiming, LoadedSoundFont, Preset};
use sscnmf::templates::{TemplateDictionary, TemplateLearner};

mod common;

fn tiny(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tiny.sf2");
    std::fs::write(&path, common::tiny_soundfont()).unwrap();
    path
}

use common::{dft_magnitude, peak};

#[test]
fn isolated_notes_have_maps_timing_and_pitch() {
    let dir = tempfile::tempdir().unwrap();
    let sf = LoadedSoundFont::load(&tiny(dir.path())).unwrap();
    assert_eq!(sf.presets(), vec![(0, 0, "Sine".to_string())]);
    let rate = 44_100;
    let notes = render_isolated_notes(&sf, Preset::default(), &[57, 69], IsolatedNoteTiming::default(), rate).unwrap();
    assert_eq!(notes.iter().map(|n| n.pitch).collect::<Vec<_>>(), vec![57, 69]);
    let s = |t: f64| (t * rate as f64) as usize;
    for n in &notes {
        let x = &n.samples;
        assert_eq!(x.len(), s(3.5));
        // Silent before the onset at 0.5 s, sounding while held, faded out
        // by the end of the 1 s release.
        assert_eq!(peak(&x[..s(0.5) - 1]), 0.0, "pitch {}", n.pitch);
        let held = peak(&x[s(0.6)..s(2.4)]);
        assert!(held > 0.01, "pitch {}: {held}", n.pitch);
        assert!(peak(&x[s(3.4)..]) < 0.01 * held, "pitch {}", n.pitch);
        // The fundamental is where the pitch says (the sample is 441 Hz at 69 − 4 cents).
        let f0 = 441.0 * 2f64.powf(-4.0 / 1200.0) * 2f64.powf((n.pitch as f64 - 69.0) / 12.0);
        let seg = &x[s(1.0)..s(2.0)];
        let at = dft_magnitude(seg, rate as f64, f0);
        for off in [0.94, 1.06] {
            assert!(at > 5.0 * dft_magnitude(seg, rate as f64, f0 * off), "pitch {}: no peak at {f0} Hz", n.pitch);
        }
    }
}

#[test]
fn a_sequence_renders_each_note_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let sf = LoadedSoundFont::load(&tiny(dir.path())).unwrap();
    let notes = [
        Note { onset: 0.25, offset: 0.5, pitch: 60, velocity: 90 },
        Note { onset: 1.0, offset: 1.25, pitch: 64, velocity: 90 },
    ];
    let x = sf.render(Preset::default(), &notes, 22_050, 2.0).unwrap();
    let s = |t: f64| (t * 22_050.0) as usize;
    assert_eq!(x.len(), s(2.0));
    assert_eq!(peak(&x[..s(0.25) - 1]), 0.0);
    assert!(peak(&x[s(0.26)..s(0.5)]) > 0.01);
    assert!(peak(&x[s(0.9)..s(1.0) - 1]) < 0.01 * peak(&x[s(1.01)..s(1.25)]));
}

#[test]
fn templates_learned_from_a_soundfont_peak_at_the_notes_frequency() {
    let dir = tempfile::tempdir().unwrap();
    let sf = LoadedSoundFont::load(&tiny(dir.path())).unwrap();
    let learner = TemplateLearner {
        cnmf: RankOneCnmf { iterations: 30, ..Default::default() },
        source: "tiny".into(),
        ..Default::default()
    };
    let rate = learner.stft.sample_rate;
    let notes = render_isolated_notes(&sf, Preset::default(), &[69, 60], IsolatedNoteTiming::default(), rate).unwrap();
    let d = learner.learn_rendered(&notes, |_| {}).unwrap();
    assert_eq!(d.pitches, vec![60, 69]);
    assert_eq!(d.tau(), 10);
    let f = d.templates.n_bins;
    let bin_hz = rate as f64 / learner.stft.n_fft as f64;
    for (q, &pitch) in d.pitches.iter().enumerate() {
        let t = d.templates.template(q);
        let spectrum: Vec<f64> = (0..f).map(|k| (0..10).map(|i| t[i * f + k] as f64).sum()).collect();
        let argmax = (0..f).max_by(|&a, &b| spectrum[a].total_cmp(&spectrum[b])).unwrap();
        let expected = 441.0 * 2f64.powf((pitch as f64 - 69.0) / 12.0);
        assert!((argmax as f64 * bin_hz - expected).abs() < 2.0 * bin_hz, "pitch {pitch}: peak at bin {argmax}");
    }
    assert!(learner.learn_rendered(&[notes[0].clone(), notes[0].clone()], |_| {}).is_err());
}

/// Exit code 2 and one line `error: ...` containing every needle.
fn assert_one_line_error(o: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn cli_learns_from_a_soundfont_and_explains_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sf2 = tiny(dir.path());
    let out = dir.path().join("sine.templates");
    let (sf2s, outs) = (sf2.to_str().unwrap(), out.to_str().unwrap());
    let o =
        common::sscnmf(&["learn", "--soundfont", sf2s, "--pitches", "60-62", "--iterations", "20", "-q", "-o", outs]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = TemplateDictionary::load(&out).unwrap();
    assert_eq!(d.pitches, vec![60, 61, 62]);
    assert!(d.params.source.contains("tiny.sf2") && d.params.source.contains("Sine"), "{}", d.params.source);
    // Calibrated on a mix rendered through the same preset: its sine notes are found.
    let c = d.calibration.expect("learn --soundfont calibrates");
    assert!(c.mix_notes > 20 && c.mix_onset_f > 0.8, "{c:?}");
    let bare = dir.path().join("bare.templates");
    let o = common::sscnmf(&[
        "learn",
        "--soundfont",
        sf2s,
        "--pitches",
        "60-62",
        "--iterations",
        "20",
        "-q",
        "--no-calibrate",
        "-o",
        bare.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(TemplateDictionary::load(&bare).unwrap().calibration, None);

    let missing = dir.path().join("missing.sf2");
    let o = common::sscnmf(&["learn", "--soundfont", missing.to_str().unwrap(), "-o", "x.templates"]);
    assert_one_line_error(&o, &["missing.sf2", "no such file"]);
    let corrupt = dir.path().join("corrupt.sf2");
    let mut bytes = common::tiny_soundfont();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes).unwrap();
    let x = dir.path().join("x.templates");
    let o = common::sscnmf(&["learn", "--soundfont", corrupt.to_str().unwrap(), "-o", x.to_str().unwrap()]);
    assert_one_line_error(&o, &["corrupt.sf2", "not a valid SF2"]);
    std::fs::write(&corrupt, b"not a soundfont at all").unwrap();
    let o = common::sscnmf(&["learn", "--soundfont", corrupt.to_str().unwrap(), "-o", x.to_str().unwrap()]);
    assert_one_line_error(&o, &["corrupt.sf2", "not a valid SF2"]);
    let o = common::sscnmf(&["learn", "--soundfont", sf2s, "--program", "5", "-o", x.to_str().unwrap()]);
    assert_one_line_error(&o, &["tiny.sf2", "no preset at bank 0, program 5", "0:0 Sine"]);
    let o = common::sscnmf(&["learn", "--soundfont", sf2s, "--pitches", "70-60", "-o", x.to_str().unwrap()]);
    assert_one_line_error(&o, &["--pitches"]);
    assert!(!x.exists());
}
