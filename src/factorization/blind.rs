//! Blind (unsupervised) decompositions of a spectrogram: the analyses of the
//! authors' tutorial that motivate the semi-supervised method, as a tool.
//!
//! # Blind NMF and CNMF
//!
//! [`BlindCnmf`] factorises a magnitude spectrogram `M` (F × N) into `R`
//! components learned from `M` alone, with the Kullback–Leibler divergence
//! `D(M | M̂) = Σ M log(M/M̂) − M + M̂`:
//!
//! - τ = 1 is NMF, `M̂ = W H` (W F × R, H R × N), fitted by the multiplicative
//!   updates of Lee & Seung (2001, eq. 5)
//!   `H ← H ⊙ (Wᵀ (M ⊘ M̂)) ⊘ (Wᵀ 1)`, then `W ← W ⊙ ((M ⊘ M̂) Hᵀ) ⊘ (1 Hᵀ)`;
//! - τ > 1 is convolutive NMF (Smaragdis 2004),
//!   `M̂[f,t] = Σ_q Σ_{i<τ} W[f,i,q] H[q,t−i]`, with the MM updates of Fagot,
//!   Wendt, Févotte & Smaragdis (2019) given in the [module docs](super)
//!   (for τ = 1 they are Lee & Seung's).
//!
//! Each iteration updates H, then W (the model recomputed in between), then
//! rescales every template to unit L1 norm, `λ_q = Σ_{f,i} W[f,i,q]`,
//! `W[:,:,q] /= λ_q`, `H[q,:] *= λ_q` (the model is unchanged). Each update
//! is a majorisation–minimisation step, so the loss never increases (up to
//! the floors of [`super::kernels`], far below rounding). The products are
//! those of [`CnmfKernel`] in f64. The start is seeded-random, so a run is
//! reproducible; like any NMF the problem is not convex, and another seed
//! can give another local minimum.
//!
//! # Best rank-one approximations
//!
//! An isolated note's spectrogram is close to rank one (the tutorial's first
//! observation). Two closed forms give the best rank-one `M ≈ w hᵀ`:
//!
//! - in the Frobenius norm, `σ₁ u₁ v₁ᵀ` from the leading singular triplet
//!   (Eckart & Young 1936): [`rank_one_frobenius`], by faer's SVD;
//! - in KL, `(M 1)(1ᵀ M) / (1ᵀ M 1)`, the row sums times the column sums
//!   over the total: [`rank_one_kl`]. (Setting the gradient of
//!   `Σ_{f,t} w_f h_t − M[f,t] log(w_f h_t)` to zero gives
//!   `w_f Σ_t h_t = Σ_t M[f,t]` and `h_t Σ_f w_f = Σ_f M[f,t]`, solved by the
//!   marginals; KL with a rank-one model is the independence model of a
//!   contingency table.)
//!
//! # Ordering by pitch
//!
//! Blind components come in no order; [`order_by_pitch`] sorts them by the
//! fundamental frequency [`estimate_fundamental`] finds in each spectrum, as
//! the tutorial does before plotting (components with no estimate last).
//!
//! References: D. D. Lee & H. S. Seung, "Algorithms for non-negative matrix
//! factorization", NIPS 2001. P. Smaragdis, "Non-negative matrix factor
//! deconvolution; extraction of multiple sound sources from monophonic
//! inputs", ICA 2004. A. Fagot, H. Wendt, C. Févotte & P. Smaragdis,
//! ICASSP 2019. C. Eckart & G. Young, "The approximation of one matrix by
//! another of lower rank", Psychometrika 1936. J. E. Cohen et al., the
//! tutorial "Automatic Music Transcription" (in `shared/seeds/`).

use super::kernels::{CnmfKernel, SPECTROGRAM_FLOOR};
use super::{Beta, ConvTemplates, Matrix, SplitMix64};
use crate::{Error, Result};

