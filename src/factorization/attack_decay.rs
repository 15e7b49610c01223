//! The attack/decay model of Cheng, Mauch, Benetos & Dixon, "An attack/decay
//! model for piano transcription", ISMIR 2016: a baseline for the paper's
//! CNMF (Wu, Marmoret & Cohen 2022 compare with it in their Table 1).
//!
//! # Model
//!
//! Each note `k` has an attack (percussive) spectrum `A[:, k]`, a decay
//! (harmonic) spectrum `D[:, k]` and a decay rate `α_k` (per frame). The
//! notes share an attack envelope `P` of `2L + 1` frames centred on the
//! onset (`L = ⌊win_length / hop_length⌋ = 4` frames, the spectral blurring
//! of the window, as in the authors' code). A spike-shaped *onset
//! activation* `H[k, t]` drives both parts:
//!
//! ```text
//! H^a[k, t] = Σ_{m=0}^{2L} P[m] · H[k, t + L − m]                 (attack activation)
//! H^d[k, t] = Σ_{j≥0} e^{−α_k j} · H[k, t − j]                    (decay activation)
//! V[f, t]   = Σ_k A[f, k] · H^a[k, t]  +  Σ_k D[f, k] · H^d[k, t]
//! ```
//!
//! (Cheng et al. 2016, eqs. 1-4; Wu et al. 2022, eqs. 5-6, rewrite it as two
//! rank-one CNMFs.) The decay runs to the end of the excerpt, as in the
//! authors' code, whose `Tmax` is the excerpt's length; it is computed by
//! the recursion `H^d[t] = e^{−α} H^d[t−1] + H[t]`, so a frame costs O(K).
//!
//! # Fitting the onsets (transcription)
//!
//! With `A`, `D`, `α`, `P` fixed, `V` is linear in `H`, and the KL
//! multiplicative update (Lee & Seung 2001) with `R = M ⊘ V` is
//!
//! ```text
//! H[k, τ] ← H[k, τ] · ( Σ_m P[m] (AᵀR)[k, τ − L + m] + Σ_{j≥0} e^{−α_k j} (DᵀR)[k, τ + j] )
//!                   / ( Σ_m P[m] (Aᵀ1)[k, τ − L + m] + Σ_{j≥0} e^{−α_k j} (Dᵀ1)[k, τ + j] )
//! ```
//!
//! (sums cut at the borders), which never increases `D_KL(M | V)`. As in the
//! authors' code each update is followed by the annealed sparsity exponent
//! `H ← H^{s_i}`, `s_i = s_0 + (s_1 − s_0) · i / I` for iteration `i = 1..I`,
//! `(s_0, s_1) = (1, 1.04)`, `I = 50` iterations from a seeded random `H`.
//! The products `[A D]·[H^a; H^d]` and `[A D]ᵀ·R` (F × 2K by 2K × N) are
//! where the time goes; they run in f32 in fixed frame blocks
//! ([`kernels::kl_ratio_products`](super::kernels::kl_ratio_products)).
//!
//! # Training on one isolated note
//!
//! `H` is fixed to a single spike of 0.99 at the note's onset frame and the
//! other parameters are learned by 50 rounds of, in this order (the authors'
//! code, KL):
//!
//! ```text
//! D[f] ← D[f] · Σ_t R[f,t] H^d[t] / Σ_t H^d[t]
//! A[f] ← A[f] · Σ_t R[f,t] H^a[t] / Σ_t H^a[t]
//! α    ← α · Σ_t (Σ_f D[f]) H^e[t] / Σ_t (Σ_f D[f] R[f,t]) H^e[t],   H^e[t] = Σ_j j e^{−αj} H[t−j]
//! P[m] ← P[m] · Σ_t H[t] (AᵀR)[t−L+m] / Σ_t H[t] (Aᵀ1)[t−L+m],  then P ← P / max P
//! ```
//!
//! recomputing `V` after each, from `A = 1`, `D` seeded random, `α = 1`,
//! `P = 1`. The first two are MM updates; the `α` one is the heuristic
//! ratio of the negative and positive parts of the gradient (`∂V/∂α =
//! −D H^e`), and the envelope's normalisation moves the scale into `A`. The
//! model's envelope is the mean of the notes' envelopes.
//!
//! # Differences from the authors' code
//!
//! 1. Front end: the authors' code uses a 4096-sample Hamming window,
//!    8192-point FFT and 882-sample hop (matplotlib `specgram`, frames not
//!    centred), then a 5-bin median filter along frequency. Here the model
//!    sees exactly the spectrogram CNMF sees (periodic Hann, centred frames,
//!    no median filter), so that the comparison has the same pre-processing
//!    (Wu et al. 2022 §4.1 name the smoothing as one reason they could not
//!    reproduce Cheng's scores).
//! 2. Onset frame of a training note: the authors put the spike 0.5 s − 1
//!    frame into each MAPS file; here it is the frame of the largest rise of
//!    the frame's L1 norm, which does not assume where the note starts. The
//!    note is cut 3.5 s after it (the authors cut at 4 s from the start).
//! 3. Their note tracking (peak picking on `H^a`, peak fusion within 5
//!    frames, offsets by dynamic programming on the reconstruction error)
//!    is not used: the attack activations `H^a` go through the paper's eq. 10
//!    ([`crate::transcription::OnsetDetector`]), as Wu et al. did for their
//!    "AD*" row.
//! 4. Values below 1e-15 are set to zero (as in [`super::kernels`]) instead of
//!    adding machine ε everywhere, which keeps f32 away from subnormals.

