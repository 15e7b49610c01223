//! Calibrating the decision rule on the isolated notes (issue 7): no oracle.
//!
//! The paper tunes the onset rule's δ on the test songs themselves. Here
//! every parameter of the rule that turns activations into notes is chosen
//! on data the user has — the isolated-note recordings the templates were
//! learned from — and stored in the dictionary file
//! ([`crate::templates`], metadata `calibration`).
//!
//! # The calibration mix
//!
//! A seeded, synthetic "piece" ([`synthetic_mix`]) is built from the
//! isolated notes at the median intensity and louder (M and F of MAPS's
//! P, M, F; [`calibrate_on_folder`]): events arrive as a Poisson process
//! ([`MixSettings::events_per_second`]), each a chord of 1 to 3 notes with
//! pitches drawn around middle E ([`MixSettings::pitch_mean`],
//! [`MixSettings::pitch_sd`]), each note a recording of that pitch at a random
//! intensity, cut from its annotated onset, held for a random time
//! ([`MixSettings::min_held`]..[`MixSettings::max_held`], at most as long as
//! it was recorded) and then damped by an exponential fade (50 ms time
//! constant). A pitch is not struck again while it still sounds. The mix's
//! ground truth is exact: onsets, offsets (onset + held time) and the
//! recordings' velocities.
//!
//! Templates learned from a SoundFont (`learn --soundfont`) are calibrated
//! on the same placements played through the SoundFont's preset at MAPS's M
//! and F velocities ([`soundfont_mix`], [`calibrate_on_soundfont`]): there
//! the keys are released and the preset's own release follows.
//!
//! # What is chosen on it ([`calibrate`])
//!
//! With the dictionary's own transcriber (default settings):
//!
//! 1. δ: the middle of the values of the grid 0.01:0.01:0.40 whose onset
//!    F-measure on the mix is within [`PLATEAU`] of the best
//!    ([`plateau_centre`]);
//! 2. the offset fraction of [`OffsetRule::Decay`]: the value of
//!    [`OFFSET_FRACTIONS`] with the best onset + offset F-measure at that δ;
//! 3. the velocity fit `v = a + b · ln p` of [`VelocityRule::LogPeak`]: least
//!    squares of the reference velocity on the log raw peak activation of the
//!    onset-matched notes.
//!
//! The velocity fit reads raw activations, so it holds for recordings made
//! at the isolated notes' level (true of MAPS and of the dev data, where a
//! piano's notes and pieces share one gain); δ and the offset fraction do not
//! depend on the level.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::audio::{load_audio, DecodeOptions};
use crate::evaluation::{match_notes, precision_recall_f1_overlap, MatchParams};
use crate::notes::{read_notes, Note};
use crate::soundfont::{IsolatedNoteTiming, LoadedSoundFont, Preset};
use crate::templates::{is_audio_file, parse_maps_note_name};
use crate::transcription::{OffsetRule, OnsetDetector, Transcriber, VelocityRule};
use crate::{Error, ErrorKind, Result};

/// The offset fractions tried by [`calibrate`].
pub const OFFSET_FRACTIONS: [f64; 9] = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5];

/// What [`calibrate`] chose, stored in the dictionary file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// δ of eq. 10 on max-scaled activations.
    pub threshold: f64,
    /// The fraction of [`OffsetRule::Decay`].
    pub offset_fraction: f64,
    /// `a` of the velocity fit `a + b · ln(raw peak)`.
    pub velocity_intercept: f64,
    /// `b` of the velocity fit.
    pub velocity_slope: f64,
    /// Seconds of the calibration mix.
    pub mix_seconds: f64,
    /// Notes in the calibration mix.
    pub mix_notes: usize,
    /// The mix's seed.
    pub seed: u64,
    /// Onset F-measure on the mix at the chosen δ.
    pub mix_onset_f: f64,
    /// Onset + offset F-measure on the mix at the chosen δ and fraction.
    pub mix_onset_offset_f: f64,
    /// Mean absolute velocity error (MIDI units) of the mix's onset-matched
    /// notes after the fit.
    pub mix_velocity_mae: f64,
}

impl Calibration {
    /// The onset detector this calibration describes (max-scaled
    /// activations, 21-frame moving average).
    pub fn detector(&self) -> OnsetDetector {
        OnsetDetector {
            threshold: self.threshold,
            offsets: OffsetRule::Decay { fraction: self.offset_fraction },
            velocity: VelocityRule::LogPeak { intercept: self.velocity_intercept, slope: self.velocity_slope },
            ..OnsetDetector::default()
        }
    }

