//! Transcription: audio to activations with a template dictionary, then
//! activations to notes.
//!
//! # Activations
//!
//! The magnitude spectrogram `M` of the audio (the model's STFT) is
//! factorised on fixed, trained spectra by one of three [`Method`]s; all
//! three give one activation row per pitch, read by the same onset rule:
//!
//! - [`Method::Cnmf`], the paper's: [`ConvolutiveRegression`] on the
//!   templates, 50 NMF iterations with the templates' first slices, then 100
//!   convolutive ones, KL divergence (Wu, Marmoret & Cohen 2022, §3.2, eq. 9).
//! - [`Method::Nmf`], plain supervised NMF: the same regression on the
//!   templates' first slices alone (τ = 1, so all 50 + 100 = 150 iterations
//!   are KL NMF updates of H with the F × 88 dictionary fixed, Lee & Seung
//!   2001), with the same fast path, seed and floors.
//! - [`Method::AttackDecay`], the attack/decay model of Cheng, Mauch,
//!   Benetos & Dixon (ISMIR 2016) with its own trained model
//!   ([`crate::attack_decay`]): 50 KL updates of the onset activations H
//!   ([`OnsetRegression`]); the activations read are the attack activations
//!   `H^a = H ⊛ P`, as in Wu et al.'s "AD*" row.
//!
//! # Several templates per pitch
//!
//! A dictionary may hold one template per pitch and intensity
//! ([`crate::templates`]). The regression then fits all K of them, and the
//! K activation rows become one row per pitch before the onset rule: the
//! row of pitch `p` is `h_p[t] = Σ_{q : pitch(q) = p} h_q[t]`
//! ([`IntensityMerge::Sum`], the default: the model is additive, so the sum
//! is the pitch's share of the spectrogram whichever template explains it)
//! or their maximum ([`IntensityMerge::Max`]). Everything after — scaling,
//! eq. 10, offsets, velocities, the calibration — reads the merged rows.
//!
//! The convolutive iterations' cost grows with the number of templates.
//! [`IntensitySelection::Active`] keeps it near one template per pitch:
//! after [`SELECTION_ITERATIONS`] NMF iterations on all templates, each
//! chunk keeps, for each pitch, the templates whose total activation is at
//! least a fraction of that pitch's most active template, and runs the
//! paper's regression (initialisation and convolutive iterations) on those
//! alone.
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
//! the first frame after it (frame `t` is at `t · hop` seconds). That much is
//! the paper's rule; what follows is sscnmf's.
//!
//! # Offsets and velocities
//!
//! The paper does not estimate offsets: the end of the on-run is a frame or
//! three after the onset ([`OffsetRule::RunEnd`]). By default
//! ([`OffsetRule::Decay`]) a note ends at the first frame after its peak
//! where the activation falls below a fraction of that peak, or at the next
//! onset of the same pitch, whichever comes first.
//!
//! The velocity is read from the run's peak activation `p`:
//! [`VelocityRule::LogPeak`] maps the raw (unscaled) peak through
//! `a + b · ln p`, fitted on the isolated notes the templates were learned
//! from ([`crate::calibration`]); without a calibration
//! ([`VelocityRule::Sqrt`]) it is `round(127 · sqrt(peak))` of the scaled
//! peak, capped at 1 (a loudness-like compression, uncalibrated). Both are at
//! least 1 and at most 127.

use std::path::Path;

use crate::attack_decay::AttackDecayModel;
use crate::audio::{stream_audio, DecodeOptions};
use crate::decision::Calibration;
pub use crate::decision::{ActivationScale, DecayRate, ACTIVE_PITCH_FRACTION};
use crate::factorization::attack_decay::{AttackDecayParams, OnsetRegression};
use crate::factorization::{Adaptation, ConvTemplates, ConvolutiveRegression, FitInfo, Matrix};
use crate::notes::Note;
use crate::spectrogram::Stft;
use crate::templates::{model_file_format, TemplateDictionary};
use crate::{Error, ErrorKind, Result};

/// How activations are computed (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Method {
    /// Semi-supervised convolutive NMF (Wu, Marmoret & Cohen 2022), the default.
    #[default]
    Cnmf,
    /// Supervised NMF on the templates' first slices (a baseline).
    Nmf,
    /// The attack/decay model of Cheng et al. 2016 (a baseline).
    AttackDecay,
}

impl Method {
    /// Every method, in the order of the paper's tables.
    pub const ALL: [Method; 3] = [Method::Cnmf, Method::Nmf, Method::AttackDecay];

    /// The command-line name: `cnmf`, `nmf`, `attack-decay`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Cnmf => "cnmf",
            Method::Nmf => "nmf",
            Method::AttackDecay => "attack-decay",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    /// Parses [`Method::name`], case-insensitive (`ad` for `attack-decay`).
    fn from_str(s: &str) -> Result<Method> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cnmf" => Ok(Method::Cnmf),
            "nmf" => Ok(Method::Nmf),
            "attack-decay" | "attack_decay" | "ad" => Ok(Method::AttackDecay),
            _ => Err(Error::invalid_input(format!("unknown method '{s}' (expected cnmf, nmf or attack-decay)"))),
        }
    }
}

/// A trained model: what a [`Method`] fits the spectrogram on.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// A template dictionary (`sscnmf learn`), for CNMF and NMF.
    Templates(TemplateDictionary),
    /// An attack/decay model (`sscnmf learn --method attack-decay`).
    AttackDecay(AttackDecayModel),
}

impl Model {
    /// Reads either kind of model file, told apart by its `format` metadata.
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = match model_file_format(&bytes).as_deref() {
            Some(crate::attack_decay::FORMAT_NAME) => AttackDecayModel::from_bytes(&bytes).map(Model::AttackDecay),
            _ if bytes.is_empty() => Err(Error::new(ErrorKind::Templates, "empty file")),
            _ => TemplateDictionary::from_bytes(&bytes).map(Model::Templates),
        };
        model.map_err(|e| e.with_path(path))
    }

    /// The method this kind of model is made for (CNMF for templates).
    pub fn default_method(&self) -> Method {
        match self {
            Model::Templates(_) => Method::Cnmf,
            Model::AttackDecay(_) => Method::AttackDecay,
        }
    }

    /// Whether `method` can run on this model.
    pub fn supports(&self, method: Method) -> bool {
        matches!(
            (self, method),
            (Model::Templates(_), Method::Cnmf | Method::Nmf) | (Model::AttackDecay(_), Method::AttackDecay)
        )
    }

    fn describe(&self) -> &'static str {
        match self {
            Model::Templates(_) => "a template dictionary",
            Model::AttackDecay(_) => "an attack/decay model",
        }
    }
}

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

/// How the activation rows of a pitch's several templates become the
/// pitch's one row (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum IntensityMerge {
    /// `h_p[t] = Σ_q h_q[t]` over the pitch's templates (default).
    #[default]
    Sum,
    /// `h_p[t] = max_q h_q[t]`.
    Max,
}

impl IntensityMerge {
    /// The command-line name: `sum`, `max`.
    pub fn name(self) -> &'static str {
        match self {
            IntensityMerge::Sum => "sum",
            IntensityMerge::Max => "max",
        }
    }
}

impl std::str::FromStr for IntensityMerge {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sum" => Ok(IntensityMerge::Sum),
            "max" => Ok(IntensityMerge::Max),
            _ => Err(Error::invalid_input(format!("unknown merge '{s}' (expected sum or max)"))),
        }
    }
}

