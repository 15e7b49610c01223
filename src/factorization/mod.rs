//! Convolutive NMF with the β-divergence: the numerical core.
//!
//! # Models
//!
//! NMF (Lee & Seung 2001) approximates a nonnegative spectrogram
//! `M` (F × N: bins × frames) by `M̂ = W H` with `W` (F × K) and `H` (K × N).
//!
//! Convolutive NMF (CNMF, Smaragdis 2004/2006) gives each component `q` a
//! time-frequency *template* `W[:, :, q]` of τ frames:
//!
//! ```text
//! M̂[f, t] = Σ_q Σ_{i=0}^{τ-1} W[f, i, q] · H[q, t - i]      (H[q, s] = 0 for s < 0)
//! ```
//!
//! (Wu, Marmoret & Cohen 2022, eq. 3). NMF is the case τ = 1.
//!
//! # Loss
//!
//! The β-divergence `D_β(M | M̂) = Σ d_β(M[f,t] | M̂[f,t])`, with
//! `d_1(x|y) = x log(x/y) − x + y` (Kullback–Leibler, the paper's choice),
//! `d_0(x|y) = x/y − log(x/y) − 1` (Itakura–Saito), and for other β
//! `d_β(x|y) = (x^β + (β−1) y^β − β x y^(β−1)) / (β(β−1))`.
//!
//! # Updates
//!
//! Multiplicative majorisation–minimisation updates of Fagot, Wendt, Févotte &
//! Smaragdis (ICASSP 2019), with `R = M ⊙ M̂^(β−2)` and `P = M̂^(β−1)`:
//!
//! ```text
//! H[q,t]   ← H[q,t]   · ( Σ_i Σ_f W[f,i,q] R[f,t+i] / Σ_i Σ_f W[f,i,q] P[f,t+i] )^γ
//! W[f,i,q] ← W[f,i,q] · ( Σ_t R[f,t] H[q,t−i]     / Σ_t P[f,t] H[q,t−i]     )^γ
//! ```
//!
//! with γ = 1/(2−β) for β < 1, 1 for 1 ≤ β ≤ 2, 1/(β−1) for β > 2. For KL
//! (β = 1) `P = 1`, so the H denominator is a constant per note (cut by the
//! border in the last τ−1 frames). Each update never increases the loss.
//!
//! # Paths
//!
//! - [`reference`](mod@reference): plain f64 loops, written to be obviously correct; used by
//!   the tests to check everything else.
//! - [`kernels`]: the same updates as large matrix products (faer), in f32 or
//!   f64. `M̂ = W_stack · H̃` with `W_stack` the F × τK matrix of all template
//!   slices and `H̃` the τK × N matrix of H shifted by 0..τ−1 frames; the
//!   H numerator is `W_stackᵀ · R` summed along the shifts. Products are cut
//!   into fixed blocks of columns (or rows) that do not depend on the number
//!   of threads, so results are bit-identical whatever `RAYON_NUM_THREADS`.
//! - [`attack_decay`]: the attack/decay model of Cheng et al. (ISMIR 2016),
//!   a baseline: fitting its onset activations and training it on one note.
//! - [`blind`]: blind NMF and CNMF of an excerpt (unsupervised), and the
//!   closed-form best rank-one approximations (Frobenius and KL): the
//!   tutorial's analyses behind `sscnmf decompose`.
//! - [`adapt`](mod@adapt): the templates adapted to the recording after the
//!   regression, pulled towards the learned ones (`transcribe --adapt`).
//! - [`rank_one_kl`]: template learning's fast path, the rank-one KL updates
//!   fused into one pass over the bins per iteration (f32, SIMD).
//!
//! References: D. D. Lee & H. S. Seung, "Algorithms for non-negative matrix
//! factorization", NIPS 2001. P. Smaragdis, "Non-negative matrix factor
//! deconvolution", ICA 2004. A. Fagot, H. Wendt, C. Févotte & P. Smaragdis,
//! "Majorization-minimization algorithms for convolutive NMF with the
//! beta-divergence", ICASSP 2019. H. Wu, A. Marmoret & J. E. Cohen,
//! "Semi-Supervised Convolutive NMF for Automatic Music Transcription", SMC 2022.

pub mod adapt;
pub mod attack_decay;
pub mod blind;
pub mod kernels;
pub mod rank_one;
pub mod rank_one_kl;
pub mod reference;
pub mod regression;
pub mod sparse;

pub use adapt::Adaptation;
pub use rank_one::{learn_rank_one, RankOneCnmf, RankOneFit};
pub use regression::{ConvolutiveRegression, FastSettings, FitInfo, Precision, SparseSettings};