use super::kernels::{kl_ratio_products, Real, ACTIVATION_FLOOR, TEMPLATE_FLOOR};
use super::regression::{floor_silent_frames, random_activations};
use super::{FitInfo, Matrix, SplitMix64, MODEL_FLOOR};
use crate::{Error, Result};

/// The model's parameters for K notes.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackDecayParams {
    /// F: frequency bins.
    pub n_bins: usize,
    /// K: notes.
    pub n_notes: usize,
    /// `[A D]`, F × 2K column-major: column `k` is note `k`'s attack
    /// spectrum, column `K + k` its decay spectrum.
    pub spectra: Vec<f32>,
    /// `α_k`, per frame (the decay activation loses `1 − e^{−α}` of itself
    /// each frame).
    pub decay_rates: Vec<f32>,
    /// `P`, `2L + 1` values; `P[L]` is the onset frame.
    pub envelope: Vec<f32>,
}

impl AttackDecayParams {
    /// Checks the sizes and values; errors name what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_input(m));
        if self.spectra.len() != self.n_bins * 2 * self.n_notes || self.n_notes == 0 {
            return bad(format!(
                "{} spectra values for {} notes of {} bins",
                self.spectra.len(),
                self.n_notes,
                self.n_bins
            ));
        }
        if self.decay_rates.len() != self.n_notes {
            return bad(format!("{} decay rates for {} notes", self.decay_rates.len(), self.n_notes));
        }
        if self.envelope.len() % 2 != 1 {
            return bad(format!("the attack envelope must have an odd length, not {}", self.envelope.len()));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite() && *x >= 0.0);
        if !finite(&self.spectra)
            || !finite(&self.envelope)
            || !self.decay_rates.iter().all(|a| a.is_finite() && *a > 0.0)
        {
            return bad("negative or non-finite parameters (decay rates must be positive)".into());
        }
        Ok(())
    }

    /// Note `k`'s attack spectrum `A[:, k]`.
    pub fn attack(&self, k: usize) -> &[f32] {
        &self.spectra[k * self.n_bins..(k + 1) * self.n_bins]
    }

    /// Note `k`'s decay spectrum `D[:, k]`.
    pub fn decay(&self, k: usize) -> &[f32] {
        let k = self.n_notes + k;
        &self.spectra[k * self.n_bins..(k + 1) * self.n_bins]
    }

    /// `L`: the envelope reaches `L` frames each side of the onset.
    pub fn half_envelope(&self) -> usize {
        self.envelope.len() / 2
    }

    /// The attack activations `H^a = H ⊛ P` (K × N) of onset activations `H`.
    pub fn attack_activations(&self, onsets: &Matrix<f64>) -> Matrix<f64> {
        let mut out = Matrix::zeros(onsets.rows, onsets.cols);
        map_rows(&onsets.data, onsets.rows, 0, &mut out.data, onsets.rows, 0, onsets.rows, onsets.cols, |_, x, y| {
            attack_forward(&self.envelope, x, y)
        });
        out
    }

    /// Writes `[H^a; H^d]` (2K × N) of `h` (K × N) into `stacked`.
    fn stack(&self, h: &[f32], n: usize, stacked: &mut [f32]) {
        let k = self.n_notes;
        map_rows(h, k, 0, stacked, 2 * k, 0, k, n, |_, x, y| attack_forward(&self.envelope, x, y));
        map_rows(h, k, 0, stacked, 2 * k, k, k, n, |q, x, y| decay_forward(self.decay_rates[q], x, y));
    }

    /// The adjoint of [`stack`](Self::stack): `Σ_m P[m] G_a[τ−L+m] + Σ_j e^{−αj} G_d[τ+j]`
    /// (K × N) of `g` (2K × N).
    fn unstack(&self, g: &[f32], n: usize) -> Vec<f32> {
        let k = self.n_notes;
        let mut a = vec![0.0; k * n];
        let mut d = vec![0.0; k * n];
        map_rows(g, 2 * k, 0, &mut a, k, 0, k, n, |_, x, y| attack_adjoint(&self.envelope, x, y));
        map_rows(g, 2 * k, k, &mut d, k, 0, k, n, |q, x, y| decay_adjoint(self.decay_rates[q], x, y));
        a.iter_mut().zip(&d).for_each(|(x, y)| *x += y);
        a
    }
}

