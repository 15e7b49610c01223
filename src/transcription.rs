//! Transcription: audio to activations with a template dictionary, then
//! activations to notes.
//!
//! # Activations
//!
//! The magnitude spectrogram `M` of the audio (the dictionary's STFT) is
//! factorised on the fixed templates by [`ConvolutiveRegression`]: 50 NMF
//! iterations with the templates' first slices, then 100 convolutive ones,
//! KL divergence (Wu, Marmoret & Cohen 2022, §3.2).
//!
//! # Level
//!
//! KL activations scale with the recording's level (twice as loud, twice the
//! activations), so a fixed threshold δ on raw activations means different
//! things on different recordings. By default ([`ActivationScale::Max`]) the
//! activations are divided by their largest value over the whole recording
//! before thresholding, so δ is a fraction of the loudest note's activation
//! and the result does not depend on the recording's gain. The paper's raw
//! activations are available as [`ActivationScale::Raw`].
//!
//! # Notes (paper eq. 10)
//!
//! For each pitch's activation row `h`, with the moving average
//! `s[t] = (1/21) Σ_{j=−10}^{10} h[t+j]` (zero padding at the borders), the
//! note is *on* at frame `t` when `h[t] > s[t] + δ`. Each maximal run of
//! on-frames is one note: onset = time of its first frame, offset = time of
//! the first frame after it (frame `t` is at `t · hop` seconds). Its velocity
//! is `round(127 · sqrt(peak))` (at least 1), with `peak` the largest scaled
//! activation in the run, capped at 1: a loudness-like compression of the
//! activation, not calibrated (see the README).

use std::path::Path;

use crate::audio::{load_audio, DecodeOptions};
use crate::factorization::{ConvolutiveRegression, Matrix};
use crate::notes::Note;
use crate::spectrogram::Stft;
use crate::templates::TemplateDictionary;
use crate::{Error, Result};

/// Activations of each template over time.
#[derive(Debug, Clone)]
pub struct Activations {
    /// K × N: `values.get(q, t)` is the activation of pitch `pitches[q]` in frame `t`.
    pub values: Matrix<f64>,
    /// MIDI pitch of each row.
    pub pitches: Vec<u8>,
    /// Seconds between frames.
    pub hop_seconds: f64,
    /// Time of frame 0 in the source file, in seconds (the `--offset`).
    pub start_seconds: f64,
}

impl Activations {
    /// The largest activation.
    pub fn max(&self) -> f64 {
        self.values.data.iter().copied().fold(0.0, f64::max)
    }
}

/// How activations are scaled before thresholding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationScale {
    /// Divided by the recording's largest activation (default): δ is a
    /// fraction of the loudest note and independent of the recording's level.
    #[default]
    Max,
    /// Raw activations, as in the paper: δ depends on the recording's level.
    Raw,
}

/// The paper's adaptive-threshold onset detector (eq. 10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnsetDetector {
    /// δ, added to the moving average. Default [`DEFAULT_THRESHOLD`].
    pub threshold: f64,
    /// Half-width of the moving average in frames. Default 10 (21 frames,
    /// as in the paper).
    pub half_window: usize,
    /// Scaling of the activations. Default [`ActivationScale::Max`].
    pub scale: ActivationScale,
}

/// The default δ for max-scaled activations: the δ of the grid
/// 0.01:0.01:0.40 with the best mean onset F-measure over the 36 dev songs of
/// the three dev pianos, each with its own templates (τ = 10, first 30 s; see
/// BENCHMARKS.md). Each piano's own best δ was 0.09, 0.11 or 0.12, and 0.11
/// gives each piano within a point of its own best.
pub const DEFAULT_THRESHOLD: f64 = 0.11;

impl Default for OnsetDetector {
    fn default() -> Self {
        OnsetDetector { threshold: DEFAULT_THRESHOLD, half_window: 10, scale: ActivationScale::Max }
    }
}

impl OnsetDetector {
    /// The factor activations are multiplied by before thresholding.
    pub fn scale_factor(&self, activations: &Activations) -> f64 {
        match self.scale {
            ActivationScale::Raw => 1.0,
            ActivationScale::Max => {
                let m = activations.max();
                if m > 0.0 {
                    1.0 / m
                } else {
                    1.0
                }
            }
        }
    }