/// Parameters of a blind KL NMF (τ = 1) or CNMF (τ > 1).
#[derive(Debug, Clone, PartialEq)]
pub struct BlindCnmf {
    /// R, the number of components. Default 7 (the tutorial's first
    /// example: six notes and the hammer).
    pub rank: usize,
    /// τ, frames per template: 1 for NMF (the default), e.g. 10 for CNMF.
    pub tau: usize,
    /// Iterations (one H and one W update each). Default 200.
    pub iterations: usize,
    /// Seed of the random start. Default 0.
    pub seed: u64,
}

impl Default for BlindCnmf {
    fn default() -> Self {
        BlindCnmf { rank: 7, tau: 1, iterations: 200, seed: 0 }
    }
}

/// The factors of a blind decomposition.
#[derive(Debug, Clone)]
pub struct Decomposition {
    /// `W`, F × τ × R, each template of unit L1 norm.
    pub templates: ConvTemplates<f64>,
    /// `H`, R × N.
    pub activations: Matrix<f64>,
    /// `D_KL(M | M̂)` before each iteration, then after the last one.
    pub loss_history: Vec<f64>,
}

impl Decomposition {
    /// The final loss `D_KL(M | M̂)`.
    pub fn loss(&self) -> f64 {
        self.loss_history.last().copied().unwrap_or(f64::NAN)
    }

    /// The model `M̂` (F × N).
    pub fn reconstruct(&self) -> Matrix<f64> {
        CnmfKernel::new(self.templates.clone()).reconstruct(&self.activations)
    }

    /// The spectrum of component `q`: its template summed over its τ frames
    /// (F values).
    pub fn spectrum(&self, q: usize) -> Vec<f64> {
        let t = &self.templates;
        (0..t.n_bins).map(|f| (0..t.tau).map(|i| t.get(f, i, q)).sum()).collect()
    }

    /// Component `q`'s part of the model inside the excerpt,
    /// `Σ_{f,t} Σ_i W[f,i,q] H[q,t−i]` over frames `t < N`: how much of
    /// `M̂` it explains. (Not `Σ_t H[q,t]`: with τ > 1, activations in the
    /// last τ − 1 frames reach past the excerpt's end.)
    pub fn contribution(&self, q: usize) -> f64 {
        let t = &self.templates;
        let n = self.activations.cols;
        let slice_sums: Vec<f64> = (0..t.tau).map(|i| t.slice(q, i).iter().sum()).collect();
        (0..n).map(|c| self.activations.get(q, c) * slice_sums[..t.tau.min(n - c)].iter().sum::<f64>()).sum()
    }

    /// The same decomposition with its components reordered: component `k`
    /// of the result is component `order[k]` of `self`.
    pub fn permuted(&self, order: &[usize]) -> Decomposition {
        let t = &self.templates;
        let (n, r) = (self.activations.cols, self.activations.rows);
        assert!(order.len() == r && (0..r).all(|q| order.contains(&q)), "not a permutation");
        let mut data = Vec::with_capacity(t.data.len());
        for &q in order {
            data.extend_from_slice(t.template(q));
        }
        let mut h = Matrix::zeros(r, n);
        for (k, &q) in order.iter().enumerate() {
            for c in 0..n {
                h.set(k, c, self.activations.get(q, c));
            }
        }
        Decomposition {
            templates: ConvTemplates { data, ..t.clone() },
            activations: h,
            loss_history: self.loss_history.clone(),
        }
    }
}