/// Applies `filter(row, input, output)` to rows `src_off..src_off + k` of
/// `src` (`src_rows` × n, column-major), writing rows `dst_off..` of `dst`
/// (`dst_rows` × n); the filters run in f64.
#[allow(clippy::too_many_arguments)]
fn map_rows<S: Copy + Into<f64>, D: Real>(
    src: &[S],
    src_rows: usize,
    src_off: usize,
    dst: &mut [D],
    dst_rows: usize,
    dst_off: usize,
    k: usize,
    n: usize,
    filter: impl Fn(usize, &[f64], &mut [f64]),
) {
    let mut x = vec![0.0; n];
    let mut y = vec![0.0; n];
    for q in 0..k {
        for t in 0..n {
            x[t] = src[t * src_rows + src_off + q].into();
        }
        filter(q, &x, &mut y);
        for t in 0..n {
            dst[t * dst_rows + dst_off + q] = D::from_f64(y[t]);
        }
    }
}

/// `y[t] = Σ_m p[m] x[t + L − m]` (zero outside), `L = (len p − 1) / 2`.
fn attack_forward(p: &[f32], x: &[f64], y: &mut [f64]) {
    let (n, l) = (x.len() as isize, (p.len() / 2) as isize);
    for t in 0..n {
        let mut s = 0.0;
        for (m, &pm) in p.iter().enumerate() {
            let src = t + l - m as isize;
            if (0..n).contains(&src) {
                s += f64::from(pm) * x[src as usize];
            }
        }
        y[t as usize] = s;
    }
}

/// The adjoint of [`attack_forward`]: `y[τ] = Σ_m p[m] g[τ − L + m]`.
fn attack_adjoint(p: &[f32], g: &[f64], y: &mut [f64]) {
    let (n, l) = (g.len() as isize, (p.len() / 2) as isize);
    for t in 0..n {
        let mut s = 0.0;
        for (m, &pm) in p.iter().enumerate() {
            let src = t - l + m as isize;
            if (0..n).contains(&src) {
                s += f64::from(pm) * g[src as usize];
            }
        }
        y[t as usize] = s;
    }
}

/// `y[t] = Σ_{j≥0} e^{−αj} x[t − j]`, by `y[t] = e^{−α} y[t−1] + x[t]`.
fn decay_forward(alpha: f32, x: &[f64], y: &mut [f64]) {
    let r = (-f64::from(alpha)).exp();
    let mut acc = 0.0;
    for (yt, &xt) in y.iter_mut().zip(x) {
        acc = r * acc + xt;
        *yt = acc;
    }
}