/// Which of a pitch's several templates the convolutive iterations use
/// (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum IntensitySelection {
    /// All of them (default).
    #[default]
    All,
    /// Per chunk, after an NMF initialisation on all templates: the
    /// templates whose summed activation over the chunk is at least
    /// `fraction` of the largest sum among the templates of the same pitch
    /// (1: the most active template of each pitch alone).
    Active {
        /// In (0, 1].
        fraction: f64,
    },
}

impl std::str::FromStr for IntensitySelection {
    type Err = Error;

    /// `all`, or a fraction in (0, 1] for [`IntensitySelection::Active`].
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(IntensitySelection::All);
        }
        match s.trim().parse::<f64>() {
            Ok(fraction) if fraction > 0.0 && fraction <= 1.0 => Ok(IntensitySelection::Active { fraction }),
            _ => {
                Err(Error::invalid_input(format!("intensity selection '{s}': expected `all` or a fraction in (0, 1]")))
            }
        }
    }
}

impl std::fmt::Display for IntensitySelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntensitySelection::All => f.write_str("all"),
            IntensitySelection::Active { fraction } => write!(f, "{fraction}"),
        }
    }
}

/// The rows of `values` (K × N, row `q` of template pitch `pitches[q]`,
/// non-decreasing) merged per pitch by `merge`: D × N for the D distinct
/// pitches, in increasing order.
pub fn merge_pitch_rows(values: &Matrix<f64>, pitches: &[u8], merge: IntensityMerge) -> (Matrix<f64>, Vec<u8>) {
    let mut distinct = pitches.to_vec();
    distinct.dedup();
    let row_of: Vec<usize> = pitches.iter().map(|p| distinct.binary_search(p).expect("a distinct pitch")).collect();
    let mut out: Matrix<f64> = Matrix::zeros(distinct.len(), values.cols);
    for t in 0..values.cols {
        for (q, &r) in row_of.iter().enumerate() {
            let (v, o) = (values.get(q, t), out.get(r, t));
            out.set(
                r,
                t,
                match merge {
                    IntensityMerge::Sum => o + v,
                    IntensityMerge::Max => o.max(v),
                },
            );
        }
    }
    (out, distinct)
}

/// The templates of each pitch that [`IntensitySelection::Active`] keeps:
/// those whose row sum in `h` (K × N) is at least `fraction` of the largest
/// row sum among the templates of the same pitch (`pitches`, one per row).
/// Every pitch keeps at least one template.
pub fn active_templates(h: &Matrix<f64>, pitches: &[u8], fraction: f64) -> Vec<usize> {
    let totals: Vec<f64> = (0..h.rows).map(|q| (0..h.cols).map(|t| h.get(q, t)).sum()).collect();
    let mut keep = Vec::new();
    let mut start = 0;
    while start < pitches.len() {
        let end = (start..pitches.len()).find(|&q| pitches[q] != pitches[start]).unwrap_or(pitches.len());
        let best = (start..end).fold(start, |b, q| if totals[q] > totals[b] { q } else { b });
        keep.extend((start..end).filter(|&q| q == best || (totals[q] > 0.0 && totals[q] >= fraction * totals[best])));
        start = end;
    }
    keep
}

/// Where a note ends (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OffsetRule {
    /// The first frame after the on-run of eq. 10 (the paper's notes).
    RunEnd,
    /// The note ends at the first frame `t` after the run's peak (frame
    /// `t₀`) that starts `bridge` frames in a row whose activations are all
    /// below the floor `fraction` × the peak × `exp(−λ(p) · (t − t₀) · hop)`,
    /// or at the next onset of the same pitch if sooner (or the end of the
    /// activations). With `rate` `None`, λ = 0: a fixed fraction of the
    /// peak. With a pitch's free decay rate λ(p) ([`DecayRate`], calibrated
    /// on the isolated notes), the floor follows the note while its key is
    /// held, so a held note ends when its activation falls faster than a
    /// held string decays (the damper), whatever it was held for. A
    /// `bridge` above 1 lets the note through short gaps: a convolutive
    /// activation can be sparse (one template of τ frames covers the sound
    /// of τ frames).
    Decay {
        /// Fraction of the (decaying) peak, in (0, 1).
        fraction: f64,
        /// The free decay rate of each pitch (`None`: a fixed floor).
        rate: Option<DecayRate>,
        /// Frames in a row below the floor that end the note (at least 1).
        bridge: usize,
    },
}

impl OffsetRule {
    /// [`OffsetRule::Decay`] with a fixed floor at `fraction` of the peak
    /// and no bridging.
    pub fn decay(fraction: f64) -> Self {
        OffsetRule::Decay { fraction, rate: None, bridge: 1 }
    }

    /// The offset rule a calibration chose.
    pub fn calibrated(c: &Calibration) -> Self {
        OffsetRule::Decay { fraction: c.offset_fraction, rate: c.offset_decay_rate, bridge: c.offset_bridge }
    }
}

impl Default for OffsetRule {
    /// [`OffsetRule::decay`] with [`DEFAULT_OFFSET_FRACTION`].
    fn default() -> Self {
        OffsetRule::decay(DEFAULT_OFFSET_FRACTION)
    }
}

/// The default fraction of [`OffsetRule::Decay`] for dictionaries without a
/// calibration: chosen on the dev songs (onset + offset F 83, 76, 61 % on
/// FluidR3, Salamander, TimGM6mb; docs/results/dev/decision-offsets-velocity.md),
/// not on isolated notes — calibrated dictionaries carry their own.
pub const DEFAULT_OFFSET_FRACTION: f64 = 0.01;

/// How a note's MIDI velocity is read from its peak activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VelocityRule {
    /// `round(127 · sqrt(p))` of the scaled peak `p` (capped at 1):
    /// uncalibrated.
    Sqrt,
    /// `round(intercept + slope · ln p)` of the raw (unscaled) peak `p`: a
    /// calibration on isolated notes of known velocity, valid for recordings
    /// at the isolated notes' level.
    LogPeak {
        /// `a` of `a + b · ln p`.
        intercept: f64,
        /// `b` of `a + b · ln p`.
        slope: f64,
    },
}

impl VelocityRule {
    /// The velocity (1..=127) of a note whose raw peak activation is `raw`
    /// and scaled peak `scaled`.
    pub fn velocity(&self, raw: f64, scaled: f64) -> u8 {
        let v = match *self {
            VelocityRule::Sqrt => 127.0 * scaled.clamp(0.0, 1.0).sqrt(),
            VelocityRule::LogPeak { intercept, slope } => intercept + slope * raw.max(1e-300).ln(),
        };
        if v.is_finite() {
            v.round().clamp(1.0, 127.0) as u8
        } else {
            1
        }
    }
}

/// The paper's adaptive-threshold onset detector (eq. 10), with sscnmf's
/// offset and velocity rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnsetDetector {
    /// δ, added to the moving average. Default [`DEFAULT_THRESHOLD`]; a
    /// [`Transcriber`] takes the dictionary's calibrated δ when it has one.
    pub threshold: f64,
    /// Half-width of the moving average in frames. Default 10 (21 frames,
    /// as in the paper).
    pub half_window: usize,
    /// Scaling of the activations. Default [`ActivationScale::Max`].
    pub scale: ActivationScale,
    /// Where notes end. Default [`OffsetRule::Decay`] with
    /// [`DEFAULT_OFFSET_FRACTION`] (or the dictionary's calibrated fraction).
    pub offsets: OffsetRule,
    /// How velocities are read. Default [`VelocityRule::Sqrt`] (or the
    /// dictionary's calibrated [`VelocityRule::LogPeak`]).
    pub velocity: VelocityRule,
}