    /// As the dictionary file's `calibration` metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers")
    }

    /// Parses the `calibration` metadata, checking that the rule's numbers
    /// are usable.
    pub fn from_json(json: &str) -> Result<Calibration> {
        let bad = |why: String| Error::new(ErrorKind::Templates, format!("metadata `calibration`: {why}"));
        let c: Calibration = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let finite = [c.threshold, c.offset_fraction, c.velocity_intercept, c.velocity_slope];
        if finite.iter().any(|x| !x.is_finite()) || c.threshold < 0.0 || !(0.0..1.0).contains(&c.offset_fraction) {
            return Err(bad("threshold and velocity fit must be finite, the offset fraction in [0, 1)".into()));
        }
        Ok(c)
    }
}

/// One isolated-note recording with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationNote {
    /// The audio file.
    pub path: PathBuf,
    /// Its note: onset and offset (key release) in the file, pitch, velocity.
    pub note: Note,
}

/// The isolated notes of a MAPS `ISOL/NO` folder with sustain `sustain` (any
/// intensity), each with the one note of its ground truth: the `.mid` beside
/// it (onset, release and velocity), else the `.txt` (no velocity: such notes
/// are skipped, since the velocity fit needs them). Files whose ground truth
/// is missing or holds other than one note are skipped. Sorted by file name.
pub fn discover_calibration_notes(dir: &Path, sustain: u8) -> Result<Vec<CalibrationNote>> {
    let files = crate::files::sorted_entries(dir, is_audio_file)?;
    let mut found = Vec::new();
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(parse_maps_note_name) else {
            continue;
        };
        if name.sustain != sustain {
            continue;
        }
        let midi = path.with_extension("mid");
        if !midi.is_file() {
            continue;
        }
        let notes = read_notes(&midi)?;
        if let [note] = notes.as_slice() {
            if note.pitch == name.pitch && note.offset > note.onset {
                found.push(CalibrationNote { path: path.clone(), note: *note });
            }
        }
    }
    if found.is_empty() {
        return Err(Error::invalid_input(
            "no isolated notes with a one-note .mid ground truth beside them to calibrate on",
        )
        .with_path(dir));
    }
    Ok(found)
}

/// How the calibration mix is drawn (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixSettings {
    /// Length in seconds. Default 60.
    pub seconds: f64,
    /// Mean chords per second. Default 4.
    pub events_per_second: f64,
    /// Mean MIDI pitch. Default 64.
    pub pitch_mean: f64,
    /// Standard deviation of the pitch, semitones. Default 12.
    pub pitch_sd: f64,
    /// Shortest held time, seconds. Default 0.1.
    pub min_held: f64,
    /// Longest held time, seconds. Default 1.5.
    pub max_held: f64,
    /// Seed of the generator. Default 7.
    pub seed: u64,
}

impl Default for MixSettings {
    fn default() -> Self {
        MixSettings {
            seconds: 60.0,
            events_per_second: 4.0,
            pitch_mean: 64.0,
            pitch_sd: 12.0,
            min_held: 0.1,
            max_held: 1.5,
            seed: 7,
        }
    }
}

/// SplitMix64: a small, seeded generator (the mix must be the same on every
/// machine and release).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
}

/// A synthetic piece made of isolated notes, and its ground truth.
#[derive(Debug, Clone)]
pub struct CalibrationMix {
    /// Mono samples at the dictionary's rate.
    pub samples: Vec<f32>,
    /// The notes, sorted by onset then pitch.
    pub notes: Vec<Note>,
}

/// One placed note: which recording, when, for how long.
struct Placement {
    recording: usize,
    onset: f64,
    held: f64,
}

/// The placements of a mix of `notes` (recordings' notes: pitch, velocity,
/// and the key held from `onset` to `offset`; see the [module docs](self)).
fn draw_placements(notes: &[Note], settings: &MixSettings) -> Vec<Placement> {
    let mut by_pitch: HashMap<u8, Vec<usize>> = HashMap::new();
    for (i, n) in notes.iter().enumerate() {
        by_pitch.entry(n.pitch).or_default().push(i);
    }
    let (lowest, highest) = (notes.iter().map(|n| n.pitch).min(), notes.iter().map(|n| n.pitch).max());
    let (Some(lowest), Some(highest)) = (lowest, highest) else { return Vec::new() };
    let mut rng = SplitMix(settings.seed);
    let mut busy_until: HashMap<u8, f64> = HashMap::new();
    let mut placed = Vec::new();
    let mut t = 0.5;
    let last_onset = settings.seconds - settings.max_held - 0.5;
    while t < last_onset {
        let chord = match rng.uniform() {
            u if u < 0.5 => 1,
            u if u < 0.8 => 2,
            _ => 3,
        };
        for _ in 0..chord {
            for _attempt in 0..10 {
                let pitch = (settings.pitch_mean + settings.pitch_sd * rng.normal())
                    .round()
                    .clamp(f64::from(lowest), f64::from(highest)) as u8;
                let Some(choices) = by_pitch.get(&pitch) else { continue };
                if busy_until.get(&pitch).is_some_and(|&b| b > t) {
                    continue;
                }
                let recording = choices[(rng.uniform() * choices.len() as f64) as usize % choices.len()];
                let recorded = notes[recording].offset - notes[recording].onset;
                let held = (settings.min_held + (settings.max_held - settings.min_held) * rng.uniform()).min(recorded);
                busy_until.insert(pitch, t + held + 0.3);
                placed.push(Placement { recording, onset: t, held });
                break;
            }
        }
        t += -rng.uniform().max(1e-12).ln() / settings.events_per_second.max(1e-6) + 0.03;
    }
    placed
}