/// The adjoint of [`decay_forward`]: `y[τ] = Σ_{j≥0} e^{−αj} g[τ + j]`.
fn decay_adjoint(alpha: f32, g: &[f64], y: &mut [f64]) {
    let r = (-f64::from(alpha)).exp();
    let mut acc = 0.0;
    for (yt, &gt) in y.iter_mut().zip(g).rev() {
        acc = r * acc + gt;
        *yt = acc;
    }
}

/// `y[t] = Σ_{j≥0} j e^{−αj} x[t − j]` (the decay activation's derivative in
/// α, negated), by `y[t] = e^{−α} (y[t−1] + H^d[t−1])`.
fn decay_weighted(alpha: f32, x: &[f64], y: &mut [f64]) {
    let r = (-f64::from(alpha)).exp();
    let (mut acc, mut decayed) = (0.0, 0.0);
    for (yt, &xt) in y.iter_mut().zip(x) {
        acc = r * (acc + decayed);
        decayed = r * decayed + xt;
        *yt = acc;
    }
}

/// Fits the onset activations of a spectrogram on fixed parameters
/// (transcription; [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct OnsetRegression {
    /// Multiplicative updates. Default 50, as in the authors' code.
    pub iterations: usize,
    /// `(s_0, s_1)` of the annealed sparsity exponent. Default `(1, 1.04)`,
    /// as in the authors' code; `(1, 1)` gives plain KL updates.
    pub sparsity: (f64, f64),
    /// Seed of the random initial H. Default 0.
    pub seed: u64,
    /// Frames whose every bin is below this are set to it (as
    /// [`super::ConvolutiveRegression::silence_floor`]). Default 1e-10.
    pub silence_floor: f64,
    /// Record the loss before every update in [`FitInfo::loss_history`].
    /// Default false.
    pub track_loss: bool,
}

impl Default for OnsetRegression {
    fn default() -> Self {
        OnsetRegression { iterations: 50, sparsity: (1.0, 1.04), seed: 0, silence_floor: 1e-10, track_loss: false }
    }
}

impl OnsetRegression {
    /// The onset activations H (K × N) of `spectrogram` (F × N magnitudes)
    /// for frames `first_frame ..` of a recording (which fixes the random
    /// initial H, as in [`super::ConvolutiveRegression::fit_at`]).
    pub fn fit_at(
        &self,
        spectrogram: &Matrix<f64>,
        params: &AttackDecayParams,
        first_frame: usize,
    ) -> Result<(Matrix<f64>, FitInfo)> {
        params.validate()?;
        if spectrogram.rows != params.n_bins {
            return Err(Error::invalid_input(format!(
                "spectrogram has {} frequency bins but the attack/decay model has {}",
                spectrogram.rows, params.n_bins
            )));
        }
        let started = std::time::Instant::now();
        let (k, n) = (params.n_notes, spectrogram.cols);
        let mut m = spectrogram.clone();
        floor_silent_frames(&mut m, self.silence_floor);
        let m = m.map(|x| x as f32);
        let mut spectra = params.spectra.clone();
        spectra.iter_mut().filter(|x| f64::from(**x) < TEMPLATE_FLOOR).for_each(|x| *x = 0.0);
        let mut h = random_activations(self.seed, k, n, first_frame).map(|x| x as f32);
        // The denominator: the adjoint applied to Σ_f [A D][f, r], constant in t.
        let sums: Vec<f32> =
            spectra.chunks(params.n_bins).map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() as f32).collect();
        let ones: Vec<f32> = (0..n).flat_map(|_| sums.iter().copied()).collect();
        let denominator = params.unstack(&ones, n);
        let mut stacked = vec![0.0f32; 2 * k * n];
        let mut info = FitInfo::default();
        let floor = ACTIVATION_FLOOR as f32;
        for it in 0..self.iterations {
            params.stack(&h.data, n, &mut stacked);
            let (g, loss) = kl_ratio_products(&spectra, 2 * k, &stacked, &m, self.track_loss);
            info.loss_history.extend(loss);
            let numerator = params.unstack(&g, n);
            let (s0, s1) = self.sparsity;
            let exponent = (s0 + (s1 - s0) * (it + 1) as f64 / self.iterations as f64) as f32;
            for ((x, &num), &den) in h.data.iter_mut().zip(&numerator).zip(&denominator) {
                if *x == 0.0 || den <= 0.0 {
                    continue;
                }
                let mut v = *x * (num / den);
                if exponent != 1.0 {
                    v = v.powf(exponent);
                }
                *x = if v < floor { 0.0 } else { v };
            }
            info.iterations += 1;
        }
        info.iteration_seconds = started.elapsed().as_secs_f64();
        info.flops = 2.0 * 2.0 * (params.n_bins * 2 * k * n) as f64 * self.iterations as f64;
        if h.data.iter().any(|x| !x.is_finite()) {
            return Err(Error::internal("the attack/decay activations became non-finite"));
        }
        Ok((h.map(f64::from), info))
    }
}