/// The δ for max-scaled activations used when a dictionary has no
/// calibration (files written before calibration existed, or learned from
/// notes without ground truth): the δ of the grid 0.01:0.01:0.40 with the
/// best mean onset F-measure over the 36 dev songs of the three dev pianos,
/// each with its own templates (τ = 10, first 30 s; see BENCHMARKS.md) — an
/// oracle chosen on test songs. Dictionaries learned by this version carry
/// their own δ, calibrated on their isolated notes ([`crate::calibration`]).
pub const DEFAULT_THRESHOLD: f64 = 0.11;

/// The highest frequency [`Method::Cnmf`] and [`Method::Nmf`] fit by
/// default, in Hz: the spectrogram's (and the templates') bins below it,
/// 1536 of the 4097 bins at 44.1 kHz with `n_fft` 8192 (3/16 of the sample
/// rate). Measured on the 36 dev songs (BENCHMARKS.md, "Frequency range"):
/// CNMF's onset F within 0.3 points of all bins on the three dev pianos
/// (global, songwise and the calibrated rule; onset + offset F too), for 2.7
/// times fewer multiply-adds per iteration; 1024 bins (5.5 kHz) lose up to
/// 0.8 points. NMF's within 0.1 point (global, songwise, its default δ), in
/// half the time. Dictionaries whose
/// Nyquist frequency is lower fit all their bins;
/// [`Transcriber::set_max_frequency`] with `None` fits all of them.
pub const DEFAULT_MAX_FREQUENCY: f64 = 8268.75;

impl Default for OnsetDetector {
    fn default() -> Self {
        OnsetDetector {
            threshold: DEFAULT_THRESHOLD,
            half_window: 10,
            scale: ActivationScale::Max,
            offsets: OffsetRule::default(),
            velocity: VelocityRule::Sqrt,
        }
    }
}

impl OnsetDetector {
    /// The onset detector a calibration describes (21-frame moving average).
    pub fn calibrated(c: &Calibration) -> Self {
        OnsetDetector {
            threshold: c.threshold,
            scale: c.scale,
            offsets: OffsetRule::calibrated(c),
            velocity: VelocityRule::LogPeak { intercept: c.velocity_intercept, slope: c.velocity_slope },
            ..OnsetDetector::default()
        }
    }

    /// The factor activations are multiplied by before thresholding.
    pub fn scale_factor(&self, activations: &Activations) -> f64 {
        let inverse = |m: f64| if m > 0.0 && m.is_finite() { 1.0 / m } else { 1.0 };
        match self.scale {
            ActivationScale::Raw => 1.0,
            ActivationScale::Max => inverse(activations.max()),
            ActivationScale::MeanPitchPeak => {
                let v = &activations.values;
                let peaks: Vec<f64> =
                    (0..v.rows).map(|q| (0..v.cols).map(|t| v.get(q, t)).fold(0.0, f64::max)).collect();
                let floor = ACTIVE_PITCH_FRACTION * peaks.iter().copied().fold(0.0, f64::max);
                let active: Vec<f64> = peaks.into_iter().filter(|&p| p > 0.0 && p >= floor).collect();
                inverse(active.iter().sum::<f64>() / active.len().max(1) as f64)
            }
        }
    }

    /// The notes in `activations`, sorted by onset then pitch.
    pub fn detect(&self, activations: &Activations) -> Vec<Note> {
        self.detect_with_peaks(activations).into_iter().map(|(note, _)| note).collect()
    }

    /// [`detect`](Self::detect), with each note's raw (unscaled) peak
    /// activation.
    pub fn detect_with_peaks(&self, activations: &Activations) -> Vec<(Note, f64)> {
        let scale = self.scale_factor(activations);
        let (k, n) = (activations.values.rows, activations.values.cols);
        let mut notes = Vec::new();
        let mut row = vec![0.0; n];
        for q in 0..k {
            for (t, v) in row.iter_mut().enumerate() {
                *v = activations.values.get(q, t) * scale;
            }
            let runs = on_runs(&row, self.half_window, self.threshold);
            for (i, &(start, end, peak)) in runs.iter().enumerate() {
                let next_onset = runs.get(i + 1).map_or(n, |r| r.0);
                let end = match self.offsets {
                    OffsetRule::RunEnd => end,
                    OffsetRule::Decay { fraction, rate, bridge } => {
                        let per_frame = rate.map_or(0.0, |r| r.at(activations.pitches[q]) * activations.hop_seconds);
                        decay_end(&row, (start, end), next_onset, fraction, per_frame, bridge)
                    }
                };
                let note = Note {
                    onset: activations.start_seconds + start as f64 * activations.hop_seconds,
                    offset: activations.start_seconds + end as f64 * activations.hop_seconds,
                    pitch: activations.pitches[q],
                    velocity: self.velocity.velocity(peak / scale, peak),
                };
                notes.push((note, peak / scale));
            }
        }
        notes.sort_by(|(a, _), (b, _)| a.onset.total_cmp(&b.onset).then(a.pitch.cmp(&b.pitch)));
        notes
    }
}

