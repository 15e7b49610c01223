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
//! intensity, cut from its annotated onset and held for a random time,
//! uniform in [`MixSettings::min_held`]..[`MixSettings::max_held`]
//! ([`HeldTimes`]; at most as long as it was recorded), then released: the
//! recording's own release after its key-up, scaled to the level where the
//! held part ends ([`MixRelease::Recorded`]). A pitch is not struck again
//! within 0.3 s of its release. The mix's ground truth is exact: onsets,
//! offsets (onset + held time) and the recordings' velocities.
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
//! 1. δ, relative to the mean of the pitches' peak activations
//!    ([`CALIBRATED_SCALE`], [`ActivationScale::MeanPitchPeak`]): the middle
//!    of the values of the grid 0.01:0.01:0.60 whose onset F-measure on the
//!    mix is within [`PLATEAU`] of the best ([`plateau_centre`]). Relative to
//!    the loudest activation (the paper's scaling, and the first version of
//!    this calibration) the mix's δ was 0.02-0.03 above the songs' best on
//!    every dev piano; relative to a typical note's peak it lands within 0.04
//!    of it (docs/results/dev/decision-offsets-velocity.md);
//! 2. the offset rule ([`OffsetRule::Decay`]): its floor fixed at a
//!    fraction of the note's peak, or decaying at the pitch's free decay
//!    rate ([`fit_decay_rate`], measured on the mix's held notes); a bridge
//!    of 1 frame or half a template (τ/2: a convolutive activation may be
//!    sparse); the fraction among [`OFFSET_FRACTIONS`]: the combination with
//!    the best onset + offset F-measure on the mix at that δ;
//! 3. the velocity fit `v = a + b · ln p` of [`VelocityRule::LogPeak`]: least
//!    squares of the reference velocity on the log raw peak activation of the
//!    onset-matched notes.
//!
//! The velocity fit reads raw activations, so it holds for recordings made
//! at the isolated notes' level (true of MAPS and of the dev data, where a
//! piano's notes and pieces share one gain); δ and the offset rule do not
//! depend on the level.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::audio::{load_audio, DecodeOptions};
pub use crate::decision::Calibration;
use crate::evaluation::{match_notes, precision_recall_f1_overlap, MatchParams};
use crate::notes::{read_notes, Note};
use crate::soundfont::{IsolatedNoteTiming, LoadedSoundFont, Preset};
use crate::templates::{is_audio_file, parse_maps_note_name};
use crate::transcription::{
    ActivationScale, Activations, DecayRate, OffsetRule, OnsetDetector, Transcriber, VelocityRule,
    ACTIVE_PITCH_FRACTION,
};
use crate::{Error, Result};

/// The offset fractions tried by [`calibrate`].
pub const OFFSET_FRACTIONS: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3];

/// The activation scaling of calibrated rules: δ relative to a typical
/// note's peak, which transfers from the mix to songs (see the module docs).
pub const CALIBRATED_SCALE: ActivationScale = ActivationScale::MeanPitchPeak;

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
    /// How held times are drawn between the two. Default
    /// [`HeldTimes::Uniform`] (log-uniform gave the same onset F and 0.2
    /// points less onset + offset F on the dev songs, on average).
    pub held_times: HeldTimes,
    /// Seed of the generator. Default 7.
    pub seed: u64,
    /// How each recording ends after its held time. Default
    /// [`MixRelease::Recorded`].
    pub release: MixRelease,
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
            held_times: HeldTimes::Uniform,
            seed: 7,
            release: MixRelease::Recorded,
        }
    }
}

/// The distribution of the mix's held times ([`MixSettings::min_held`] to
/// [`MixSettings::max_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldTimes {
    /// Uniform in seconds.
    Uniform,
    /// Uniform in log seconds (scale-free: as many notes between 0.1 and
    /// 0.2 s as between 0.5 and 1 s).
    LogUniform,
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
                let (lo, hi) = (settings.min_held, settings.max_held);
                let held = match settings.held_times {
                    HeldTimes::Uniform => lo + (hi - lo) * rng.uniform(),
                    HeldTimes::LogUniform => lo * (hi / lo).powf(rng.uniform()),
                }
                .min(recorded);
                busy_until.insert(pitch, t + held + 0.3);
                placed.push(Placement { recording, onset: t, held });
                break;
            }
        }
        t += -rng.uniform().max(1e-12).ln() / settings.events_per_second.max(1e-6) + 0.03;
    }
    placed
}