    /// The notes in `activations`, sorted by onset then pitch.
    pub fn detect(&self, activations: &Activations) -> Vec<Note> {
        let scale = self.scale_factor(activations);
        let (k, n) = (activations.values.rows, activations.values.cols);
        let mut notes = Vec::new();
        let mut row = vec![0.0; n];
        for q in 0..k {
            for (t, v) in row.iter_mut().enumerate() {
                *v = activations.values.get(q, t) * scale;
            }
            for (start, end, peak) in on_runs(&row, self.half_window, self.threshold) {
                notes.push(Note {
                    onset: activations.start_seconds + start as f64 * activations.hop_seconds,
                    offset: activations.start_seconds + end as f64 * activations.hop_seconds,
                    pitch: activations.pitches[q],
                    velocity: velocity_from_peak(peak),
                });
            }
        }
        notes.sort_by(|a, b| a.onset.total_cmp(&b.onset).then(a.pitch.cmp(&b.pitch)));
        notes
    }
}

/// MIDI velocity of a note whose scaled activation peaks at `peak`.
fn velocity_from_peak(peak: f64) -> u8 {
    (127.0 * peak.clamp(0.0, 1.0).sqrt()).round().clamp(1.0, 127.0) as u8
}

/// The moving average `s[t] = (1/(2w+1)) Σ_{j=−w}^{w} h[t+j]`, zero-padded.
pub fn moving_average(h: &[f64], half_window: usize) -> Vec<f64> {
    let n = h.len();
    let width = (2 * half_window + 1) as f64;
    // Prefix sums: exact enough in f64 for any realistic length, and O(N).
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for &x in h {
        prefix.push(prefix.last().unwrap() + x);
    }
    (0..n)
        .map(|t| {
            let lo = t.saturating_sub(half_window);
            let hi = (t + half_window + 1).min(n);
            (prefix[hi] - prefix[lo]) / width
        })
        .collect()
}

/// Maximal runs of frames where `h[t] > s[t] + δ`, as `(first, end, peak)`
/// with `end` one past the last frame.
pub fn on_runs(h: &[f64], half_window: usize, threshold: f64) -> Vec<(usize, usize, f64)> {
    let s = moving_average(h, half_window);
    let mut runs = Vec::new();
    let mut current: Option<(usize, f64)> = None;
    for t in 0..h.len() {
        let on = h[t] > s[t] + threshold;
        match (&mut current, on) {
            (None, true) => current = Some((t, h[t])),
            (Some((_, peak)), true) => *peak = peak.max(h[t]),
            (Some((start, peak)), false) => {
                runs.push((*start, t, *peak));
                current = None;
            }
            (None, false) => {}
        }
    }
    if let Some((start, peak)) = current {
        runs.push((start, h.len(), peak));
    }
    runs
}

/// Wall-clock seconds of each stage of one transcription.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageTimes {
    /// Decoding, mixing and resampling.
    pub decode: f64,
    /// The magnitude STFT.
    pub stft: f64,
    /// The NMF initialisation of the activations.
    pub init: f64,
    /// The convolutive iterations.
    pub iterations: f64,
    /// Reading notes from the activations.
    pub notes: f64,
    /// Floating-point operations of the products.
    pub flops: f64,
}

/// Everything a transcription produced.
#[derive(Debug, Clone)]
pub struct Transcription {
    /// The notes, sorted by onset then pitch.
    pub notes: Vec<Note>,
    /// The activations they were read from.
    pub activations: Activations,
    /// Seconds of audio transcribed.
    pub audio_seconds: f64,
    /// Where the time went.
    pub times: StageTimes,
}

/// Audio in, notes out: the whole pipeline with one dictionary.
#[derive(Debug, Clone)]
pub struct Transcriber {
    dictionary: TemplateDictionary,
    stft: Stft,
    /// How H is estimated (default: the paper's 50 + 100 iterations, f32).
    pub regression: ConvolutiveRegression,
    /// How notes are read from H (default: eq. 10 with δ = [`DEFAULT_THRESHOLD`]
    /// on max-scaled activations).
    pub detector: OnsetDetector,
    /// How audio is decoded (default: mean of channels, whole file).
    pub decode: DecodeOptions,
}

impl Transcriber {
    /// A transcriber with the paper's defaults for `dictionary`.
    pub fn new(dictionary: TemplateDictionary) -> Result<Self> {
        let stft = Stft::new(dictionary.params.stft.clone())?;
        Ok(Transcriber {
            dictionary,
            stft,
            regression: ConvolutiveRegression::default(),
            detector: OnsetDetector::default(),
            decode: DecodeOptions::default(),
        })
    }

    /// The dictionary in use.
    pub fn dictionary(&self) -> &TemplateDictionary {
        &self.dictionary
    }

    /// The activations of mono `samples` at the dictionary's sample rate.
    pub fn activations(&self, samples: &[f32], start_seconds: f64) -> Result<Activations> {
        Ok(self.timed_activations(samples, start_seconds)?.0)
    }