/// The end (one past the last frame) of the note whose on-run is
/// `run = (start, end)`: the first frame `t` after the run's peak (frame
/// `t₀`) that starts `bridge` frames in a row (at least 1) where `h` is below
/// `fraction` × the peak × `exp(−decay · (t − t₀))` (`decay` per frame; 0
/// for a fixed floor), at most `limit` (the next onset of the pitch, or the
/// row's length; a quiet stretch cut by it ends the note where it starts),
/// and never before the frame after `start`.
pub fn decay_end(h: &[f64], run: (usize, usize), limit: usize, fraction: f64, decay: f64, bridge: usize) -> usize {
    let (start, end) = run;
    let peak_at = (start..end).fold(start, |b, t| if h[t] > h[b] { t } else { b });
    let floor = fraction * h[peak_at];
    let mut quiet_since = None;
    for t in peak_at + 1..limit {
        if h[t] < floor * (-decay * (t - peak_at) as f64).exp() {
            let since = *quiet_since.get_or_insert(t);
            if t + 1 - since >= bridge.max(1) {
                return since.max(start + 1);
            }
        } else {
            quiet_since = None;
        }
    }
    quiet_since.unwrap_or(limit).max(start + 1)
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

/// Audio in, notes out: the whole pipeline with one trained model and
/// [`Method`].
#[derive(Debug, Clone)]
pub struct Transcriber {
    dictionary: TemplateDictionary,
    method: Method,
    /// The attack/decay parameters ([`Method::AttackDecay`] only).
    attack_decay: Option<AttackDecayParams>,
    stft: Stft,
    /// How H is estimated by CNMF and NMF (default: the paper's 50 + 100
    /// iterations, f32; CNMF and NMF on the bins below
    /// [`DEFAULT_MAX_FREQUENCY`]: see [`set_max_frequency`](Self::set_max_frequency)).
    pub regression: ConvolutiveRegression,
    /// How the attack/decay onsets are estimated (default: the authors' 50
    /// iterations with annealed sparsity, f32).
    pub onset_regression: OnsetRegression,
    /// How notes are read from H (default for CNMF: the dictionary's
    /// calibration ([`OnsetDetector::calibrated`]) when it
    /// has one, else [`OnsetDetector::default`]: eq. 10 with δ =
    /// [`DEFAULT_THRESHOLD`] on max-scaled activations).
    pub detector: OnsetDetector,
    /// How audio is decoded (default: mean of channels, whole file).
    pub decode: DecodeOptions,
    /// How long recordings are cut into chunks (default: 30 s chunks with
    /// 2 s of context on each side).
    pub chunking: Chunking,
    /// Adapt the templates to the recording after the regression
    /// ([`crate::factorization::adapt`]; CNMF and NMF only). Default `None`:
    /// the paper's fixed templates. Each chunk of a long recording adapts
    /// its own copy of the learned templates (on its frames and context),
    /// so chunks stay independent and memory bounded.
    pub adaptation: Option<Adaptation>,
    /// How a pitch's several templates' rows are merged (dictionaries with
    /// several templates per pitch; default [`IntensityMerge::Sum`]).
    pub merge: IntensityMerge,
    /// Which of a pitch's several templates CNMF's convolutive iterations
    /// use (default [`DEFAULT_INTENSITY_SELECTION`]).
    pub selection: IntensitySelection,
}

/// NMF iterations (first slices, all templates) whose activations choose
/// the templates of [`IntensitySelection::Active`]: the first 10 of the
/// paper's 50 (with 50 the selection cost as much as the rest of the
/// transcription; docs/results/dev/intensity-templates.md).
pub const SELECTION_ITERATIONS: usize = 10;

/// The default [`IntensitySelection`].
pub const DEFAULT_INTENSITY_SELECTION: IntensitySelection = IntensitySelection::All;

impl Transcriber {
    /// A transcriber with the paper's method (CNMF) and defaults for `dictionary`.
    pub fn new(dictionary: TemplateDictionary) -> Result<Self> {
        Self::for_method(Method::Cnmf, Model::Templates(dictionary))
    }

    /// A transcriber running `method` on `model`, with the defaults; errors
    /// when the model is not the kind the method needs.
    pub fn for_method(method: Method, model: Model) -> Result<Self> {
        if !model.supports(method) {
            let needs = if method == Method::AttackDecay { "an attack/decay model" } else { "a template dictionary" };
            return Err(Error::invalid_input(format!(
                "method {method} needs {needs}, but this is {} (learn one with `sscnmf learn --method {method}`)",
                model.describe()
            )));
        }
        let (dictionary, attack_decay) = match model {
            Model::Templates(d) => (d, None),
            Model::AttackDecay(m) => (spectra_as_dictionary(&m)?, Some(m.params)),
        };
        let stft = Stft::new(dictionary.params.stft.clone())?;
        let detector = match (&dictionary.calibration, method) {
            (Some(c), Method::Cnmf) => OnsetDetector::calibrated(c),
            _ => OnsetDetector::default(),
        };
        let mut transcriber = Transcriber {
            dictionary,
            method,
            attack_decay,
            stft,
            regression: ConvolutiveRegression::default(),
            onset_regression: OnsetRegression::default(),
            detector,
            decode: DecodeOptions::default(),
            chunking: Chunking::default(),
            adaptation: None,
            merge: IntensityMerge::default(),
            selection: DEFAULT_INTENSITY_SELECTION,
        };
        if method != Method::AttackDecay && DEFAULT_MAX_FREQUENCY < transcriber.dictionary.params.stft.nyquist() {
            transcriber.set_max_frequency(Some(DEFAULT_MAX_FREQUENCY))?;
        }
        Ok(transcriber)
    }

    /// The spectra in use, as a dictionary: the templates for CNMF and NMF;
    /// for the attack/decay model, a τ = 2 dictionary whose slice 0 is each
    /// note's attack spectrum and slice 1 its decay spectrum (not normalised;
    /// the decay rates and envelope are not in it).
    pub fn dictionary(&self) -> &TemplateDictionary {
        &self.dictionary
    }

    /// The method in use.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Fit only the spectrogram's bins below `max_frequency` Hz (and the
    /// same bins of the templates; [`crate::spectrogram::StftConfig::bins_below`]);
    /// `None` fits all of them. The iterations' cost is proportional to the
    /// bins kept. The STFT and the stored templates are not changed. An
    /// error for a frequency that is not in (0 Hz, Nyquist], and for a cut
    /// with the attack/decay method (its regression fits every bin).
    pub fn set_max_frequency(&mut self, max_frequency: Option<f64>) -> Result<()> {
        let stft = &self.dictionary.params.stft;
        let Some(hz) = max_frequency else {
            self.regression.max_bins = None;
            return Ok(());
        };
        let bins = stft.bins_below(hz)?;
        if bins < stft.n_bins() && self.method == Method::AttackDecay {
            return Err(Error::invalid_input(
                "a highest frequency applies to cnmf and nmf; the attack/decay model fits every bin",
            ));
        }
        self.regression.max_bins = (bins < stft.n_bins()).then_some(bins);
        Ok(())
    }

    /// The highest frequency fitted, in Hz: the top kept bin's centre
    /// frequency (the Nyquist frequency when every bin is fitted).
    pub fn max_frequency(&self) -> f64 {
        let stft = &self.dictionary.params.stft;
        let bins = self.regression.max_bins.unwrap_or(stft.n_bins()).clamp(1, stft.n_bins());
        (bins - 1) as f64 * stft.sample_rate as f64 / stft.n_fft as f64
    }

    /// The attack/decay model's parameters ([`Method::AttackDecay`] only).
    pub fn attack_decay_params(&self) -> Option<&AttackDecayParams> {
        self.attack_decay.as_ref()
    }

    /// The activations of `m` (frames `first ..` of the recording) by the
    /// method in use.
    fn fit_at(&self, m: &Matrix<f64>, first: usize) -> Result<(Matrix<f64>, FitInfo)> {
        let templates = &self.dictionary.templates;
        match (self.method, &self.attack_decay) {
            (Method::AttackDecay, Some(_)) if self.adaptation.is_some() => {
                Err(Error::invalid_input("template adaptation needs templates (method cnmf or nmf), not attack/decay"))
            }
            (Method::AttackDecay, Some(params)) => {
                let (onsets, info) = self.onset_regression.fit_at(m, params, first)?;
                Ok((params.attack_activations(&onsets), info))
            }
            (Method::AttackDecay, None) => Err(Error::internal("attack/decay method without its model")),
            (Method::Nmf, _) => self.fit_templates_at(m, &templates.first_slices(), first),
            (Method::Cnmf, _) => match self.selection {
                IntensitySelection::Active { fraction } if self.dictionary.has_several_per_pitch() => {
                    if self.adaptation.is_some() {
                        return Err(Error::invalid_input(
                            "template adaptation with a selection of the intensity templates is not supported",
                        ));
                    }
                    self.fit_active(m, first, fraction)
                }
                _ => self.fit_templates_at(m, templates, first),
            },
        }
    }

    /// The regression on `templates`, then the adaptation when there is one.
    fn fit_templates_at(
        &self,
        m: &Matrix<f64>,
        templates: &ConvTemplates<f32>,
        first: usize,
    ) -> Result<(Matrix<f64>, FitInfo)> {
        match &self.adaptation {
            Some(adaptation) => adaptation.fit_at(&self.regression, m, templates, first),
            None => self.regression.fit_at(m, templates, first),
        }
    }

    /// [`IntensitySelection::Active`]: [`SELECTION_ITERATIONS`] NMF
    /// iterations on every template choose the templates
    /// ([`active_templates`]); the regression on those gives their rows, the
    /// others' stay zero (K × N).
    fn fit_active(&self, m: &Matrix<f64>, first: usize, fraction: f64) -> Result<(Matrix<f64>, FitInfo)> {
        let templates = &self.dictionary.templates;
        let init = ConvolutiveRegression {
            init_iterations: SELECTION_ITERATIONS.min(self.regression.init_iterations),
            iterations: 0,
            ..self.regression.clone()
        };
        let (h0, info0) = init.fit_at(m, templates, first)?;
        let keep = active_templates(&h0, &self.dictionary.pitches, fraction);
        let mut data = Vec::with_capacity(keep.len() * templates.tau * templates.n_bins);
        for &q in &keep {
            data.extend_from_slice(templates.template(q));
        }
        let kept = ConvTemplates::new(templates.n_bins, templates.tau, keep.len(), data)?;
        let (h, mut info) = self.regression.fit_at(m, &kept, first)?;
        let mut full = Matrix::zeros(templates.n_templates, h.cols);
        for t in 0..h.cols {
            for (row, &q) in keep.iter().enumerate() {
                full.set(q, t, h.get(row, t));
            }
        }
        info.init_seconds += info0.init_seconds + info0.iteration_seconds;
        info.flops += info0.flops;
        Ok((full, info))
    }

    /// The activations of mono `samples` at the dictionary's sample rate
    /// (cut into chunks as [`chunking`](Self::chunking) says).
    pub fn activations(&self, samples: &[f32], start_seconds: f64) -> Result<Activations> {
        Ok(self.timed_activations(samples, start_seconds)?.0)
    }

    fn timed_activations(&self, samples: &[f32], start_seconds: f64) -> Result<(Activations, StageTimes)> {
        let mut fit = ChunkedFit::new(self)?;
        fit.push(samples)?;
        let (values, times) = fit.finish()?;
        Ok((self.activations_of(values, start_seconds), times))
    }

    /// The activations of the fitted rows `values` (one per template),
    /// merged per pitch when a pitch has several templates.
    fn activations_of(&self, values: Matrix<f64>, start_seconds: f64) -> Activations {
        let (values, pitches) = if self.dictionary.has_several_per_pitch() {
            merge_pitch_rows(&values, &self.dictionary.pitches, self.merge)
        } else {
            (values, self.dictionary.pitches.clone())
        };
        Activations { values, pitches, hop_seconds: self.dictionary.params.stft.hop_seconds(), start_seconds }
    }

    /// Reads notes from activations fitted in `times`.
    fn finish_transcription(&self, activations: Activations, mut times: StageTimes, samples: u64) -> Transcription {
        let started = std::time::Instant::now();
        let notes = self.detector.detect(&activations);
        times.notes = started.elapsed().as_secs_f64();
        Transcription {
            notes,
            activations,
            audio_seconds: samples as f64 / self.dictionary.params.stft.sample_rate as f64,
            times,
        }
    }

    /// Transcribes mono `samples` at the dictionary's sample rate.
    pub fn transcribe_samples(&self, samples: &[f32], start_seconds: f64) -> Result<Transcription> {
        if samples.is_empty() {
            return Err(Error::invalid_input("no audio samples to transcribe"));
        }
        let (activations, times) = self.timed_activations(samples, start_seconds)?;
        Ok(self.finish_transcription(activations, times, samples.len() as u64))
    }

    /// Decodes `path` (resampled to the dictionary's rate) and transcribes it.
    ///
    /// The audio is streamed: it is decoded block by block and fitted chunk
    /// by chunk ([`Chunking`]), so memory stays bounded whatever the file's
    /// length (the activations, 88 × 8 bytes per 20 ms frame, are the only
    /// thing that grows: 127 MB per hour). The result is exactly that of
    /// [`transcribe_samples`](Self::transcribe_samples) on the decoded
    /// samples.
    pub fn transcribe_file(&self, path: &Path) -> Result<Transcription> {
        self.transcribe_file_with_progress(path, &|_| {})
    }

    /// [`transcribe_file`](Self::transcribe_file), calling `progress` with
    /// the seconds of audio fitted so far after each chunk.
    pub fn transcribe_file_with_progress(&self, path: &Path, progress: &dyn Fn(f64)) -> Result<Transcription> {
        let started = std::time::Instant::now();
        let mut fit = ChunkedFit::new(self)?;
        fit.progress = Some(progress);
        let info =
            stream_audio(path, &self.decode, self.dictionary.params.stft.sample_rate, &mut |block| fit.push(block))?;
        let (values, mut times) = fit.finish().map_err(|e| e.with_path(path))?;
        // Decoding is what the wall time holds beyond the fit's own stages.
        times.decode = (started.elapsed().as_secs_f64() - times.stft - times.init - times.iterations).max(0.0);
        let activations = self.activations_of(values, self.decode.offset_seconds);
        Ok(self.finish_transcription(activations, times, info.samples))
    }
}

/// An attack/decay model's spectra as a τ = 2 dictionary (slice 0 attack,
/// slice 1 decay), with its pitches and parameters.
fn spectra_as_dictionary(model: &AttackDecayModel) -> Result<TemplateDictionary> {
    let p = &model.params;
    let mut data = Vec::with_capacity(p.spectra.len());
    for k in 0..p.n_notes {
        data.extend_from_slice(p.attack(k));
        data.extend_from_slice(p.decay(k));
    }
    Ok(TemplateDictionary {
        templates: ConvTemplates::new(p.n_bins, 2, p.n_notes, data)?,
        pitches: model.pitches.clone(),
        intensities: Vec::new(),
        params: model.info.clone(),
        calibration: None,
    })
}

/// How a long recording is cut: the activations of frames `c·chunk_frames
/// .. (c+1)·chunk_frames` (chunk `c`'s core) are fitted on the spectrogram
/// of those frames and `context_frames` more on each side, and only the
/// core is kept. The fit couples frames only through the templates' τ
/// frames (and the local pruning's τ frames), so away from the cut the
/// activations are those of an unchunked fit to within round-off of the
/// iterations; the context keeps the cut's effect out of the kept frames
/// (measured in BENCHMARKS.md and tested in `tests/chunking.rs`).
/// Recordings of at most `chunk_frames + context_frames` frames are fitted
/// whole. The attack/decay model couples frames through its decays, which
/// run on past the context: its chunked activations differ from a whole
/// fit near the cuts by what a note decayed over 2 s still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Frames kept from each chunk. Default 1500 (30 s at a 20 ms hop).
    pub chunk_frames: usize,
    /// Frames fitted on each side of a chunk and then dropped. Default
    /// 100 (2 s, 10 τ).
    pub context_frames: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking { chunk_frames: 1500, context_frames: 100 }
    }
}

