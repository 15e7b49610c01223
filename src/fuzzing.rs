//! Entry points for fuzzing the parsers of untrusted input: one function per
//! target of the `fuzz/` crate (`cargo fuzz`), also driven on stable by
//! `tests/fuzz_smoke.rs` with random and mutated bytes.
//!
//! Each takes arbitrary bytes, must return without panicking, and panics
//! (a finding) only when an accepted input breaks an invariant of the
//! result, or an error is not a one-line message.

use crate::audio::{decode_bytes, DecodeOptions};
use crate::notes::{parse_csv, parse_json, parse_maps_txt, parse_midi, Note};
use crate::spectrogram::{Stft, StftConfig};
use crate::templates::TemplateDictionary;
use crate::Error;

/// Errors are one line.
fn check_error(e: &Error) {
    assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
}

/// Decodes `data` as audio (the format found from its content, with a WAV,
/// then a FLAC hint), at most 60 s of it. Accepted audio is at a valid
/// rate, has samples, and they are finite; the magnitude STFT of its first
/// second (the paper's settings, at the file's rate: what the pipeline does
/// next) is finite and non-negative.
pub fn decode(data: &[u8]) {
    let options = DecodeOptions { max_duration_seconds: 60.0, ..Default::default() };
    for hint in [Some("wav"), Some("flac")] {
        match decode_bytes(data.to_vec(), hint, &options) {
            Ok(audio) => {
                assert!(audio.sample_rate > 0 && audio.source_channels > 0);
                assert!(!audio.samples.is_empty());
                assert!(audio.samples.len() as f64 <= 60.0 * f64::from(audio.sample_rate) + 1.0);
                assert!(audio.samples.iter().all(|x| x.is_finite()), "non-finite sample accepted");
                let config = StftConfig { sample_rate: audio.sample_rate, ..StftConfig::default() };
                let first_second = &audio.samples[..audio.samples.len().min(audio.sample_rate as usize)];
                let spectrogram = Stft::new(config).expect("the paper's STFT").magnitude(first_second);
                assert!(spectrogram.data.iter().all(|x| x.is_finite() && *x >= 0.0), "bad spectrogram");
            }
            Err(e) => check_error(&e),
        }
    }
}

/// Parses `data` as a template dictionary. An accepted one has matching
/// shapes, increasing pitches (non-decreasing with intensities), and finite, non-negative templates, and
/// round-trips through its bytes.
pub fn templates(data: &[u8]) {
    match TemplateDictionary::from_bytes(data) {
        Ok(d) => {
            let t = &d.templates;
            assert_eq!(t.data.len(), t.n_bins * t.tau * t.n_templates);
            assert_eq!(t.n_templates, d.pitches.len());
            assert_eq!(t.n_bins, d.params.stft.n_fft / 2 + 1);
            if d.intensities.is_empty() {
                assert!(d.pitches.windows(2).all(|w| w[0] < w[1]));
            } else {
                assert!(d.pitches.windows(2).all(|w| w[0] <= w[1]) && d.intensities.len() == d.pitches.len());
            }
            assert!(t.data.iter().all(|x| x.is_finite() && *x >= 0.0));
            let again = TemplateDictionary::from_bytes(&d.to_bytes().expect("serialises")).expect("reads back");
            assert_eq!(again, d);
        }
        Err(e) => check_error(&e),
    }
    if let Err(e) = crate::attack_decay::AttackDecayModel::from_bytes(data) {
        check_error(&e);
    }
}

/// Notes as every reader promises them: sorted by (onset, pitch, offset),
/// finite, 0 ≤ onset ≤ offset, pitch ≤ 127.
pub fn check_notes(notes: &[Note]) {
    for n in notes {
        assert!(n.onset.is_finite() && n.offset.is_finite(), "{n:?}");
        assert!(0.0 <= n.onset && n.onset <= n.offset, "{n:?}");
        assert!(n.pitch <= 127 && n.velocity <= 127, "{n:?}");
    }
    for w in notes.windows(2) {
        let key = |n: &Note| (n.onset, n.pitch, n.offset);
        assert!(key(&w[0]) <= key(&w[1]), "not sorted: {w:?}");
    }
}

/// Parses `data` as a standard MIDI file.
pub fn midi(data: &[u8]) {
    match parse_midi(data) {
        Ok(notes) => check_notes(&notes),
        Err(e) => check_error(&e),
    }
}

/// Parses `data` (as UTF-8, lossily) as a MAPS txt, a CSV and a JSON note list.
pub fn note_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for parse in [parse_maps_txt, parse_csv, parse_json] {
        match parse(&text) {
            Ok(notes) => check_notes(&notes),
            Err(e) => check_error(&e),
        }
    }
}