/// How a placed recording ends after its held time (see [`synthetic_mix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixRelease {
    /// Damped by an exponential fade ([`FADE_TIME_CONSTANT`]).
    Fade,
    /// The recording's own release (its samples after the key-up), scaled
    /// to the level at the end of the held time.
    Recorded,
}

/// Seconds of damping after a placed note's held time, and its time
/// constant ([`MixRelease::Fade`]).
pub const FADE_SECONDS: f64 = 0.4;
/// See [`FADE_SECONDS`].
pub const FADE_TIME_CONSTANT: f64 = 0.05;
/// Longest recorded release kept after a held time ([`MixRelease::Recorded`]).
pub const RELEASE_SECONDS: f64 = 1.0;
/// The cross-fade from the held part into the recorded release, and the RMS
/// window that matches their levels ([`MixRelease::Recorded`]).
const SPLICE_SECONDS: f64 = 0.005;
const LEVEL_WINDOW_SECONDS: f64 = 0.02;

/// The RMS of the `window` samples of `x` centred at `at` (0 outside `x`).
fn rms_at(x: &[f32], at: usize, window: usize) -> f64 {
    let (lo, hi) = (at.saturating_sub(window / 2).min(x.len()), (at + window / 2).min(x.len()));
    let n = (hi - lo).max(1) as f64;
    (x[lo..hi].iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n).sqrt()
}

/// The samples of one placed note of `recording` (struck at sample `from`,
/// key released at `key_up`) held `held` samples, then released as
/// `release` says.
fn placed_note(recording: &[f32], from: usize, key_up: usize, held: usize, release: MixRelease, rate: f64) -> Vec<f32> {
    let held_part = recording.get(from..(from + held).min(recording.len())).unwrap_or(&[]);
    let mut out = held_part.to_vec();
    match release {
        MixRelease::Fade => {
            let fade = (FADE_SECONDS * rate).round() as usize;
            let tail = recording.get(from + held..(from + held + fade).min(recording.len())).unwrap_or(&[]);
            out.extend(
                tail.iter().enumerate().map(|(k, &x)| x * (-(k as f64 / rate) / FADE_TIME_CONSTANT).exp() as f32),
            );
        }
        MixRelease::Recorded => {
            let window = (LEVEL_WINDOW_SECONDS * rate).round() as usize;
            let at_key_up = rms_at(recording, key_up, window);
            let gain = if at_key_up > 0.0 { rms_at(recording, from + held, window) / at_key_up } else { 0.0 };
            let length = (RELEASE_SECONDS * rate).round() as usize;
            let tail = recording.get(key_up..(key_up + length).min(recording.len())).unwrap_or(&[]);
            let splice = ((SPLICE_SECONDS * rate).round() as usize).max(1);
            for (k, &x) in tail.iter().enumerate() {
                let released = x * gain as f32;
                if k < splice {
                    // Cross-fade from the held note's own continuation into the release.
                    let w = (k as f32 + 0.5) / splice as f32;
                    let own = recording.get(from + held + k).copied().unwrap_or(0.0);
                    out.push(own * (1.0 - w) + released * w);
                } else {
                    out.push(released);
                }
            }
        }
    }
    out
}