impl Chunking {
    fn validate(&self) -> Result<()> {
        if self.chunk_frames == 0 {
            return Err(Error::invalid_input("chunks must hold at least one frame"));
        }
        Ok(())
    }
}

/// Fits a recording's activations as its samples arrive, one chunk at a
/// time (see [`Chunking`]), holding only the samples the next chunk needs.
struct ChunkedFit<'a> {
    transcriber: &'a Transcriber,
    chunking: Chunking,
    /// Samples from `buffer_start` on.
    buffer: Vec<f32>,
    buffer_start: usize,
    /// Samples received in all.
    received: usize,
    /// The next chunk to fit.
    next_chunk: usize,
    /// Activations of the frames fitted so far, K × frames, column-major.
    values: Vec<f64>,
    times: StageTimes,
    /// Called with the seconds fitted after each chunk.
    progress: Option<&'a dyn Fn(f64)>,
    /// The largest |sample| received.
    peak: f32,
}

/// Samples below this in magnitude (2^−24, under the smallest step of
/// 24-bit audio) are digital silence: a recording with none above it has
/// zero activations, hence no notes. (Its fit would otherwise give
/// activations at the level of the regression's floor, which scaling by the
/// largest activation would turn into notes.)
pub const SILENCE_LEVEL: f32 = 1.0 / 16_777_216.0;