impl BlindCnmf {
    /// Factorises `spectrogram` (F × N, nonnegative).
    ///
    /// Start: `W` uniform in (0, 1], each template rescaled to unit L1 norm;
    /// `H` uniform in (0, 1] times `2 μ / R`, with `μ` the mean column sum
    /// of `M`, so that the first model has about the data's level. Errors
    /// when `rank` or `tau` is 0, when the spectrogram has fewer than τ
    /// frames, or when it is all zero.
    pub fn fit(&self, spectrogram: &Matrix<f64>) -> Result<Decomposition> {
        let (f_len, n, r, tau) = (spectrogram.rows, spectrogram.cols, self.rank, self.tau);
        if r == 0 || tau == 0 {
            return Err(Error::invalid_input("the rank and tau must be at least 1"));
        }
        if n < tau || f_len == 0 {
            return Err(Error::invalid_input(format!(
                "the excerpt has {n} frames, fewer than tau = {tau}: choose a longer excerpt or a smaller tau"
            )));
        }
        if spectrogram.data.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(Error::invalid_input("the spectrogram must be finite and nonnegative"));
        }
        let mut m = spectrogram.clone();
        m.data.iter_mut().filter(|x| **x < SPECTROGRAM_FLOOR).for_each(|x| *x = 0.0);
        let total: f64 = m.data.iter().sum();
        if total <= 0.0 {
            return Err(Error::invalid_input("the excerpt is silent: there is nothing to decompose"));
        }
        let mut rng = SplitMix64::new(self.seed);
        let w0: Vec<f64> = (0..f_len * tau * r).map(|_| rng.next_unit()).collect();
        let level = 2.0 * total / n as f64 / r as f64;
        let mut h = Matrix { rows: r, cols: n, data: (0..r * n).map(|_| rng.next_unit() * level).collect() };
        let mut kernel = CnmfKernel::new(ConvTemplates::new(f_len, tau, r, w0)?);
        // The start's templates sum to about F·τ/2; rescaling moves that
        // into H, so undo it to keep H at the data's level.
        let start_norm = (f_len * tau) as f64 / 2.0;
        h.data.iter_mut().for_each(|x| *x /= start_norm);
        kernel.normalize(&mut h);

        let mut loss_history = Vec::with_capacity(self.iterations + 1);
        for _ in 0..self.iterations {
            let stats = kernel.update_activations(&m, &mut h, Beta::KL, true);
            loss_history.extend(stats.loss_before);
            kernel.update_templates(&m, &h, Beta::KL);
            kernel.normalize(&mut h);
        }
        let model = kernel.reconstruct(&h);
        loss_history.push(super::beta_divergence(&m.data, &model.data, Beta::KL));
        let templates = kernel.into_templates();
        if templates.data.iter().chain(&h.data).any(|x| !x.is_finite()) {
            return Err(Error::internal("the decomposition diverged (non-finite factors)"));
        }
        Ok(Decomposition { templates, activations: h, loss_history })
    }
}

/// A rank-one approximation `M ≈ w hᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct RankOne {
    /// The spectrum, F values.
    pub w: Vec<f64>,
    /// The activation, N values.
    pub h: Vec<f64>,
}

impl RankOne {
    /// `w hᵀ` (F × N).
    pub fn reconstruct(&self) -> Matrix<f64> {
        let mut out = Matrix::zeros(self.w.len(), self.h.len());
        for (t, &ht) in self.h.iter().enumerate() {
            for (y, &wf) in out.col_mut(t).iter_mut().zip(&self.w) {
                *y = wf * ht;
            }
        }
        out
    }
}

/// The best rank-one approximation of `m` in KL divergence:
/// `w = M 1 / √s`, `h = Mᵀ 1 / √s` with `s = 1ᵀ M 1` (see the
/// [module docs](self)). An all-zero `m` gives zeros.
pub fn rank_one_kl(m: &Matrix<f64>) -> RankOne {
    let total: f64 = m.data.iter().sum();
    let scale = if total > 0.0 { 1.0 / total.sqrt() } else { 0.0 };
    let mut w = vec![0.0; m.rows];
    let mut h = vec![0.0; m.cols];
    for t in 0..m.cols {
        let col = m.col(t);
        h[t] = col.iter().sum::<f64>() * scale;
        for (wf, &x) in w.iter_mut().zip(col) {
            *wf += x;
        }
    }
    w.iter_mut().for_each(|x| *x *= scale);
    RankOne { w, h }
}