use crate::{Error, Result};

/// A dense matrix stored column by column: element `(r, c)` is
/// `data[c * rows + r]`. For a spectrogram, rows are frequency bins and
/// columns are frames, so each frame is contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Column-major elements, `rows * cols` of them.
    pub data: Vec<T>,
}

impl<T: Copy + Default> Matrix<T> {
    /// A `rows × cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix { rows, cols, data: vec![T::default(); rows * cols] }
    }

    /// Wraps column-major `data`; errors if its length is not `rows * cols`.
    pub fn from_column_major(rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::internal(format!(
                "matrix of {rows}×{cols} needs {} elements, got {}",
                rows * cols,
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// Element `(r, c)`.
    #[inline]
    pub fn get(&self, r: usize, c: usize) -> T {
        self.data[c * self.rows + r]
    }

    /// Sets element `(r, c)`.
    #[inline]
    pub fn set(&mut self, r: usize, c: usize, v: T) {
        self.data[c * self.rows + r] = v;
    }

    /// Column `c` as a slice.
    #[inline]
    pub fn col(&self, c: usize) -> &[T] {
        &self.data[c * self.rows..(c + 1) * self.rows]
    }

    /// Column `c` as a mutable slice.
    #[inline]
    pub fn col_mut(&mut self, c: usize) -> &mut [T] {
        &mut self.data[c * self.rows..(c + 1) * self.rows]
    }

    /// Converts every element with `f`.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> Matrix<U> {
        Matrix { rows: self.rows, cols: self.cols, data: self.data.iter().map(|&x| f(x)).collect() }
    }
}

/// A set of K convolutive templates, each F bins × τ frames.
///
/// Stored note by note: `W[f, i, q]` is `data[(q * tau + i) * n_bins + f]`.
/// Seen as a matrix this is `W_stack` (F × τK), column `q * tau + i` holding
/// slice `i` of template `q`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTemplates<T> {
    /// F: frequency bins.
    pub n_bins: usize,
    /// τ: frames per template.
    pub tau: usize,
    /// K: number of templates.
    pub n_templates: usize,
    /// The elements, `n_bins * tau * n_templates` of them.
    pub data: Vec<T>,
}

impl<T: Copy + Default> ConvTemplates<T> {
    /// Wraps `data` laid out as described on the type.
    pub fn new(n_bins: usize, tau: usize, n_templates: usize, data: Vec<T>) -> Result<Self> {
        if data.len() != n_bins * tau * n_templates || tau == 0 {
            return Err(Error::internal(format!(
                "templates of {n_bins}×{tau}×{n_templates} need {} elements, got {}",
                n_bins * tau * n_templates,
                data.len()
            )));
        }
        Ok(ConvTemplates { n_bins, tau, n_templates, data })
    }

    /// `W[f, i, q]`.
    #[inline]
    pub fn get(&self, f: usize, i: usize, q: usize) -> T {
        self.data[(q * self.tau + i) * self.n_bins + f]
    }

    /// Slice `i` of template `q` (F values).
    #[inline]
    pub fn slice(&self, q: usize, i: usize) -> &[T] {
        let start = (q * self.tau + i) * self.n_bins;
        &self.data[start..start + self.n_bins]
    }

    /// Template `q` as F·τ contiguous values (slice 0 first).
    #[inline]
    pub fn template(&self, q: usize) -> &[T] {
        let len = self.tau * self.n_bins;
        &self.data[q * len..(q + 1) * len]
    }

    /// The first slice of every template, as an F × K NMF dictionary (the
    /// plain supervised NMF the paper initialises with).
    pub fn first_slices(&self) -> ConvTemplates<T> {
        let mut data = Vec::with_capacity(self.n_bins * self.n_templates);
        for q in 0..self.n_templates {
            data.extend_from_slice(self.slice(q, 0));
        }
        ConvTemplates { n_bins: self.n_bins, tau: 1, n_templates: self.n_templates, data }
    }

    /// Converts every element with `f`.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> ConvTemplates<U> {
        ConvTemplates {
            n_bins: self.n_bins,
            tau: self.tau,
            n_templates: self.n_templates,
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }
}

/// The β of the β-divergence: 0 (Itakura–Saito), 1 (Kullback–Leibler, the
/// paper's choice), 2 (squared Euclidean), or any value in between or above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beta(f64);

impl Beta {
    /// Kullback–Leibler, β = 1.
    pub const KL: Beta = Beta(1.0);