impl<'a> ChunkedFit<'a> {
    fn new(transcriber: &'a Transcriber) -> Result<Self> {
        transcriber.chunking.validate()?;
        Ok(ChunkedFit {
            transcriber,
            chunking: transcriber.chunking,
            buffer: Vec::new(),
            buffer_start: 0,
            received: 0,
            next_chunk: 0,
            values: Vec::new(),
            times: StageTimes::default(),
            progress: None,
            peak: 0.0,
        })
    }

    fn hop(&self) -> usize {
        self.transcriber.stft.config().hop_length
    }

    fn half_window(&self) -> usize {
        self.transcriber.stft.config().win_length / 2
    }

    /// The first sample frame `t` reads.
    fn first_sample_of(&self, t: usize) -> usize {
        (t * self.hop()).saturating_sub(self.half_window())
    }

    /// Takes more samples; fits every chunk whose frames and context are
    /// all available.
    fn push(&mut self, samples: &[f32]) -> Result<()> {
        self.peak = samples.iter().fold(self.peak, |m, x| m.max(x.abs()));
        self.buffer.extend_from_slice(samples);
        self.received += samples.len();
        let Chunking { chunk_frames, context_frames } = self.chunking;
        loop {
            let core = self.next_chunk * chunk_frames;
            let end = core + chunk_frames + context_frames;
            // Frame `end - 1` reads samples up to `(end - 1)·hop + win/2`;
            // once they have all arrived the recording has at least `end`
            // frames.
            if self.received < (end - 1) * self.hop() + self.half_window() {
                return Ok(());
            }
            self.fit_frames(core.saturating_sub(context_frames), end, core, core + chunk_frames)?;
            self.next_chunk += 1;
            // Keep the samples the next chunk's context starts from.
            let keep_from = self.first_sample_of((core + chunk_frames).saturating_sub(context_frames));
            if keep_from > self.buffer_start {
                self.buffer.drain(..keep_from - self.buffer_start);
                self.buffer_start = keep_from;
            }
        }
    }

    /// Fits frames `first..end` and keeps the activations of `keep..keep_end`.
    fn fit_frames(&mut self, first: usize, end: usize, keep: usize, keep_end: usize) -> Result<()> {
        let t = self.transcriber;
        let started = std::time::Instant::now();
        let spec = t.stft.magnitude_frames_of_segment(&self.buffer, self.buffer_start, first, end - first);
        let m = Matrix::from_column_major(spec.n_bins, spec.n_frames, spec.data)?;
        self.times.stft += started.elapsed().as_secs_f64();
        let (h, info) = t.fit_at(&m, first)?;
        self.times.init += info.init_seconds;
        self.times.iterations += info.iteration_seconds;
        self.times.flops += info.flops;
        self.values.extend_from_slice(&h.data[(keep - first) * h.rows..(keep_end - first) * h.rows]);
        if let Some(progress) = self.progress {
            progress(keep_end as f64 * t.dictionary.params.stft.hop_seconds());
        }
        Ok(())
    }