    fn timed_activations(&self, samples: &[f32], start_seconds: f64) -> Result<(Activations, StageTimes)> {
        let started = std::time::Instant::now();
        let spec = self.stft.magnitude(samples);
        let m = Matrix::from_column_major(spec.n_bins, spec.n_frames, spec.data)?;
        let stft = started.elapsed().as_secs_f64();
        let (values, info) = self.regression.fit(&m, &self.dictionary.templates)?;
        let activations = Activations {
            values,
            pitches: self.dictionary.pitches.clone(),
            hop_seconds: self.dictionary.params.stft.hop_length as f64 / self.dictionary.params.stft.sample_rate as f64,
            start_seconds,
        };
        let times = StageTimes {
            stft,
            init: info.init_seconds,
            iterations: info.iteration_seconds,
            flops: info.flops,
            ..Default::default()
        };
        Ok((activations, times))
    }

    /// Transcribes mono `samples` at the dictionary's sample rate.
    pub fn transcribe_samples(&self, samples: &[f32], start_seconds: f64) -> Result<Transcription> {
        if samples.is_empty() {
            return Err(Error::invalid_input("no audio samples to transcribe"));
        }
        let (activations, mut times) = self.timed_activations(samples, start_seconds)?;
        let started = std::time::Instant::now();
        let notes = self.detector.detect(&activations);
        times.notes = started.elapsed().as_secs_f64();
        Ok(Transcription {
            notes,
            activations,
            audio_seconds: samples.len() as f64 / self.dictionary.params.stft.sample_rate as f64,
            times,
        })
    }

    /// Decodes `path` (resampled to the dictionary's rate) and transcribes it.
    pub fn transcribe_file(&self, path: &Path) -> Result<Transcription> {
        let started = std::time::Instant::now();
        let audio = load_audio(path, &self.decode, self.dictionary.params.stft.sample_rate)?;
        let decode = started.elapsed().as_secs_f64();
        let mut t =
            self.transcribe_samples(&audio.samples, self.decode.offset_seconds).map_err(|e| e.with_path(path))?;
        t.times.decode = decode;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_zero_padded() {
        let h = [21.0, 0.0, 0.0];
        let s = moving_average(&h, 10);
        assert!(s.iter().all(|&x| (x - 1.0).abs() < 1e-12));
        let h: Vec<f64> = (0..50).map(|x| x as f64).collect();
        let s = moving_average(&h, 2);
        assert!((s[10] - 10.0).abs() < 1e-12);
        assert!((s[0] - (0.0 + 1.0 + 2.0) / 5.0).abs() < 1e-12);
        assert!((s[49] - (47.0 + 48.0 + 49.0) / 5.0).abs() < 1e-12);
    }

    #[test]
    fn onset_rule_follows_equation_10() {
        let mut h = vec![0.0; 60];
        h[10] = 1.0;
        h[11] = 0.8;
        h[12] = 0.1;
        h[40] = 0.3;
        // Frame 10: s = 1.9/21 ≈ 0.0905, on; 11 on; 12: 0.1 > 0.0905 + δ? not with δ = 0.05.
        let runs = on_runs(&h, 10, 0.05);
        assert_eq!(runs, vec![(10, 12, 1.0), (40, 41, 0.3)]);
        // A larger δ keeps only the strong note.
        assert_eq!(on_runs(&h, 10, 0.5), vec![(10, 12, 1.0)]);
        // A run reaching the end is closed there.
        let mut g = vec![0.0; 5];
        g[4] = 1.0;
        assert_eq!(on_runs(&g, 10, 0.01), vec![(4, 5, 1.0)]);
    }

    #[test]
    fn detection_scales_out_the_level() {
        let mut values = Matrix::zeros(2, 100);
        values.set(0, 20, 4.0);
        values.set(1, 50, 2.0);
        values.set(1, 51, 1.0);
        let a = Activations { values, pitches: vec![60, 64], hop_seconds: 0.02, start_seconds: 1.0 };
        let mut loud = a.clone();
        loud.values.data.iter_mut().for_each(|x| *x *= 1000.0);
        let d = OnsetDetector::default();
        let notes = d.detect(&a);
        assert_eq!(notes, d.detect(&loud));
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].pitch, 60);
        assert!((notes[0].onset - 1.4).abs() < 1e-12 && (notes[0].offset - 1.42).abs() < 1e-12);
        assert_eq!(notes[0].velocity, 127);
        assert_eq!(notes[1].pitch, 64);
        assert!((notes[1].onset - 2.0).abs() < 1e-12 && (notes[1].offset - 2.04).abs() < 1e-12);
        assert_eq!(notes[1].velocity, 90);
        // With raw activations δ is in the recording's units.
        let raw = OnsetDetector { scale: ActivationScale::Raw, threshold: 1.5, ..d };
        assert_eq!(raw.detect(&a).len(), 2);
        assert_eq!(OnsetDetector { threshold: 1.5, ..d }.detect(&a).len(), 0);
    }
}