/// Builds the calibration mix at `sample_rate` from `notes` (only the
/// recordings it uses are decoded, in parallel). Each placed note is its
/// recording from the annotated onset for the held time, then its release
/// ([`MixSettings::release`]): a synthetic fade, or the recording's own
/// release after its key-up, scaled to the level at the end of the held
/// time (the damper's decay from there; a piano's release decays at a rate
/// that does not depend on the level) and joined by a 5 ms cross-fade.
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
        let from = (n.note.onset * rate).round() as usize;
        let key_up = (n.note.offset * rate).round() as usize;
        let held = (p.held * rate).round() as usize;
        let at = (p.onset * rate).round() as usize;
        let note = placed_note(&audio[&p.recording], from, key_up, held, settings.release, rate);
        for (out, x) in samples.iter_mut().skip(at).zip(note) {
            *out += x;
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

/// The δ grid of [`calibrate`]: 0.01:0.01:0.60 (δ relative to the mean
/// pitch peak, [`CALIBRATED_SCALE`]).
pub fn threshold_grid() -> Vec<f64> {
    (1..=60).map(|i| f64::from(i) / 100.0).collect()
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

/// Reference notes held at least this long (seconds) give a free decay rate
/// ([`fit_decay_rate`]).
pub const MIN_HELD_FOR_DECAY: f64 = 0.6;

/// The free decay rate ([`DecayRate`]) of held notes in `activations`: for
/// each note of `reference` held at least [`MIN_HELD_FOR_DECAY`] whose
/// onset `estimate` found (onset-only matching), the least-squares slope of
/// `ln h` of its pitch over the frames from 0.1 s after its onset to 0.05 s
/// before its key-up (frames where `h > 0`, at least 10 of them) gives
/// `λ = −slope` per second; then `ln λ` is fitted on the pitch by least
/// squares. `None` with fewer than 3 decaying notes.
pub fn fit_decay_rate(activations: &Activations, reference: &[Note], estimate: &[Note]) -> Option<DecayRate> {
    let hop = activations.hop_seconds;
    let frame = |t: f64| ((t - activations.start_seconds) / hop).round().max(0.0) as usize;
    let mut pitches = Vec::new();
    let mut log_rates = Vec::new();
    for (i, _) in match_notes(reference, estimate, &MatchParams::onset_only()) {
        let n = &reference[i];
        let Some(q) = activations.pitches.iter().position(|&p| p == n.pitch) else { continue };
        if n.offset - n.onset < MIN_HELD_FOR_DECAY {
            continue;
        }
        let frames = frame(n.onset + 0.1)..frame(n.offset - 0.05).min(activations.values.cols);
        let (t, log_h): (Vec<f64>, Vec<f64>) = frames
            .filter_map(|f| {
                let h = activations.values.get(q, f);
                (h > 0.0).then(|| (f as f64 * hop, h.ln()))
            })
            .unzip();
        if t.len() < 10 {
            continue;
        }
        let rate = -fit_line(&t, &log_h).1;
        if rate > 1e-3 {
            pitches.push(f64::from(n.pitch) - 60.0);
            log_rates.push(rate.ln());
        }
    }
    (pitches.len() >= 3).then(|| {
        let (intercept, slope) = fit_line(&pitches, &log_rates);
        DecayRate { intercept, slope }
    })
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

/// Chooses δ, the offset rule and the velocity fit on `mix`, transcribed
/// by `transcriber` (see the [module docs](self)).
pub fn calibrate(transcriber: &Transcriber, mix: &CalibrationMix, settings: &MixSettings) -> Result<Calibration> {
    let activations = transcriber.activations(&mix.samples, 0.0)?;
    let reference = &mix.notes;
    let base = OnsetDetector { scale: CALIBRATED_SCALE, ..OnsetDetector::default() };
    let f = |d: &OnsetDetector, params: &MatchParams| {
        precision_recall_f1_overlap(reference, &d.detect(&activations), params).f_measure
    };
    let grid = threshold_grid();
    let scores: Vec<f64> =
        grid.iter().map(|&threshold| f(&OnsetDetector { threshold, ..base }, &MatchParams::onset_only())).collect();
    let best = plateau_centre(&scores, PLATEAU);
    let threshold = grid[best];
    let detector = OnsetDetector { threshold, ..base };
    let (estimate, peaks): (Vec<Note>, Vec<f64>) = detector.detect_with_peaks(&activations).into_iter().unzip();
    // The offset rule: the best on the mix of the fixed and the free-decay floor, without and with a bridge
    // of half a template, at each fraction (the first of equals, in this order).
    let rate = fit_decay_rate(&activations, reference, &estimate);
    let bridges = [1, (transcriber.dictionary().tau() / 2).max(1)];
    let mut offsets = (OffsetRule::decay(OFFSET_FRACTIONS[0]), f64::NEG_INFINITY);
    for bridge in bridges {
        for rate in [None, rate] {
            for fraction in OFFSET_FRACTIONS {
                let rule = OffsetRule::Decay { fraction, rate, bridge };
                let score = f(&OnsetDetector { offsets: rule, ..detector }, &MatchParams::onset_offset());
                if score > offsets.1 + 1e-12 {
                    offsets = (rule, score);
                }
            }
        }
    }
    let OffsetRule::Decay { fraction, rate, bridge } = offsets.0 else { unreachable!("a decay rule") };
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
        scale: CALIBRATED_SCALE,
        offset_fraction: fraction,
        offset_decay_rate: rate,
        offset_bridge: bridge,
        velocity_intercept: intercept,
        velocity_slope: slope,
        mix_seconds: settings.seconds,
        mix_notes: reference.len(),
        seed: settings.seed,
        mix_onset_f: scores[best],
        mix_onset_offset_f: offsets.1,
        mix_velocity_mae: mae,
    })
}

/// Bumped whenever [`calibrate`] or the mix change in a way their settings
/// do not show (part of [`procedure_key`]).
const PROCEDURE_REVISION: u32 = 4;

/// Everything that shapes a calibration besides the isolated notes and the
/// templates, as text (for cache keys): the mix's settings, the δ grid, the
/// offset fractions, the plateau width, the transcriber's default regression
/// (on all bins: [`calibration_transcriber`]) and a revision of the
/// procedure.
pub fn procedure_key() -> String {
    format!(
        "revision={PROCEDURE_REVISION} scale={CALIBRATED_SCALE:?}/{ACTIVE_PITCH_FRACTION} \
         min_held_for_decay={MIN_HELD_FOR_DECAY} mix={:?} fade={FADE_SECONDS}/{FADE_TIME_CONSTANT} release={RELEASE_SECONDS}/{SPLICE_SECONDS}/{LEVEL_WINDOW_SECONDS} grid={:?} fractions={:?} \
         plateau={PLATEAU} regression={}",
        MixSettings::default(),
        threshold_grid(),
        OFFSET_FRACTIONS,
        crate::factorization::ConvolutiveRegression::default().settings_key()
    )
}

/// The transcriber a dictionary is calibrated with: CNMF's defaults, but on
/// all frequency bins, whatever [`crate::transcription::DEFAULT_MAX_FREQUENCY`]
/// says. Measured on the 36 dev songs (BENCHMARKS.md, "Frequency range"):
/// transcribing at the default cut with the rule calibrated on all bins keeps
/// the rule's onset F within 0.14 points and its onset + offset F within 0.26
/// of all bins; calibrating at the cut moves δ by 0.01 and, on Salamander,
/// picks another offset floor that costs 0.44 onset + offset points.
pub fn calibration_transcriber(dictionary: crate::templates::TemplateDictionary) -> Result<Transcriber> {
    let mut transcriber = Transcriber::new(dictionary)?;
    transcriber.set_max_frequency(None)?;
    Ok(transcriber)
}

/// Calibrates `transcriber`'s dictionary on the isolated notes of the MAPS
/// folder `dir` (sustain `sustain`, the median velocity and louder) with the
/// default mix.
pub fn calibrate_on_folder(transcriber: &Transcriber, dir: &Path, sustain: u8) -> Result<Calibration> {
    calibrate_on_folder_with(transcriber, dir, sustain, &MixSettings::default())
}

/// [`calibrate_on_folder`] with another mix.
pub fn calibrate_on_folder_with(
    transcriber: &Transcriber,
    dir: &Path,
    sustain: u8,
    settings: &MixSettings,
) -> Result<Calibration> {
    let mut notes = discover_calibration_notes(dir, sustain)?;
    // The median velocity and louder: with the softest recordings in it (P, velocity 40 of
    // MAPS) the mix's best δ is 0.01-0.04 below the songs' (docs/results/dev/decision-offsets-velocity.md).
    let mut velocities: Vec<u8> = notes.iter().map(|n| n.note.velocity).collect();
    velocities.sort_unstable();
    let median = velocities[(velocities.len() - 1) / 2];
    notes.retain(|n| n.note.velocity >= median);
    let mix = synthetic_mix(&notes, transcriber.dictionary().params.stft.sample_rate, settings)?;
    calibrate(transcriber, &mix, settings).map_err(|e| e.with_path(dir))
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
        let rate = DecayRate { intercept: 0.8, slope: 0.015 };
        let c = Calibration {
            threshold: 0.1,
            scale: ActivationScale::MeanPitchPeak,
            offset_fraction: 0.2,
            offset_decay_rate: Some(rate),
            offset_bridge: 5,
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
        let bad = Calibration { offset_bridge: 0, ..c.clone() };
        assert!(Calibration::from_json(&bad.to_json()).is_err());
        assert!(Calibration::from_json("{}").is_err());
        let d = OnsetDetector::calibrated(&c);
        assert_eq!((d.threshold, d.scale), (0.1, ActivationScale::MeanPitchPeak));
        assert_eq!(d.offsets, OffsetRule::Decay { fraction: 0.2, rate: Some(rate), bridge: 5 });
        // The first calibrations' files (no scale, decay rate or bridge): max-scaled, a fixed floor.
        let first = r#"{"threshold":0.12,"offset_fraction":0.002,"velocity_intercept":90.2,"velocity_slope":28.3,
            "mix_seconds":60.0,"mix_notes":335,"seed":7,"mix_onset_f":0.99,"mix_onset_offset_f":0.68,"mix_velocity_mae":6.0}"#;
        let d = OnsetDetector::calibrated(&Calibration::from_json(first).unwrap());
        assert_eq!((d.threshold, d.scale, d.offsets), (0.12, ActivationScale::Max, OffsetRule::decay(0.002)));
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
        // Log-uniform held times have their median near the geometric mean of 0.1 and 1.5 s (0.39 s),
        // uniform ones near the middle (0.8 s).
        let median = |placed: &[Placement]| {
            let mut held: Vec<f64> = placed.iter().map(|p| p.held).collect();
            held.sort_by(f64::total_cmp);
            held[held.len() / 2]
        };
        assert_eq!(s.held_times, HeldTimes::Uniform);
        assert!((0.7..0.9).contains(&median(&placed)), "{}", median(&placed));
        let log_uniform = draw_placements(&notes, &MixSettings { held_times: HeldTimes::LogUniform, ..s });
        assert!((0.3..0.5).contains(&median(&log_uniform)), "{}", median(&log_uniform));
    }

    #[test]
    fn recorded_releases_continue_the_held_level() {
        // A 100 Hz tone decaying slowly (e^{-t}) while held to its key-up at 2.5 s, then fast (e^{-20 t}).
        let rate = 1000.0;
        let (from, key_up) = (500, 2500);
        let recording: Vec<f32> = (0..3500)
            .map(|k| {
                let t = k as f64 / rate;
                let level = if k < from {
                    0.0
                } else if k < key_up {
                    (-(t - 0.5)).exp()
                } else {
                    (-2.0f64).exp() * (-20.0 * (t - 2.5)).exp()
                };
                (level * (2.0 * std::f64::consts::PI * 100.0 * t).sin()) as f32
            })
            .collect();
        // Held for the whole recorded time: the recording itself, from its onset.
        let whole = placed_note(&recording, from, key_up, key_up - from, MixRelease::Recorded, rate);
        assert_eq!(whole.len(), 3000);
        assert!(whole.iter().zip(&recording[from..]).all(|(a, b)| (a - b).abs() < 1e-6));
        // Held 0.5 s: the release starts at the level reached then (e^{-0.5}), not at the key-up's (e^{-2}).
        let short = placed_note(&recording, from, key_up, 500, MixRelease::Recorded, rate);
        assert_eq!(short.len(), 500 + 1000);
        let level = |x: &[f32], at: usize| rms_at(x, at, 20) * 2f64.sqrt();
        assert!((level(&short, 490) - (-0.49f64).exp()).abs() < 0.05, "{}", level(&short, 490));
        assert!((level(&short, 520) / level(&short, 490) - (-20.0f64 * 0.02).exp()).abs() < 0.1);
        assert!(level(&short, 700) < 0.05 * level(&short, 490));
        // The fade damps the held part itself with a 50 ms time constant.
        let faded = placed_note(&recording, from, key_up, 500, MixRelease::Fade, rate);
        assert_eq!(faded.len(), 500 + 400);
        assert!((level(&faded, 550) / level(&faded, 490) - (-1.2f64).exp()).abs() < 0.1);
    }

    #[test]
    fn decay_rates_are_fitted_on_held_notes() {
        // Four held notes (1 s) decaying at λ(p) = exp(0.7 + 0.02 (p − 60)), one short note (ignored).
        let truth = DecayRate { intercept: 0.7, slope: 0.02 };
        let pitches = vec![40u8, 55, 70, 85, 60];
        let (hop, n) = (0.02, 400);
        let mut values = crate::factorization::Matrix::zeros(pitches.len(), n);
        let mut reference = Vec::new();
        for (q, &p) in pitches.iter().enumerate() {
            let (start, held) = (20 + 70 * q, if p == 60 { 0.3 } else { 1.0 });
            for t in start..start + (held / hop) as usize {
                values.set(q, t, 3.0 * (-truth.at(p) * (t - start) as f64 * hop).exp());
            }
            let onset = start as f64 * hop;
            reference.push(Note { onset, offset: onset + held, pitch: p, velocity: 70 });
        }
        let a = Activations { values, pitches, hop_seconds: hop, start_seconds: 0.0 };
        let r = fit_decay_rate(&a, &reference, &reference).expect("four held notes");
        assert!((r.intercept - 0.7).abs() < 1e-6 && (r.slope - 0.02).abs() < 1e-6, "{r:?}");
        // Fewer than three held notes found: no rate.
        assert_eq!(fit_decay_rate(&a, &reference, &reference[2..]), None);
    }
}