/// Learns one note's parameters from its isolated recording ([module
/// docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct NoteTraining {
    /// Rounds of updates. Default 50, as in the authors' code.
    pub iterations: usize,
    /// `L`: the envelope has `2L + 1` frames. Default 4 (`⌊4096 / 882⌋`, the
    /// authors' choice for this STFT).
    pub half_envelope: usize,
    /// Frames kept after the onset. Default 175 (3.5 s at a 20 ms hop).
    pub frames_after_onset: usize,
    /// Seed of the random initial decay spectrum. Default 0.
    pub seed: u64,
}

impl Default for NoteTraining {
    fn default() -> Self {
        NoteTraining { iterations: 50, half_envelope: 4, frames_after_onset: 175, seed: 0 }
    }
}

/// The frame of the largest rise of the frames' L1 norm: the onset of an
/// isolated note.
pub fn onset_frame(spectrogram: &Matrix<f64>) -> usize {
    let norms: Vec<f64> = (0..spectrogram.cols).map(|t| spectrogram.col(t).iter().sum()).collect();
    (1..norms.len()).max_by(|&a, &b| (norms[a] - norms[a - 1]).total_cmp(&(norms[b] - norms[b - 1]))).unwrap_or(0)
}

/// `R = M ⊘ V` for the rank-two model of one note, `V = A H^a + D H^d`,
/// floored at [`MODEL_FLOOR`], written into `r`; returns the loss
/// `D_KL(M | V)` when `want_loss` (0 otherwise: the logarithms are the
/// costly part).
fn note_ratio(
    m: &Matrix<f64>,
    a: &[f64],
    ha: &[f64],
    d: &[f64],
    hd: &[f64],
    r: &mut Matrix<f64>,
    want_loss: bool,
) -> f64 {
    let mut loss = 0.0;
    for t in 0..m.cols {
        let (x, out) = (m.col(t), r.col_mut(t));
        for f in 0..m.rows {
            let v = (a[f] * ha[t] + d[f] * hd[t]).max(MODEL_FLOOR);
            if want_loss {
                loss += super::Beta::KL.divergence(x[f], v);
            }
            out[f] = x[f] / v;
        }
    }
    loss
}

/// `Σ_t R[f, t] · w[t]` for each bin.
fn weighted_bins(r: &Matrix<f64>, w: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; r.rows];
    for t in 0..r.cols {
        if w[t] != 0.0 {
            out.iter_mut().zip(r.col(t)).for_each(|(o, &x)| *o += x * w[t]);
        }
    }
    out
}

/// `Σ_f s[f] · R[f, t]` for each frame.
fn weighted_frames(r: &Matrix<f64>, s: &[f64]) -> Vec<f64> {
    (0..r.cols).map(|t| r.col(t).iter().zip(s).map(|(x, y)| x * y).sum()).collect()
}

/// What training one note gave.
#[derive(Debug, Clone)]
pub struct NoteFit {
    /// The note's parameters (K = 1).
    pub params: AttackDecayParams,
    /// The onset frame the spike was put at.
    pub onset: usize,
    /// `D_KL` after each round.
    pub loss_history: Vec<f64>,
}