    /// Fits what is left (the whole recording if it fits in one chunk).
    fn finish(mut self) -> Result<(Matrix<f64>, StageTimes)> {
        if self.received == 0 {
            return Err(Error::invalid_input("no audio samples to transcribe"));
        }
        let n_frames = self.transcriber.stft.n_frames(self.received);
        let core = self.next_chunk * self.chunking.chunk_frames;
        self.fit_frames(core.saturating_sub(self.chunking.context_frames), n_frames, core, n_frames)?;
        let k = self.transcriber.dictionary.templates.n_templates;
        if self.peak < SILENCE_LEVEL {
            self.values.fill(0.0);
        }
        let values = Matrix::from_column_major(k, n_frames, self.values)?;
        Ok((values, self.times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_highest_frequency_sets_the_regressions_bins() {
        let mut t = Transcriber::new(TemplateDictionary::builtin().unwrap()).unwrap();
        // CNMF's and NMF's default: the bins below 8268.75 Hz.
        assert_eq!(t.regression.max_bins, Some(1536));
        let mut nmf = Transcriber::for_method(Method::Nmf, Model::Templates(t.dictionary().clone())).unwrap();
        assert_eq!((nmf.regression.max_bins, nmf.max_frequency()), (Some(1536), 1535.0 * 44100.0 / 8192.0));
        nmf.set_max_frequency(None).unwrap();
        assert_eq!((nmf.regression.max_bins, nmf.max_frequency()), (None, 22050.0));
        t.set_max_frequency(Some(11025.0)).unwrap();
        assert_eq!(t.regression.max_bins, Some(2048));
        assert!((t.max_frequency() - 2047.0 * 44100.0 / 8192.0).abs() < 1e-9);
        for bad in [-5.0, 0.0, f64::NAN, 30000.0] {
            let e = t.set_max_frequency(Some(bad)).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
            assert_eq!(t.regression.max_bins, Some(2048), "{bad}: a refused value changes nothing");
        }
        t.set_max_frequency(Some(22050.0)).unwrap();
        assert_eq!(t.regression.max_bins, None);
        t.set_max_frequency(Some(5512.5)).unwrap();
        t.set_max_frequency(None).unwrap();
        assert_eq!(t.regression.max_bins, None);
    }

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
        let d = OnsetDetector { offsets: OffsetRule::RunEnd, ..OnsetDetector::default() };
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

    #[test]
    fn mean_pitch_peak_scaling_ignores_quiet_pitches_and_the_level() {
        // Peaks 4 and 2; a third pitch at 0.1 (below 5 % of 4) does not count: the scale is 1/3.
        let mut values = Matrix::zeros(3, 100);
        values.set(0, 20, 4.0);
        values.set(1, 50, 2.0);
        values.set(2, 70, 0.1);
        let a = Activations { values, pitches: vec![60, 64, 67], hop_seconds: 0.02, start_seconds: 0.0 };
        let d = OnsetDetector { scale: ActivationScale::MeanPitchPeak, threshold: 0.5, ..OnsetDetector::default() };
        assert!((d.scale_factor(&a) - 1.0 / 3.0).abs() < 1e-12);
        let mut loud = a.clone();
        loud.values.data.iter_mut().for_each(|x| *x *= 1000.0);
        assert_eq!(d.detect(&a), d.detect(&loud));
        // δ = 1.2 of the mean peak: the pitch peaking at 4/3 of it passes, the one at 2/3 does not.
        let pitches: Vec<u8> = OnsetDetector { threshold: 1.2, ..d }.detect(&a).iter().map(|n| n.pitch).collect();
        assert_eq!(pitches, vec![60]);
        // All zeros: no notes, no division by zero.
        let zeros = Activations { values: Matrix::zeros(2, 10), pitches: vec![60, 64], ..a };
        assert_eq!(d.scale_factor(&zeros), 1.0);
        assert!(d.detect(&zeros).is_empty());
    }

    #[test]
    fn free_decay_floors_follow_each_pitch() {
        let rate = DecayRate { intercept: 0.5, slope: 0.02 };
        assert!((rate.at(60) - 0.5f64.exp()).abs() < 1e-12);
        assert!((rate.at(72) - (0.5f64 + 0.24).exp()).abs() < 1e-12);
        assert_eq!(DecayRate { intercept: 1e9, slope: 0.0 }.at(60), 1000.0);
        // Two pitches held 1 s (50 frames), each decaying at its own free rate, then damped to 0.
        let (hop, n) = (0.02, 100);
        let mut values = Matrix::zeros(2, n);
        for (q, pitch) in [(0usize, 48u8), (1, 84)] {
            for t in 10..60 {
                values.set(q, t, (-rate.at(pitch) * (t - 10) as f64 * hop).exp());
            }
        }
        let a = Activations { values, pitches: vec![48, 84], hop_seconds: hop, start_seconds: 0.0 };
        // A fixed floor at 0.3 of the peak cuts both notes while they are held, the faster one sooner
        // (δ 0.2: no second on-run where the moving average falls at the damping).
        let fixed = OnsetDetector { offsets: OffsetRule::decay(0.3), threshold: 0.2, ..OnsetDetector::default() };
        let ends: Vec<f64> = fixed.detect(&a).iter().map(|n| n.offset).collect();
        assert!(ends.len() == 2 && ends.iter().all(|&e| e < 1.19) && ends[1] < ends[0], "{ends:?}");
        // The free-decay floor keeps both to the damping (frame 60, 1.2 s).
        let free = OffsetRule::Decay { fraction: 0.3, rate: Some(rate), bridge: 1 };
        let notes = OnsetDetector { offsets: free, ..fixed }.detect(&a);
        assert!(notes.len() == 2 && notes.iter().all(|n| (n.offset - 1.2).abs() < 1e-9), "{notes:?}");
    }

    #[test]
    fn decay_offsets_follow_the_activation_down() {
        // A note struck at frame 10, peaking at 11, decaying by half per frame.
        let mut h = vec![0.0; 40];
        h[10] = 0.5;
        for t in 11..30 {
            h[t] = 0.5f64.powi(t as i32 - 11);
        }
        // Below 0.1 of the peak from frame 15 (1/16).
        assert_eq!(decay_end(&h, (10, 12), 40, 0.1, 0.0, 1), 15);
        assert_eq!(decay_end(&h, (10, 12), 40, 0.3, 0.0, 1), 13);
        // Cut at the next onset of the pitch, and never before the onset's frame.
        assert_eq!(decay_end(&h, (10, 12), 13, 0.01, 0.0, 1), 13);
        assert_eq!(decay_end(&h, (10, 11), 10, 0.5, 0.0, 1), 11);
        // A floor that decays as fast as the note (ln 2 per frame) never ends it before the row does;
        // a slower one ends it later than a fixed floor.
        assert_eq!(decay_end(&h, (10, 12), 40, 0.1, 2f64.ln(), 1), 30);
        assert_eq!(decay_end(&h, (10, 12), 40, 0.1, 0.5 * 2f64.ln(), 1), 18);
        // A sparse activation (gaps of 2 frames): bridging 3 frames carries the note over them.
        let mut sparse = vec![0.0; 40];
        for t in [10, 13, 16, 19] {
            sparse[t] = 1.0;
        }
        assert_eq!(decay_end(&sparse, (10, 11), 40, 0.1, 0.0, 1), 11);
        assert_eq!(decay_end(&sparse, (10, 11), 40, 0.1, 0.0, 3), 20);
        // A quiet stretch shorter than the bridge but cut by the next onset ends the note where it starts.
        assert_eq!(decay_end(&sparse, (10, 11), 21, 0.1, 0.0, 3), 20);
        assert_eq!(decay_end(&sparse, (10, 11), 19, 0.1, 0.0, 3), 17);
        let a = Activations {
            values: Matrix::from_column_major(1, 40, h.clone()).unwrap(),
            pitches: vec![60],
            hop_seconds: 0.02,
            start_seconds: 0.0,
        };
        let d = OnsetDetector { offsets: OffsetRule::decay(0.1), ..OnsetDetector::default() };
        let notes = d.detect(&a);
        assert_eq!(notes.len(), 1);
        assert!((notes[0].onset - 0.2).abs() < 1e-12 && (notes[0].offset - 0.3).abs() < 1e-12);
        // A second strike of the pitch ends the first note.
        let mut twice = h.clone();
        twice[20] = 1.0;
        let a = Activations { values: Matrix::from_column_major(1, 40, twice).unwrap(), ..a };
        let d = OnsetDetector { offsets: OffsetRule::decay(0.001), ..d };
        let notes = d.detect(&a);
        assert_eq!(notes.len(), 2);
        assert!((notes[0].offset - notes[1].onset).abs() < 1e-12);
    }

    #[test]
    fn several_templates_merge_into_one_row_per_pitch() {
        // Templates of pitches 60, 60, 60, 64: the three rows of 60 become one.
        let rows = [[1.0, 0.0, 2.0], [0.5, 3.0, 0.0], [0.0, 0.25, 1.0], [4.0, 0.0, 0.0]];
        let mut values = Matrix::zeros(4, 3);
        for (q, row) in rows.iter().enumerate() {
            for (t, &v) in row.iter().enumerate() {
                values.set(q, t, v);
            }
        }
        let pitches = [60, 60, 60, 64];
        let (sum, distinct) = merge_pitch_rows(&values, &pitches, IntensityMerge::Sum);
        assert_eq!(distinct, vec![60, 64]);
        assert_eq!((0..3).map(|t| sum.get(0, t)).collect::<Vec<_>>(), vec![1.5, 3.25, 3.0]);
        assert_eq!((0..3).map(|t| sum.get(1, t)).collect::<Vec<_>>(), vec![4.0, 0.0, 0.0]);
        let (max, _) = merge_pitch_rows(&values, &pitches, IntensityMerge::Max);
        assert_eq!((0..3).map(|t| max.get(0, t)).collect::<Vec<_>>(), vec![1.0, 3.0, 2.0]);
        // Row sums 3, 3.5, 1.25 for pitch 60: at 0.5 the first two stay, at 1 the second alone; 64 keeps its one.
        assert_eq!(active_templates(&values, &pitches, 0.5), vec![0, 1, 3]);
        assert_eq!(active_templates(&values, &pitches, 1.0), vec![1, 3]);
        assert_eq!(active_templates(&values, &pitches, 0.3), vec![0, 1, 2, 3]);
        // All zeros: each pitch keeps its first template.
        assert_eq!(active_templates(&Matrix::zeros(4, 3), &pitches, 1.0), vec![0, 3]);
        assert_eq!("sum".parse::<IntensityMerge>().unwrap(), IntensityMerge::Sum);
        assert!("mean".parse::<IntensityMerge>().is_err());
        assert_eq!("all".parse::<IntensitySelection>().unwrap(), IntensitySelection::All);
        assert_eq!("0.2".parse::<IntensitySelection>().unwrap(), IntensitySelection::Active { fraction: 0.2 });
        assert!("0".parse::<IntensitySelection>().is_err() && "1.5".parse::<IntensitySelection>().is_err());
    }

    #[test]
    fn a_dictionary_of_intensities_transcribes_to_one_row_per_pitch() {
        use crate::templates::{TemplateDictionary, TemplateParams};
        let stft = crate::spectrogram::StftConfig { sample_rate: 8000, n_fft: 64, win_length: 32, hop_length: 16 };
        // Pitch 0's templates: bins 4 and 8 (P) and bins 4, 8, 12 (F); pitch 1: bin 10.
        let template = |bins: &[usize]| {
            let mut t = vec![0.0f32; 33 * 2];
            for &b in bins {
                t[b] = 0.5;
                t[33 + b] = 0.25;
            }
            let sum: f32 = t.iter().sum();
            t.into_iter().map(|x| x / sum + 1e-4).collect::<Vec<f32>>()
        };
        let data = [template(&[4, 8]), template(&[4, 8, 12]), template(&[10])].concat();
        let params = TemplateParams { stft, beta: 1.0, iterations: 1, tool_version: "t".into(), source: "unit".into() };
        let d = TemplateDictionary {
            templates: ConvTemplates::new(33, 2, 3, data).unwrap(),
            pitches: vec![60, 60, 72],
            intensities: vec!["P".into(), "F".into(), "M".into()],
            params,
            calibration: None,
        };
        let tone = |bins: &[usize], from: usize, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let t = i as f32 / 8000.0;
                    bins.iter().map(|&b| (std::f32::consts::TAU * b as f32 * 125.0 * t).sin()).sum::<f32>()
                        * if i >= from { 0.3 } else { 0.0 }
                })
                .collect()
        };
        let samples: Vec<f32> =
            tone(&[4, 8, 12], 1600, 8000).iter().zip(tone(&[10], 4000, 8000)).map(|(a, b)| a + b).collect();
        for (merge, selection) in [
            (IntensityMerge::Sum, IntensitySelection::All),
            (IntensityMerge::Max, IntensitySelection::All),
            (IntensityMerge::Sum, IntensitySelection::Active { fraction: 1.0 }),
        ] {
            let mut t = Transcriber::new(d.clone()).unwrap();
            t.merge = merge;
            t.selection = selection;
            let a = t.activations(&samples, 0.0).unwrap();
            assert_eq!((a.pitches.clone(), a.values.rows), (vec![60, 72], 2), "{merge:?} {selection:?}");
            // Each pitch's merged row is quiet before its tone starts (frames 20 and 50) and strong after.
            let row_max =
                |q: usize, frames: std::ops::Range<usize>| frames.map(|t| a.values.get(q, t)).fold(0.0, f64::max);
            let (n, peak) = (a.values.cols, a.max());
            assert!(row_max(0, 0..18) < 0.01 * peak && row_max(0, 22..n) > 0.3 * peak, "{merge:?} {selection:?}");
            assert!(row_max(1, 0..48) < 0.01 * peak && row_max(1, 52..n) > 0.3 * peak, "{merge:?} {selection:?}");
        }
    }