/// Seconds of damping after a placed note's held time, and its time constant.
const FADE_SECONDS: f64 = 0.4;
const FADE_TIME_CONSTANT: f64 = 0.05;

/// Builds the calibration mix at `sample_rate` from `notes` (only the
/// recordings it uses are decoded, in parallel).
pub fn synthetic_mix(notes: &[CalibrationNote], sample_rate: u32, settings: &MixSettings) -> Result<CalibrationMix> {
    let placements = draw_placements(&notes.iter().map(|n| n.note).collect::<Vec<_>>(), settings);
    let mut used: Vec<usize> = placements.iter().map(|p| p.recording).collect();
    used.sort_unstable();
    used.dedup();
    let decoded: Vec<(usize, Vec<f32>)> = used
        .par_iter()
        .map(|&i| Ok((i, load_audio(&notes[i].path, &DecodeOptions::default(), sample_rate)?.samples)))
        .collect::<Result<_>>()?;
    let audio: HashMap<usize, Vec<f32>> = decoded.into_iter().collect();
    let rate = f64::from(sample_rate);
    let mut samples = vec![0f32; (settings.seconds * rate).round() as usize];
    let mut truth = Vec::with_capacity(placements.len());
    for p in &placements {
        let n = &notes[p.recording];
        let recording = &audio[&p.recording];
        let from = (n.note.onset * rate).round() as usize;
        let held = (p.held * rate).round() as usize;
        let fade = (FADE_SECONDS * rate).round() as usize;
        let at = (p.onset * rate).round() as usize;
        for k in 0..held + fade {
            let (Some(&x), Some(out)) = (recording.get(from + k), samples.get_mut(at + k)) else { break };
            let gain = if k < held { 1.0 } else { (-((k - held) as f64 / rate) / FADE_TIME_CONSTANT).exp() };
            *out += x * gain as f32;
        }
        let onset = at as f64 / rate;
        truth.push(Note { onset, offset: onset + held as f64 / rate, pitch: n.note.pitch, velocity: n.note.velocity });
    }
    truth.sort_by(|a, b| a.onset.total_cmp(&b.onset).then(a.pitch.cmp(&b.pitch)));
    Ok(CalibrationMix { samples, notes: truth })
}

/// The velocities of a SoundFont's calibration notes: MAPS's M and F (the
/// median intensity and louder, as [`calibrate_on_folder`] keeps).
pub const SOUNDFONT_VELOCITIES: [u8; 2] = [70, 100];

/// The calibration mix of a SoundFont's preset: the placements of
/// [`synthetic_mix`], drawn from `pitches` at [`SOUNDFONT_VELOCITIES`] (each
/// candidate held as long as MAPS's isolated notes, 2 s), played as one
/// performance through the synthesizer ([`LoadedSoundFont::render`]): each
/// key is released at the end of its held time and the preset's own release
/// follows (no synthetic fade). The ground truth is the performance.
pub fn soundfont_mix(
    sound_font: &LoadedSoundFont,
    preset: Preset,
    pitches: &[u8],
    sample_rate: u32,
    settings: &MixSettings,
) -> Result<CalibrationMix> {
    let timing = IsolatedNoteTiming::default();
    let candidates: Vec<Note> = pitches
        .iter()
        .flat_map(|&pitch| {
            SOUNDFONT_VELOCITIES.iter().map(move |&velocity| Note {
                onset: timing.silence,
                offset: timing.silence + timing.hold,
                pitch,
                velocity,
            })
        })
        .collect();
    let mut notes: Vec<Note> = draw_placements(&candidates, settings)
        .iter()
        .map(|p| {
            let c = &candidates[p.recording];
            // On the sample grid, as the recordings' mix is.
            let rate = f64::from(sample_rate);
            let onset = (p.onset * rate).round() / rate;
            Note { onset, offset: onset + (p.held * rate).round() / rate, ..*c }
        })
        .collect();
    notes.sort_by(|a, b| a.onset.total_cmp(&b.onset).then(a.pitch.cmp(&b.pitch)));
    let samples = sound_font.render(preset, &notes, sample_rate, settings.seconds)?;
    Ok(CalibrationMix { samples, notes })
}