impl NoteTraining {
    /// Trains on the magnitude spectrogram of one isolated note.
    pub fn train(&self, spectrogram: &Matrix<f64>) -> Result<NoteFit> {
        if spectrogram.cols < 2 {
            return Err(Error::invalid_input("the note is too short to train on (fewer than 2 frames)"));
        }
        let onset = onset_frame(spectrogram);
        let n = spectrogram.cols.min(onset + self.frames_after_onset);
        let f_len = spectrogram.rows;
        let m = Matrix::from_column_major(f_len, n, spectrogram.data[..f_len * n].to_vec())?;
        let mut h = vec![0.0; n];
        h[onset] = 0.99;
        let mut rng = SplitMix64::new(self.seed);
        let mut a = vec![1.0; f_len];
        let mut d: Vec<f64> = (0..f_len).map(|_| rng.next_unit()).collect();
        let mut alpha = 1.0f32;
        let mut p = vec![1.0f32; 2 * self.half_envelope + 1];
        let (mut ha, mut hd, mut he) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        attack_forward(&p, &h, &mut ha);
        decay_forward(alpha, &h, &mut hd);
        let mut loss_history = Vec::with_capacity(self.iterations);
        let scale = |v: &mut [f64], num: &[f64], den: f64| {
            if den > 0.0 {
                v.iter_mut().zip(num).for_each(|(x, &g)| *x = (*x * g / den).max(0.0));
            }
        };
        // The ratio M / M̂ of the current factors, updated after each factor
        // changes; the last one of a round (with its loss) starts the next.
        let mut r = Matrix::zeros(m.rows, m.cols);
        note_ratio(&m, &a, &ha, &d, &hd, &mut r, false);
        for _ in 0..self.iterations {
            scale(&mut d, &weighted_bins(&r, &hd), hd.iter().sum());
            note_ratio(&m, &a, &ha, &d, &hd, &mut r, false);
            scale(&mut a, &weighted_bins(&r, &ha), ha.iter().sum());
            note_ratio(&m, &a, &ha, &d, &hd, &mut r, false);
            decay_weighted(alpha, &h, &mut he);
            let d_sum: f64 = d.iter().sum();
            let gd = weighted_frames(&r, &d);
            let up: f64 = he.iter().map(|e| d_sum * e).sum();
            let down: f64 = he.iter().zip(&gd).map(|(e, g)| e * g).sum();
            if up > 0.0 && down > 0.0 {
                alpha = (f64::from(alpha) * up / down) as f32;
            }
            decay_forward(alpha, &h, &mut hd);
            note_ratio(&m, &a, &ha, &d, &hd, &mut r, false);
            let ga = weighted_frames(&r, &a);
            let a_sum: f64 = a.iter().sum();
            let l = self.half_envelope as isize;
            let new_p: Vec<f64> = (0..p.len())
                .map(|mi| {
                    let (mut num, mut den) = (0.0, 0.0);
                    for t in 0..n {
                        let src = t as isize - l + mi as isize;
                        if h[t] != 0.0 && (0..n as isize).contains(&src) {
                            num += h[t] * ga[src as usize];
                            den += h[t] * a_sum;
                        }
                    }
                    if den > 0.0 {
                        f64::from(p[mi]) * num / den
                    } else {
                        f64::from(p[mi])
                    }
                })
                .collect();
            let top = new_p.iter().copied().fold(0.0, f64::max);
            if top > 0.0 {
                p = new_p.iter().map(|&x| (x / top) as f32).collect();
            }
            attack_forward(&p, &h, &mut ha);
            loss_history.push(note_ratio(&m, &a, &ha, &d, &hd, &mut r, true));
        }
        let mut spectra: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        spectra.extend(d.iter().map(|&x| x as f32));
        let params =
            AttackDecayParams { n_bins: f_len, n_notes: 1, spectra, decay_rates: vec![alpha.max(1e-6)], envelope: p };
        params.validate()?;
        Ok(NoteFit { params, onset, loss_history })
    }
}