    #[test]
    fn calibrated_velocities_read_the_raw_peak() {
        let rule = VelocityRule::LogPeak { intercept: 70.0, slope: 20.0 };
        assert_eq!(rule.velocity(1.0, 0.3), 70);
        assert_eq!(rule.velocity(std::f64::consts::E, 0.3), 90);
        assert_eq!(rule.velocity(1e-30, 0.3), 1);
        assert_eq!(rule.velocity(1e30, 0.3), 127);
        assert_eq!(rule.velocity(0.0, 0.3), 1);
        assert_eq!(VelocityRule::Sqrt.velocity(123.0, 0.25), 64);
        // The level matters for the calibrated rule only.
        let mut values = Matrix::zeros(1, 30);
        values.set(0, 10, 4.0);
        let a = Activations { values, pitches: vec![60], hop_seconds: 0.02, start_seconds: 0.0 };
        let d = OnsetDetector { velocity: rule, ..OnsetDetector::default() };
        let (note, raw) = d.detect_with_peaks(&a)[0];
        assert_eq!(raw, 4.0);
        assert_eq!(note.velocity, (70.0 + 20.0 * 4f64.ln()).round() as u8);
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the activations (zeros, spikes, noise, huge or tiny
        /// values), the notes are sorted by (onset, pitch), each has
        /// onset < offset within the recording, a pitch of the dictionary
        /// and a velocity in 1..=127, and same-pitch notes do not overlap,
        /// with either offset rule and either velocity rule.
        #[test]
        fn detected_notes_keep_their_invariants(
            k in 1usize..5,
            values in prop::collection::vec(
                prop_oneof![Just(0.0), 0.0..1.0f64, 0.0..1e30f64, 0.0..1e-30f64], 1..400),
            threshold in 0.0..0.5f64,
            half_window in 0usize..12,
            start in 0.0..100.0f64,
            raw in proptest::bool::ANY,
            decay in prop::option::of((0.0..1.0f64, prop::option::of((-5.0..8.0f64, -0.2..0.2f64)), 0usize..12)),
            log_peak in prop::option::of((-200.0..200.0f64, -50.0..50.0f64)),
        ) {
            let n = values.len() / k;
            prop_assume!(n > 0);
            let values = Matrix::from_column_major(k, n, values[..k * n].to_vec()).unwrap();
            let pitches: Vec<u8> = (0..k as u8).map(|q| 21 + 7 * q).collect();
            let a = Activations { values, pitches: pitches.clone(), hop_seconds: 0.02, start_seconds: start };
            let scale = if raw { ActivationScale::Raw } else { ActivationScale::Max };
            let offsets = decay.map_or(OffsetRule::RunEnd, |(fraction, rate, bridge)| {
                let rate = rate.map(|(intercept, slope)| DecayRate { intercept, slope });
                OffsetRule::Decay { fraction, rate, bridge }
            });
            let velocity =
                log_peak.map_or(VelocityRule::Sqrt, |(intercept, slope)| VelocityRule::LogPeak { intercept, slope });
            let notes = OnsetDetector { threshold, half_window, scale, offsets, velocity }.detect(&a);
            let end = start + n as f64 * 0.02;
            for w in notes.windows(2) {
                prop_assert!((w[0].onset, w[0].pitch) <= (w[1].onset, w[1].pitch), "{w:?}");
            }
            for note in &notes {
                prop_assert!(start <= note.onset && note.onset < note.offset && note.offset <= end + 1e-9, "{note:?}");
                prop_assert!(pitches.contains(&note.pitch) && (1..=127).contains(&note.velocity), "{note:?}");
            }
            for &p in &pitches {
                let same: Vec<&Note> = notes.iter().filter(|x| x.pitch == p).collect();
                for w in same.windows(2) {
                    prop_assert!(w[0].offset <= w[1].onset, "{w:?}");
                }
            }
        }
    }
}