/// Calibrates `transcriber`'s dictionary on a SoundFont preset's
/// [`soundfont_mix`] over `pitches`, with the default mix settings.
pub fn calibrate_on_soundfont(
    transcriber: &Transcriber,
    sound_font: &LoadedSoundFont,
    preset: Preset,
    pitches: &[u8],
) -> Result<Calibration> {
    let settings = MixSettings::default();
    let rate = transcriber.dictionary().params.stft.sample_rate;
    let mix = soundfont_mix(sound_font, preset, pitches, rate, &settings)?;
    calibrate(transcriber, &mix, &settings).map_err(|e| e.with_path(&sound_font.path))
}

/// The δ grid of [`calibrate`]: 0.01:0.01:0.40.
pub fn threshold_grid() -> Vec<f64> {
    (1..=40).map(|i| f64::from(i) / 100.0).collect()
}

/// How far below the mix's best onset F a δ may score and still count as
/// one of the best (see [`plateau_centre`]).
pub const PLATEAU: f64 = 0.01;

/// The index of the middle of the δ values whose score is within `width`
/// of the best (the lower middle for an even count): on a mix, F is flat
/// near its top, and the middle of the flat part transfers better than its
/// left edge.
pub fn plateau_centre(scores: &[f64], width: f64) -> usize {
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let near: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] >= top - width - 1e-12).collect();
    near.get(near.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// Least squares `y ≈ a + b · x`; `(mean y, 0)` when `x` does not vary.
pub fn fit_line(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    if sxx <= 1e-12 * n {
        return (my, 0.0);
    }
    let b = sxy / sxx;
    (my - b * mx, b)
}

/// Chooses δ, the offset fraction and the velocity fit on `mix`, transcribed
/// by `transcriber` (see the [module docs](self)).
pub fn calibrate(transcriber: &Transcriber, mix: &CalibrationMix, settings: &MixSettings) -> Result<Calibration> {
    let activations = transcriber.activations(&mix.samples, 0.0)?;
    let reference = &mix.notes;
    let base = OnsetDetector::default();
    let onset_f = |d: &OnsetDetector| {
        precision_recall_f1_overlap(reference, &d.detect(&activations), &MatchParams::onset_only()).f_measure
    };
    let grid = threshold_grid();
    let scores: Vec<f64> = grid.iter().map(|&threshold| onset_f(&OnsetDetector { threshold, ..base })).collect();
    let best = plateau_centre(&scores, PLATEAU);
    let threshold = grid[best];
    let offset_f = |fraction: f64| {
        let d = OnsetDetector { threshold, offsets: OffsetRule::Decay { fraction }, ..base };
        precision_recall_f1_overlap(reference, &d.detect(&activations), &MatchParams::onset_offset()).f_measure
    };
    let offset_scores: Vec<f64> = OFFSET_FRACTIONS.iter().map(|&f| offset_f(f)).collect();
    let best_fraction =
        (0..OFFSET_FRACTIONS.len()).fold(0, |b, i| if offset_scores[i] > offset_scores[b] + 1e-12 { i } else { b });
    let detector = OnsetDetector { threshold, ..base };
    let (estimate, peaks): (Vec<Note>, Vec<f64>) = detector.detect_with_peaks(&activations).into_iter().unzip();
    let matching = match_notes(reference, &estimate, &MatchParams::onset_only());
    let x: Vec<f64> = matching.iter().map(|&(_, j)| peaks[j].max(1e-300).ln()).collect();
    let y: Vec<f64> = matching.iter().map(|&(i, _)| f64::from(reference[i].velocity)).collect();
    let (intercept, slope) = fit_line(&x, &y);
    let rule = VelocityRule::LogPeak { intercept, slope };
    let mae = matching
        .iter()
        .map(|&(i, j)| (f64::from(rule.velocity(peaks[j], 0.0)) - f64::from(reference[i].velocity)).abs())
        .sum::<f64>()
        / matching.len().max(1) as f64;
    Ok(Calibration {
        threshold,
        offset_fraction: OFFSET_FRACTIONS[best_fraction],
        velocity_intercept: intercept,
        velocity_slope: slope,
        mix_seconds: settings.seconds,
        mix_notes: reference.len(),
        seed: settings.seed,
        mix_onset_f: scores[best],
        mix_onset_offset_f: offset_scores[best_fraction],
        mix_velocity_mae: mae,
    })
}

/// Bumped whenever [`calibrate`] or the mix change in a way their settings
/// do not show (part of [`procedure_key`]).
const PROCEDURE_REVISION: u32 = 3;

/// Everything that shapes a calibration besides the isolated notes and the
/// templates, as text (for cache keys): the mix's settings, the δ grid, the
/// offset fractions, the plateau width, the transcriber's default regression
/// and a revision of the procedure.
pub fn procedure_key() -> String {
    format!(
        "revision={PROCEDURE_REVISION} mix={:?} fade={FADE_SECONDS}/{FADE_TIME_CONSTANT} grid={:?} fractions={:?} \
         plateau={PLATEAU} regression={}",
        MixSettings::default(),
        threshold_grid(),
        OFFSET_FRACTIONS,
        crate::factorization::ConvolutiveRegression::default().settings_key()
    )
}

/// Calibrates `transcriber`'s dictionary on the isolated notes of the MAPS
/// folder `dir` (sustain `sustain`, the median velocity and louder) with the
/// default mix.
pub fn calibrate_on_folder(transcriber: &Transcriber, dir: &Path, sustain: u8) -> Result<Calibration> {
    let mut notes = discover_calibration_notes(dir, sustain)?;
    // The median velocity and louder: with the softest recordings in it (P, velocity 40 of
    // MAPS) the mix's best δ is 0.01-0.04 below the songs' (docs/results/dev/decision-offsets-velocity.md).
    let mut velocities: Vec<u8> = notes.iter().map(|n| n.note.velocity).collect();
    velocities.sort_unstable();
    let median = velocities[(velocities.len() - 1) / 2];
    notes.retain(|n| n.note.velocity >= median);
    let settings = MixSettings::default();
    let mix = synthetic_mix(&notes, transcriber.dictionary().params.stft.sample_rate, &settings)?;
    calibrate(transcriber, &mix, &settings).map_err(|e| e.with_path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fit_by_least_squares() {
        let (a, b) = fit_line(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]);
        assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
        assert_eq!(fit_line(&[2.0, 2.0], &[40.0, 100.0]), (70.0, 0.0));
    }

    #[test]
    fn calibration_json_round_trips_and_is_checked() {
        let c = Calibration {
            threshold: 0.1,
            offset_fraction: 0.2,
            velocity_intercept: 50.0,
            velocity_slope: 10.0,
            mix_seconds: 60.0,
            mix_notes: 300,
            seed: 7,
            mix_onset_f: 0.9,
            mix_onset_offset_f: 0.6,
            mix_velocity_mae: 5.0,
        };
        assert_eq!(Calibration::from_json(&c.to_json()).unwrap(), c);
        let bad = Calibration { offset_fraction: 1.5, ..c.clone() };
        let err = Calibration::from_json(&bad.to_json()).unwrap_err().to_string();
        assert!(err.contains("calibration"), "{err}");
        assert!(Calibration::from_json("{}").is_err());
        let d = c.detector();
        assert_eq!(d.threshold, 0.1);
        assert_eq!(d.offsets, OffsetRule::Decay { fraction: 0.2 });
    }

    #[test]
    fn placements_respect_the_settings() {
        let notes: Vec<CalibrationNote> = (40..=90)
            .map(|p| CalibrationNote {
                path: PathBuf::from(format!("{p}.wav")),
                note: Note { onset: 0.5, offset: 2.5, pitch: p, velocity: 70 },
            })
            .collect();
        let s = MixSettings::default();
        let notes: Vec<Note> = notes.iter().map(|n| n.note).collect();
        let placed = draw_placements(&notes, &s);
        // About 4 chords of 1.7 notes a second over 58 s.
        assert!(placed.len() > 250 && placed.len() < 550, "{}", placed.len());
        assert!(placed.iter().all(|p| p.held >= s.min_held && p.held <= s.max_held));
        assert!(placed.iter().all(|p| p.onset + p.held + FADE_SECONDS <= s.seconds));
        // A pitch is never struck while it sounds.
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                if notes[a.recording].pitch == notes[b.recording].pitch {
                    assert!(b.onset >= a.onset + a.held + 0.3 - 1e-9);
                }
            }
        }
        // The same seed gives the same mix.
        let again = draw_placements(&notes, &s);
        assert!(placed.iter().zip(&again).all(|(a, b)| a.recording == b.recording && a.onset == b.onset));
    }
}