/// The model of several notes from their single-note fits, in the order
/// given: their spectra and rates, and the mean of their envelopes.
pub fn combine_notes(notes: &[AttackDecayParams]) -> Result<AttackDecayParams> {
    let first = notes.first().ok_or_else(|| Error::invalid_input("no notes to combine"))?;
    if notes.iter().any(|p| p.n_notes != 1 || p.n_bins != first.n_bins || p.envelope.len() != first.envelope.len()) {
        return Err(Error::internal("single-note fits of different shapes"));
    }
    let mut spectra = Vec::with_capacity(2 * first.n_bins * notes.len());
    for p in notes {
        spectra.extend_from_slice(p.attack(0));
    }
    for p in notes {
        spectra.extend_from_slice(p.decay(0));
    }
    let envelope = (0..first.envelope.len())
        .map(|m| (notes.iter().map(|p| f64::from(p.envelope[m])).sum::<f64>() / notes.len() as f64) as f32)
        .collect();
    Ok(AttackDecayParams {
        n_bins: first.n_bins,
        n_notes: notes.len(),
        spectra,
        decay_rates: notes.iter().map(|p| p.decay_rates[0]).collect(),
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random parameters of `k` notes over `f` bins with a `2l + 1` envelope.
    fn random_params(f: usize, k: usize, l: usize, seed: u64) -> AttackDecayParams {
        let mut g = SplitMix64::new(seed);
        AttackDecayParams {
            n_bins: f,
            n_notes: k,
            spectra: (0..2 * f * k).map(|_| g.next_unit().powi(3) as f32).collect(),
            decay_rates: (0..k).map(|_| (0.02 + 0.3 * g.next_unit()) as f32).collect(),
            envelope: (0..2 * l + 1).map(|_| g.next_unit() as f32).collect(),
        }
    }

    /// `∂V[f, t] / ∂H[k, τ]` straight from the model's definition.
    fn basis(p: &AttackDecayParams, f: usize, t: usize, k: usize, tau: usize) -> f64 {
        let l = p.half_envelope() as isize;
        let lag = t as isize - tau as isize;
        let mut v = 0.0;
        if lag.abs() <= l {
            v += f64::from(p.attack(k)[f]) * f64::from(p.envelope[(lag + l) as usize]);
        }
        if lag >= 0 {
            v += f64::from(p.decay(k)[f]) * (-f64::from(p.decay_rates[k]) * lag as f64).exp();
        }
        v
    }

    #[test]
    fn filters_and_their_adjoints_agree() {
        let mut g = SplitMix64::new(3);
        let n = 37;
        let x: Vec<f64> = (0..n).map(|_| g.next_unit()).collect();
        let y: Vec<f64> = (0..n).map(|_| g.next_unit()).collect();
        let p: Vec<f32> = (0..7).map(|_| g.next_unit() as f32).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
        let (mut fx, mut ay) = (vec![0.0; n], vec![0.0; n]);
        attack_forward(&p, &x, &mut fx);
        attack_adjoint(&p, &y, &mut ay);
        assert!((dot(&fx, &y) - dot(&x, &ay)).abs() < 1e-12);
        decay_forward(0.25, &x, &mut fx);
        decay_adjoint(0.25, &y, &mut ay);
        assert!((dot(&fx, &y) - dot(&x, &ay)).abs() < 1e-12);
        // The recursions against the direct sums.
        let r = (-0.25f64).exp();
        let mut he = vec![0.0; n];
        decay_weighted(0.25, &x, &mut he);
        for t in 0..n {
            let direct: f64 = (0..=t).map(|j| r.powi(j as i32) * x[t - j]).sum();
            let weighted: f64 = (0..=t).map(|j| j as f64 * r.powi(j as i32) * x[t - j]).sum();
            assert!((fx[t] - direct).abs() < 1e-12 && (he[t] - weighted).abs() < 1e-12);
        }
    }

    /// One update of the fast path against the update written from the
    /// model's definition with plain loops (f64), on awkward sizes.
    #[test]
    fn onset_update_matches_a_plain_reference_loop() {
        let (f, k, n, l) = (13, 3, 29, 2);
        let p = random_params(f, k, l, 7);
        let mut g = SplitMix64::new(11);
        let m = Matrix { rows: f, cols: n, data: (0..f * n).map(|_| 0.05 + g.next_unit()).collect() };
        let reg = OnsetRegression { iterations: 1, sparsity: (1.0, 1.0), ..Default::default() };
        let (fast, _) = reg.fit_at(&m, &p, 0).unwrap();
        let h0 = random_activations(0, k, n, 0);
        let model = |f: usize, t: usize| -> f64 {
            (0..k).map(|q| (0..n).map(|tau| basis(&p, f, t, q, tau) * h0.get(q, tau)).sum::<f64>()).sum()
        };
        let r: Vec<f64> =
            (0..n).flat_map(|t| (0..f).map(move |b| (b, t))).map(|(b, t)| m.get(b, t) / model(b, t)).collect();
        for q in 0..k {
            for tau in 0..n {
                let (mut num, mut den) = (0.0, 0.0);
                for t in 0..n {
                    for b in 0..f {
                        let phi = basis(&p, b, t, q, tau);
                        num += r[t * f + b] * phi;
                        den += phi;
                    }
                }
                let expected = h0.get(q, tau) * num / den;
                let got = fast.get(q, tau);
                assert!((got - expected).abs() <= 1e-4 * expected.abs().max(1e-3), "H[{q},{tau}] {got} vs {expected}");
            }
        }
    }

    #[test]
    fn onset_updates_never_increase_the_loss() {
        let (f, k, n) = (40, 5, 130);
        let p = random_params(f, k, 4, 5);
        // A spectrogram the model can explain: sparse onsets plus a little noise.
        let mut g = SplitMix64::new(9);
        let h: Vec<f32> = (0..k * n).map(|_| if g.next_unit() > 0.97 { 3.0 } else { 0.0 }).collect();
        let mut stacked = vec![0.0; 2 * k * n];
        p.stack(&h, n, &mut stacked);
        let mut v = vec![0.0f32; f * n];
        f32::gemm(&mut v, f, n, &p.spectra, false, 2 * k, &stacked);
        let m = Matrix { rows: f, cols: n, data: v.iter().map(|&x| f64::from(x) + 0.01 * g.next_unit()).collect() };
        let reg = OnsetRegression { iterations: 40, sparsity: (1.0, 1.0), track_loss: true, ..Default::default() };
        let (_, info) = reg.fit_at(&m, &p, 0).unwrap();
        assert_eq!(info.loss_history.len(), 40);
        for pair in info.loss_history.windows(2) {
            assert!(pair[1] <= pair[0] * (1.0 + 1e-5), "{pair:?}");
        }
        assert!(info.loss_history[39] < 0.2 * info.loss_history[0], "{:?}", info.loss_history);
    }

    use super::super::kernels::Real;

    /// A note made by the model itself: training finds its onset, its decay
    /// rate and a fit far better than where it started.
    #[test]
    fn training_recovers_a_synthetic_note() {
        let (f, n, onset) = (30, 90, 12);
        let mut truth = random_params(f, 1, 4, 21);
        truth.decay_rates[0] = 0.06;
        truth.envelope = vec![0.05, 0.1, 0.3, 0.7, 1.0, 0.6, 0.3, 0.1, 0.05];
        let mut h = vec![0.0f32; n];
        h[onset] = 0.99;
        let mut stacked = vec![0.0; 2 * n];
        truth.stack(&h, n, &mut stacked);
        let mut v = vec![0.0f32; f * n];
        f32::gemm(&mut v, f, n, &truth.spectra, false, 2, &stacked);
        let m = Matrix { rows: f, cols: n, data: v.iter().map(|&x| f64::from(x) + 1e-6).collect() };
        let fit = NoteTraining { iterations: 200, ..Default::default() }.train(&m).unwrap();
        assert_eq!(fit.onset, onset);
        let alpha = fit.params.decay_rates[0];
        assert!((alpha - 0.06).abs() < 0.01, "decay rate {alpha}");
        let (first, last) = (fit.loss_history[0], *fit.loss_history.last().unwrap());
        let total: f64 = m.data.iter().sum();
        assert!(last < 0.01 * first && last < 1e-2 * total, "loss {first} -> {last} (data sum {total})");
        assert_eq!(fit.params.envelope.iter().copied().fold(0.0, f32::max), 1.0);
    }

    #[test]
    fn notes_combine_into_one_model_and_bad_shapes_are_refused() {
        let a = random_params(6, 1, 1, 1);
        let b = random_params(6, 1, 1, 2);
        let both = combine_notes(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((both.n_notes, both.decay(1), both.attack(0)), (2, b.decay(0), a.attack(0)));
        assert!((both.envelope[1] - (a.envelope[1] + b.envelope[1]) / 2.0).abs() < 1e-6);
        assert!(combine_notes(&[a, random_params(7, 1, 1, 3)]).is_err());
        let m = Matrix::zeros(5, 10);
        assert!(OnsetRegression::default().fit_at(&m, &both, 0).is_err());
    }
}