/// The best rank-one approximation of `m` in the Frobenius norm,
/// `σ₁ u₁ v₁ᵀ` (Eckart–Young), with `w = √σ₁ u₁` and `h = √σ₁ v₁`, signs
/// chosen so that `Σ w ≥ 0` (for a nonnegative `m` the leading singular
/// vectors are nonnegative, Perron–Frobenius). Errors if the SVD does not
/// converge.
pub fn rank_one_frobenius(m: &Matrix<f64>) -> Result<RankOne> {
    if m.rows == 0 || m.cols == 0 {
        return Ok(RankOne { w: vec![0.0; m.rows], h: vec![0.0; m.cols] });
    }
    let a = faer::MatRef::from_column_major_slice(&m.data, m.rows, m.cols);
    let svd = a.thin_svd().map_err(|e| Error::internal(format!("the SVD did not converge: {e:?}")))?;
    let sigma = svd.S().column_vector()[0];
    let (u, v) = (svd.U().col(0), svd.V().col(0));
    let sign = if u.iter().sum::<f64>() < 0.0 { -1.0 } else { 1.0 };
    let root = sigma.max(0.0).sqrt();
    Ok(RankOne { w: u.iter().map(|&x| sign * root * x).collect(), h: v.iter().map(|&x| sign * root * x).collect() })
}

/// `‖M − M̂‖_F / ‖M‖_F`, the relative Frobenius error (0 for a zero `M`
/// matched exactly).
pub fn relative_frobenius_error(m: &Matrix<f64>, model: &Matrix<f64>) -> f64 {
    let err: f64 = m.data.iter().zip(&model.data).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f64 = m.data.iter().map(|a| a * a).sum();
    if norm > 0.0 {
        (err / norm).sqrt()
    } else {
        err.sqrt()
    }
}

/// `D_KL(M | M̂)`, the model floored as everywhere in [`super`].
pub fn kl_divergence(m: &Matrix<f64>, model: &Matrix<f64>) -> f64 {
    super::beta_divergence(&m.data, &model.data, Beta::KL)
}

/// Harmonics summed by [`estimate_fundamental`].
pub const HARMONICS: usize = 10;

/// Weight of harmonic `h` (from 1) relative to the previous one in
/// [`estimate_fundamental`].
pub const HARMONIC_DECAY: f64 = 0.8;

/// The fundamental frequency of a spectrum (`spectrum[f]` at `f · bin_hz`
/// Hz), by weighted harmonic summation on the 88 piano pitches (A0 to C8,
/// equal temperament, A4 = 440 Hz): the candidate `f0` maximising
/// `Σ_{h=1}^{10} 0.8^(h−1) · peak(h f0)`, with `peak(x)` the largest value
/// within a quarter tone of `x` (at least the nearest bin), harmonics above
/// the last bin left out. The decaying weights make a subharmonic `f0/2`
/// (which collects the same peaks at even `h`, with smaller weights) score
/// lower than `f0` (Klapuri 2006 uses such weights for the same reason).
/// `None` for a spectrum without positive values. Meant for ordering
/// components, not for transcription.
pub fn estimate_fundamental(spectrum: &[f64], bin_hz: f64) -> Option<f64> {
    if !spectrum.iter().any(|&x| x > 0.0) || bin_hz <= 0.0 {
        return None;
    }
    let last = spectrum.len() - 1;
    let quarter_tone = 2f64.powf(1.0 / 24.0);
    let peak = |x: f64| -> Option<f64> {
        let centre = (x / bin_hz).round() as usize;
        if centre > last {
            return None;
        }
        let lo = ((x / quarter_tone / bin_hz).ceil() as usize).min(centre);
        let hi = ((x * quarter_tone / bin_hz).floor() as usize).clamp(centre, last);
        Some(spectrum[lo..=hi].iter().copied().fold(0.0, f64::max))
    };
    let mut best: Option<(f64, f64)> = None;
    for pitch in 21..=108u8 {
        let f0 = midi_frequency(pitch as f64);
        let mut salience = 0.0;
        let mut weight = 1.0;
        for h in 1..=HARMONICS {
            match peak(h as f64 * f0) {
                Some(p) => salience += weight * p,
                None => break,
            }
            weight *= HARMONIC_DECAY;
        }
        if best.is_none_or(|(s, _)| salience > s) {
            best = Some((salience, f0));
        }
    }
    best.filter(|(s, _)| *s > 0.0).map(|(_, f0)| f0)
}