    /// A β-divergence; errors unless β is finite and in [0, 3].
    pub fn new(beta: f64) -> Result<Self> {
        if beta.is_finite() && (0.0..=3.0).contains(&beta) {
            Ok(Beta(beta))
        } else {
            Err(Error::invalid_input(format!("beta must be between 0 and 3, got {beta}")))
        }
    }

    /// The value of β.
    pub fn value(self) -> f64 {
        self.0
    }

    /// Whether this is the Kullback–Leibler divergence.
    pub fn is_kl(self) -> bool {
        self.0 == 1.0
    }

    /// The MM exponent γ(β) of Fagot et al. (2019): 1/(2−β) for β < 1,
    /// 1 for 1 ≤ β ≤ 2, 1/(β−1) for β > 2.
    pub fn mm_exponent(self) -> f64 {
        let b = self.0;
        if b < 1.0 {
            1.0 / (2.0 - b)
        } else if b <= 2.0 {
            1.0
        } else {
            1.0 / (b - 1.0)
        }
    }

    /// `d_β(x | y)` for one pair; `x ≥ 0`, `y > 0`.
    pub fn divergence(self, x: f64, y: f64) -> f64 {
        let b = self.0;
        if b == 1.0 {
            if x > 0.0 {
                x * (x / y).ln() - x + y
            } else {
                y
            }
        } else if b == 0.0 {
            let r = x / y;
            r - r.ln() - 1.0
        } else {
            (x.powf(b) + (b - 1.0) * y.powf(b) - b * x * y.powf(b - 1.0)) / (b * (b - 1.0))
        }
    }
}

impl Default for Beta {
    /// Kullback–Leibler (β = 1), as in the paper.
    fn default() -> Self {
        Beta::KL
    }
}

/// Floor applied to the model `M̂` before dividing by it, so that a model
/// that is exactly zero somewhere (all activations there zero) gives a finite
/// ratio. Small enough to be a normal number in f32.
pub const MODEL_FLOOR: f64 = 1e-12;

/// The β-divergence `D_β(M | M̂)` summed over all entries, `M̂` floored at
/// [`MODEL_FLOOR`]. Summed in f64, column by column, in a fixed order.
pub fn beta_divergence<T: Copy + Into<f64>>(spectrogram: &[T], model: &[T], beta: Beta) -> f64 {
    assert_eq!(spectrogram.len(), model.len());
    spectrogram.iter().zip(model).map(|(&x, &y)| beta.divergence(x.into(), y.into().max(MODEL_FLOOR))).sum()
}

/// A deterministic pseudo-random generator (SplitMix64, Steele, Lea & Flood
/// 2014). Hand-written rather than taken from `rand` because its stream must
/// never change with a dependency's version: the initial activations, and so
/// the output notes, must be byte-identical across builds.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The generator as it is after `draws` draws from `SplitMix64::new(seed)`:
    /// the stream is a counter, so any stretch of it can be started directly.
    pub fn skipped(seed: u64, draws: u64) -> Self {
        SplitMix64(seed.wrapping_add(draws.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in (0, 1].
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_divergence_special_cases_agree_with_the_general_formula() {
        for &(x, y) in &[(1.0, 2.0), (0.3, 0.1), (2.5, 2.5)] {
            let near_kl = Beta(1.0 + 1e-7).divergence(x, y);
            assert!((Beta::KL.divergence(x, y) - near_kl).abs() < 1e-5);
            let near_is = Beta(1e-7).divergence(x, y);
            assert!((Beta(0.0).divergence(x, y) - near_is).abs() < 1e-5);
            let eu = Beta(2.0).divergence(x, y);
            assert!((eu - 0.5 * (x - y) * (x - y)).abs() < 1e-12);
        }
        assert_eq!(Beta::KL.divergence(0.0, 0.5), 0.5);
        assert_eq!(Beta::KL.divergence(2.0, 2.0), 0.0);
    }

    #[test]
    fn mm_exponent_follows_fagot_et_al() {
        assert_eq!(Beta(0.0).mm_exponent(), 0.5);
        assert_eq!(Beta::KL.mm_exponent(), 1.0);
        assert_eq!(Beta(2.0).mm_exponent(), 1.0);
        assert_eq!(Beta(3.0).mm_exponent(), 0.5);
        assert!(Beta::new(f64::NAN).is_err());
        assert!(Beta::new(-1.0).is_err());
    }

    #[test]
    fn splitmix_is_stable() {
        // First outputs of SplitMix64 seeded with 0 (published test vector).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let u = SplitMix64::new(7).next_unit();
        assert!(u > 0.0 && u <= 1.0);
    }
}