/// The frequency of MIDI pitch `p` (A4 = 69 = 440 Hz).
pub fn midi_frequency(p: f64) -> f64 {
    440.0 * 2f64.powf((p - 69.0) / 12.0)
}

/// The MIDI pitch of frequency `hz` (fractional).
pub fn frequency_midi(hz: f64) -> f64 {
    69.0 + 12.0 * (hz / 440.0).log2()
}

/// Sorts `d`'s components by [`estimate_fundamental`] of their spectra,
/// lowest first, components without an estimate last (ties keep their
/// order); returns the sorted decomposition and each component's
/// fundamental in Hz.
pub fn order_by_pitch(d: &Decomposition, bin_hz: f64) -> (Decomposition, Vec<Option<f64>>) {
    let f0: Vec<Option<f64>> = (0..d.activations.rows).map(|q| estimate_fundamental(&d.spectrum(q), bin_hz)).collect();
    let mut order: Vec<usize> = (0..f0.len()).collect();
    order.sort_by(|&a, &b| match (f0[a], f0[b]) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let sorted_f0 = order.iter().map(|&q| f0[q]).collect();
    (d.permuted(&order), sorted_f0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded random nonnegative F × N matrix.
    fn random_matrix(f: usize, n: usize, seed: u64) -> Matrix<f64> {
        let mut rng = SplitMix64::new(seed);
        Matrix { rows: f, cols: n, data: (0..f * n).map(|_| rng.next_unit()).collect() }
    }

    /// A harmonic spectrum with fundamental `f0` (partials decaying as 1/h).
    fn harmonic_spectrum(f0: f64, bins: usize, bin_hz: f64) -> Vec<f64> {
        let mut s = vec![0.0; bins];
        for h in 1..=12 {
            let b = (h as f64 * f0 / bin_hz).round() as usize;
            if b < bins {
                s[b] += 1.0 / h as f64;
            }
        }
        s
    }

    /// Two notes with their own spectra and activations, summed: a blind
    /// NMF of it has something to find.
    fn two_note_mixture(bins: usize, n: usize, bin_hz: f64) -> Matrix<f64> {
        let (a, b) = (harmonic_spectrum(220.0, bins, bin_hz), harmonic_spectrum(330.0, bins, bin_hz));
        let mut m = Matrix::zeros(bins, n);
        for t in 0..n {
            let ha = if t % 20 < 10 { (-((t % 20) as f64) / 4.0).exp() } else { 0.0 };
            let hb = if (t + 7) % 15 < 8 { (-(((t + 7) % 15) as f64) / 3.0).exp() } else { 0.0 };
            for f in 0..bins {
                m.set(f, t, a[f] * ha + b[f] * hb);
            }
        }
        m
    }

    #[test]
    fn kl_loss_never_increases_nmf_and_cnmf() {
        let m = two_note_mixture(200, 60, 10.0);
        for (rank, tau) in [(1, 1), (2, 1), (3, 1), (2, 4), (3, 5)] {
            let d = BlindCnmf { rank, tau, iterations: 40, seed: 3 }.fit(&m).unwrap();
            assert_eq!(d.loss_history.len(), 41);
            for w in d.loss_history.windows(2) {
                assert!(w[1] <= w[0] * (1.0 + 1e-12), "rank {rank}, tau {tau}: {} then {}", w[0], w[1]);
            }
            assert!(d.loss() < 0.5 * d.loss_history[0], "rank {rank}, tau {tau}: {:?}", d.loss_history);
            // Unit-norm templates, and the history's last value is the
            // loss of the returned factors.
            for q in 0..rank {
                let s: f64 = d.templates.template(q).iter().sum();
                assert!((s - 1.0).abs() < 1e-9, "{s}");
            }
            assert!((kl_divergence(&m, &d.reconstruct()) - d.loss()).abs() <= 1e-9 * d.loss());
            // The components' contributions add up to the model.
            let total: f64 = (0..rank).map(|q| d.contribution(q)).sum();
            let model: f64 = d.reconstruct().data.iter().sum();
            assert!((total - model).abs() <= 1e-9 * model, "{total} {model}");
        }
        // On random data too, at awkward sizes.
        let m = random_matrix(33, 17, 9);
        let d = BlindCnmf { rank: 4, tau: 3, iterations: 30, seed: 1 }.fit(&m).unwrap();
        for w in d.loss_history.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-12));
        }
    }

    #[test]
    fn blind_nmf_separates_two_notes_and_orders_them_by_pitch() {
        let bin_hz = 10.0;
        let m = two_note_mixture(400, 80, bin_hz);
        let d = BlindCnmf { rank: 2, tau: 1, iterations: 300, seed: 5 }.fit(&m).unwrap();
        let (sorted, f0) = order_by_pitch(&d, bin_hz);
        let f0: Vec<f64> = f0.into_iter().map(|x| x.unwrap()).collect();
        assert!((frequency_midi(f0[0]) - frequency_midi(220.0)).abs() < 0.01, "{f0:?}");
        assert!((frequency_midi(f0[1]) - frequency_midi(330.0)).abs() < 0.6, "{f0:?}");
        // Sorting moved whole components: the model is the same.
        let (a, b) = (d.reconstruct(), sorted.reconstruct());
        assert!(a.data.iter().zip(&b.data).all(|(x, y)| (x - y).abs() <= 1e-12 * x.abs().max(1.0)));
        assert!(relative_frobenius_error(&m, &a) < 0.05, "{}", relative_frobenius_error(&m, &a));
    }

    #[test]
    fn the_same_seed_gives_the_same_factors() {
        let m = random_matrix(20, 15, 2);
        let p = BlindCnmf { rank: 3, tau: 2, iterations: 10, seed: 11 };
        let (a, b) = (p.fit(&m).unwrap(), p.fit(&m).unwrap());
        assert_eq!(a.templates, b.templates);
        assert_eq!(a.activations, b.activations);
        let c = BlindCnmf { seed: 12, ..p }.fit(&m).unwrap();
        assert_ne!(a.activations, c.activations);
    }

    #[test]
    fn bad_parameters_and_silence_are_refused() {
        let m = random_matrix(10, 5, 1);
        assert!(BlindCnmf { rank: 0, ..Default::default() }.fit(&m).is_err());
        assert!(BlindCnmf { tau: 6, ..Default::default() }.fit(&m).is_err());
        assert!(BlindCnmf::default().fit(&Matrix::zeros(10, 5)).is_err());
    }

    #[test]
    fn closed_form_rank_one_kl_beats_every_perturbation() {
        for (f, n, seed) in [(1, 1, 1), (7, 1, 2), (1, 9, 3), (31, 17, 4), (64, 65, 5)] {
            let m = random_matrix(f, n, seed);
            let best = rank_one_kl(&m);
            let best_loss = kl_divergence(&m, &best.reconstruct());
            let mut rng = SplitMix64::new(seed + 100);
            for trial in 0..200 {
                // Multiplicative perturbations of w and h (small and large),
                // and pure rescalings w·c, h/c (which leave the model
                // unchanged: same loss).
                let size = if trial % 2 == 0 { 0.01 } else { 0.5 };
                let w: Vec<f64> = best.w.iter().map(|x| x * (1.0 + size * (rng.next_unit() - 0.5))).collect();
                let h: Vec<f64> = best.h.iter().map(|x| x * (1.0 + size * (rng.next_unit() - 0.5))).collect();
                let loss = kl_divergence(&m, &RankOne { w, h }.reconstruct());
                assert!(loss >= best_loss - 1e-12 * best_loss.abs(), "{f}×{n}: {loss} < {best_loss}");
            }
            // A scaled model is worse: the KL optimum has the data's total.
            let scaled = RankOne { w: best.w.iter().map(|x| x * 1.1).collect(), h: best.h.clone() };
            assert!(kl_divergence(&m, &scaled.reconstruct()) > best_loss);
        }
        // It also matches what many multiplicative updates converge to.
        let m = random_matrix(40, 30, 8);
        let d = BlindCnmf { rank: 1, tau: 1, iterations: 500, seed: 0 }.fit(&m).unwrap();
        let best_loss = kl_divergence(&m, &rank_one_kl(&m).reconstruct());
        assert!(d.loss() >= best_loss - 1e-9 && d.loss() <= best_loss * (1.0 + 1e-6), "{} {best_loss}", d.loss());
    }

    #[test]
    fn svd_rank_one_is_the_best_in_frobenius() {
        for (f, n, seed) in [(1, 1, 1), (5, 1, 2), (1, 6, 3), (127, 33, 4), (40, 129, 5)] {
            let m = random_matrix(f, n, seed);
            let best = rank_one_frobenius(&m).unwrap();
            assert!(best.w.iter().chain(&best.h).all(|&x| x >= -1e-12), "nonnegative factors");
            let fro = |r: &RankOne| {
                let model = r.reconstruct();
                m.data.iter().zip(&model.data).map(|(a, b)| (a - b) * (a - b)).sum::<f64>()
            };
            let best_err = fro(&best);
            // ‖M‖² − σ₁² is the optimal error (Eckart–Young).
            let a = faer::MatRef::from_column_major_slice(&m.data, f, n);
            let s = a.singular_values().unwrap();
            let norm2: f64 = m.data.iter().map(|x| x * x).sum();
            assert!((best_err - (norm2 - s[0] * s[0])).abs() <= 1e-9 * norm2, "{best_err}");
            let mut rng = SplitMix64::new(seed + 7);
            for _ in 0..100 {
                let w: Vec<f64> = best.w.iter().map(|x| x + 0.01 * (rng.next_unit() - 0.5)).collect();
                let h: Vec<f64> = best.h.iter().map(|x| x + 0.01 * (rng.next_unit() - 0.5)).collect();
                assert!(fro(&RankOne { w, h }) >= best_err - 1e-12 * norm2);
            }
            // And the KL closed form is worse in this norm (or equal).
            assert!(fro(&rank_one_kl(&m)) >= best_err - 1e-12 * norm2);
        }
        // An exactly rank-one matrix is recovered.
        let r = RankOne { w: vec![1.0, 2.0, 0.5], h: vec![3.0, 0.0, 1.0, 2.0] };
        let m = r.reconstruct();
        for approx in [rank_one_frobenius(&m).unwrap(), rank_one_kl(&m)] {
            assert!(relative_frobenius_error(&m, &approx.reconstruct()) < 1e-12);
        }
    }

    #[test]
    fn fundamentals_of_harmonic_spectra() {
        let bin_hz = 44100.0 / 8192.0;
        for pitch in [21u8, 33, 45, 57, 60, 69, 81, 93, 100, 108] {
            let f0 = midi_frequency(pitch as f64);
            let s = harmonic_spectrum(f0, 4097, bin_hz);
            let est = estimate_fundamental(&s, bin_hz).unwrap();
            assert!((frequency_midi(est) - pitch as f64).abs() < 0.01, "{pitch}: {est}");
            // A missing fundamental still gives the note, not its octave.
            let mut weak = s.clone();
            let b = (f0 / bin_hz).round() as usize;
            weak[b] *= 0.3;
            let est = estimate_fundamental(&weak, bin_hz).unwrap();
            assert!((frequency_midi(est) - pitch as f64).abs() < 0.01, "{pitch} weak: {est}");
        }
        assert_eq!(estimate_fundamental(&[0.0; 100], 10.0), None);
    }
}
