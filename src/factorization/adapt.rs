//! Adaptation of the templates to the recording being transcribed: a few
//! multiplicative updates of the templates themselves, pulled towards the
//! learned dictionary, after the paper's regression with fixed templates.
//!
//! # Model
//!
//! Templates learned on one piano explain another piano's notes with the
//! wrong partial amplitudes (Wu, Marmoret & Cohen 2022, table 2: 15-35
//! points of F lost). After the first pass (the regression of H on the
//! learned templates `W0`, [`super::ConvolutiveRegression`]), `W` and `H`
//! are both updated for a few rounds on the recording itself, minimising the
//! KL divergence plus a penalty that keeps each template near its learned
//! shape:
//!
//! ```text
//! C(W, H) = D_KL(M | M̂(W, H)) + λ · D_KL(W0 | W)
//!         = D_KL(M | M̂) + λ Σ_{f,i,q} ( W0 ln(W0 / W) − W0 + W ),
//! ```
//!
//! the negative log-posterior (up to constants) of `W` under independent
//! Gamma priors of shape `λ·W0 + 1` and rate `λ`, whose mode is `W0`
//! (a MAP estimate; the Gamma prior is the conjugate one of the KL/Poisson
//! likelihood, Cemgil, "Bayesian inference for nonnegative matrix
//! factorisation models", Comput. Intell. Neurosci. 2009).
//!
//! # Updates
//!
//! Each round is one update of every template entry, then one of every
//! activation. For `W`, Jensen's inequality gives the usual majoriser of the
//! KL term at the current `W̃` (Lee & Seung 2001; Smaragdis 2004 for the
//! convolutive model), `Σ_{f,i,q} (Den[q,i] · W − W̃ · Num[f,i,q] · ln W) +
//! const`, with
//!
//! ```text
//! Num[f,i,q] = Σ_t (M / M̂)[f, t] · H[q, t − i],   Den[q,i] = Σ_t H[q, t − i];
//! ```
//!
//! the penalty is already separable, so the minimiser of the sum is
//!
//! ```text
//! W[f,i,q] ← ( W̃[f,i,q] · Num[f,i,q] + λ · W0[f,i,q] ) / ( Den[q,i] + λ ),
//! ```
//!
//! which never increases `C` (it is the majorisation–minimisation step; for
//! λ = 0 it is the plain KL update of convolutive NMF). The H update is the
//! regression's (the penalty does not involve H), so no round increases `C`.
//! A template whose note is silent (`Den = 0`) returns to `W0`; a large λ
//! keeps every template at `W0` and the result is the first pass's; a
//! note's template moves as far as its note is played.
//!
//! # Scale
//!
//! λ is `strength × Σ_{q,t} H[q,t] / K` of the first pass's activations,
//! fixed for the rounds: `Den` grows with the recording's level and length,
//! and so does λ, so the adaptation does not depend on either (a recording
//! twice as loud gives the same templates). At the end each template is
//! rescaled to its learned L1 norm and its activations by the inverse, which
//! leaves the model unchanged and the activations on the learned templates'
//! scale (so the calibrated decision rule still applies).
//!
//! # Refit and the first pass
//!
//! Two options change what surrounds the rounds (both measured in
//! docs/results/dev/adaptation-refit.md):
//!
//! - [`Adaptation::refit`]: after the rounds, `H` is fitted again by the
//!   whole regression (its seeded initial activations, its NMF and CNMF
//!   iterations) on the adapted templates `W`, which stay fixed. The H the
//!   rounds end with still carries the first pass's errors (a note explained
//!   by its lower octave's template keeps that activation, and that template
//!   adapts to explain it); the regression, convex in H for fixed `W`,
//!   finds the activations of the adapted templates afresh. It is the
//!   minimum of `D_KL(M | M̂(W, H))` over H for the final `W`, so the
//!   penalised objective is no larger than after the rounds, up to the
//!   regression's convergence.
//! - [`Adaptation::dense_first_pass`]: the first pass on the fast path
//!   without the sparse iterations (dense f32 products, all activations
//!   updated, none pruned). The sparse iterations drop, from the 40th
//!   iteration on, activations below 10⁻⁵ of their local level, for good (a
//!   multiplicative update keeps a zero at zero). When they also pruned the
//!   NMF initialisation (before commit 3812780), notes whose templates fit
//!   another piano badly were pruned there and could not come back (the
//!   fixed FluidR3 templates on 4 Salamander songs: 84.1 onset F dense
//!   against 76.0 sparse); with the initialisation unpruned
//!   the sparse first pass gives the same adapted scores within 0.2 (six
//!   dev pairs; docs/results/dev/adaptation-cycles.md). The rounds and the
//!   refit then run on the sparse path from the converged dense activations.
//!
//! # Paths
//!
//! The fast path ([`Adaptation::run_fast`]) runs in f32 on the sparse
//! activations the fast regression leaves ([`super::sparse`]): the model and
//! the template numerator cost `2·F·τ·nnz(H)` each, the activation update is
//! [`SparseCnmf::step`]. The exact path ([`Adaptation::run_exact`]) uses the
//! dense f64 kernels; [`reference_round`] is the same round as plain f64
//! loops, for the tests.

use rayon::prelude::*;

use super::kernels::{CnmfKernel, Real, ACTIVATION_FLOOR, FRAME_BLOCK, TEMPLATE_FLOOR};
use super::regression::{floor_silent_frames, ConvolutiveRegression, FitInfo};
use super::sparse::{SparseActivations, SparseCnmf, Step};
use super::{reference, Beta, ConvTemplates, Matrix, MODEL_FLOOR};
use crate::{Error, Result};

/// How the templates are adapted to the recording (see the
/// [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Adaptation {
    /// Rounds of one template update and one activation update. Default
    /// [`DEFAULT_ROUNDS`].
    pub rounds: usize,
    /// The prior's weight λ relative to the mean total activation of a
    /// template (`λ = strength · Σ H / K`). Default [`DEFAULT_STRENGTH`].
    pub strength: f64,
    /// After the rounds, fit the activations again from the regression's
    /// initial state on the adapted templates (the regression's iterations
    /// once more). Default false.
    pub refit: bool,
    /// On the fast path, the first pass without the sparse iterations'
    /// pruning (dense f32 products, all its iterations): an activation
    /// pruned to zero stays zero, and with another piano's templates the
    /// sparse path prunes notes that the dense iterations would bring back.
    /// The rounds and the refit run on the sparse activations left once the
    /// first pass has converged. Default false. No effect on
    /// [`Precision::Faithful`](super::Precision::Faithful), which prunes
    /// nothing anyway.
    pub dense_first_pass: bool,
    /// Cycles of rounds (and of the refit, when on): each cycle's rounds
    /// start from the previous cycle's templates and activations (after
    /// its refit), always pulled towards the learned templates. Default 1
    /// (0 counts as 1).
    pub cycles: usize,
    /// A spectral filter shared by all templates, fitted with them
    /// ([`SharedFilter`]): the effective templates are
    /// `G[b(f), i] · W[f, i, q]`, `G` one gain per frequency band `b` and
    /// slice `i`, pulled towards 1, and `W` pulled towards the learned
    /// templates as without it. The bands are this many per octave (bins
    /// below [`FILTER_LOWEST_BIN`] share the lowest band). 0 (the default):
    /// no filter.
    pub filter_bands_per_octave: usize,
    /// The pull of the filter's gains towards 1, relative to their mean
    /// denominator ([`SharedFilter`]). Default [`DEFAULT_FILTER_STRENGTH`].
    pub filter_strength: f64,
}

/// The default [`Adaptation::rounds`]: chosen on the first 4 dev songs of
/// one pair (FluidR3 templates on Salamander songs), where onset F at the
/// oracle global δ was 75.1 % without adaptation and 79.6, 81.4, 81.4 %
/// after 10, 30, 60 rounds at strength 1 (docs/results/dev/adaptation.md);
/// 30 rounds cost about 5 s per 30 s of audio on the 2-core machine.
pub const DEFAULT_ROUNDS: usize = 30;

/// The default [`Adaptation::strength`]: chosen on the same pair and songs
/// as [`DEFAULT_ROUNDS`], where 0.1, 1, 10 gave 77.0, 79.6, 78.5 % (10
/// rounds) and 0.1, 1, 3 gave 74.8, 81.4, 81.3 % (30 rounds): a weaker pull
/// lets templates take on other notes' partials, a stronger one keeps the
/// wrong piano's.
pub const DEFAULT_STRENGTH: f64 = 1.0;

/// What [`Adaptation::adapted_at`]'s rounds read, in the precision they run
/// in: the floored spectrogram, and on the exact path the learned templates
/// in f64 (the fast path reads them as given).
enum RoundsInput {
    Exact { m: Matrix<f64>, w0: ConvTemplates<f64> },
    Fast { m: Matrix<f32>, prune: f32 },
}

impl Default for Adaptation {
    fn default() -> Self {
        Adaptation {
            rounds: DEFAULT_ROUNDS,
            strength: DEFAULT_STRENGTH,
            refit: false,
            dense_first_pass: false,
            cycles: 1,
            filter_bands_per_octave: 0,
            filter_strength: DEFAULT_FILTER_STRENGTH,
        }
    }
}

/// What an adaptation did.
#[derive(Debug, Clone, Default)]
pub struct AdaptInfo {
    /// The penalty weight λ used.
    pub lambda: f64,
    /// Wall-clock seconds of the rounds.
    pub seconds: f64,
    /// Floating-point operations of the rounds' products.
    pub flops: f64,
}

impl Adaptation {
    /// Errors unless the settings make sense.
    pub fn validate(&self) -> Result<()> {
        if !(self.filter_strength.is_finite() && self.filter_strength >= 0.0) {
            return Err(Error::invalid_input(format!(
                "the adaptation filter's strength must be a nonnegative number, got {}",
                self.filter_strength
            )));
        }
        if !(self.strength.is_finite() && self.strength >= 0.0) {
            return Err(Error::invalid_input(format!(
                "the adaptation strength must be a nonnegative number, got {}",
                self.strength
            )));
        }
        Ok(())
    }

    /// The flat shared filter of these settings for templates of `n_bins`
    /// bins and `tau` slices (`None` without one).
    pub fn flat_filter(&self, n_bins: usize, tau: usize) -> Option<SharedFilter> {
        SharedFilter::new(n_bins, tau, self.filter_bands_per_octave, self.filter_strength)
    }

    /// λ for the activations `h` (values of a K × N matrix, or the nonzero
    /// ones), `k` templates.
    pub fn lambda<T: Copy + Into<f64>>(&self, h: &[T], k: usize) -> f64 {
        self.strength * h.iter().map(|&x| x.into()).sum::<f64>() / k.max(1) as f64
    }

    /// The regression's fit of `spectrogram` on `templates` (frames
    /// `first_frame ..` of a recording), then the adaptation; returns the
    /// final activations (K × N) and the regression's record, the rounds'
    /// time and flops added to its iterations'. Needs the KL divergence; with
    /// a `max_bins` cut, the templates adapt on the bins below it.
    pub fn fit_at(
        &self,
        regression: &ConvolutiveRegression,
        spectrogram: &Matrix<f64>,
        templates: &ConvTemplates<f32>,
        first_frame: usize,
    ) -> Result<(Matrix<f64>, FitInfo)> {
        self.adapted_at(regression, spectrogram, templates, first_frame).map(|(_, h, info)| (h, info))
    }

    /// [`fit_at`](Self::fit_at), also returning the adapted templates (on
    /// the bins fitted, at their learned norms).
    pub fn adapted_at(
        &self,
        regression: &ConvolutiveRegression,
        spectrogram: &Matrix<f64>,
        templates: &ConvTemplates<f32>,
        first_frame: usize,
    ) -> Result<(ConvTemplates<f32>, Matrix<f64>, FitInfo)> {
        self.validate()?;
        if !regression.beta.is_kl() {
            return Err(Error::invalid_input("template adaptation needs the KL divergence (beta 1)"));
        }
        // With a frequency cut, the fit and the adaptation both see the lowest
        // bins alone (the regression's own cut gives the same bits).
        let cut = regression.lowest_bins(spectrogram, templates)?;
        let (spectrogram, templates) = cut.as_ref().map_or((spectrogram, templates), |(m, w)| (m, w));
        let regression = &ConvolutiveRegression { max_bins: None, ..regression.clone() };
        let mut first_pass = regression.clone();
        if self.dense_first_pass {
            first_pass.fast.sparse = None;
        }
        let (h, mut info) = first_pass.fit_at(spectrogram, templates, first_frame)?;
        let mut m = spectrogram.clone();
        floor_silent_frames(&mut m, regression.silence_floor);
        // What the rounds of every cycle read, in their precision: the floored
        // spectrogram and, on the exact path, the learned templates in f64.
        // The rounds prune as the fit does (the faithful path: not at all).
        let input = match regression.f32_settings() {
            None => RoundsInput::Exact { m, w0: templates.map(|x| x as f64) },
            Some(fast) => {
                RoundsInput::Fast { m: m.map(|x| x as f32), prune: fast.sparse.map_or(0.0, |s| s.prune) as f32 }
            }
        };
        let (mut w, mut h) = (templates.clone(), h);
        // The shared filter, carried from cycle to cycle.
        let mut filter = self.flat_filter(templates.n_bins, templates.tau);
        for _ in 0..self.cycles.max(1) {
            let adapt = match &input {
                RoundsInput::Exact { m, w0 } => {
                    let (wa, ha, adapt) = self.run_exact(m, w0, &w.map(|x| x as f64), h, filter.as_mut());
                    (w, h) = (wa.map(|x| x as f32), ha);
                    adapt
                }
                RoundsInput::Fast { m, prune } => {
                    let (wa, ha, adapt) = self.run_fast(m, templates, &w, h.map(|x| x as f32), *prune, filter.as_mut());
                    (w, h) = (wa, ha.map(|x| x as f64));
                    adapt
                }
            };
            if h.data.iter().any(|x| !x.is_finite()) || w.data.iter().any(|x| !x.is_finite()) {
                return Err(Error::internal("the adapted activations became non-finite"));
            }
            info.iteration_seconds += adapt.seconds;
            info.flops += adapt.flops;
            if self.refit {
                let (refit, again) = regression.fit_at(spectrogram, &w, first_frame)?;
                h = refit;
                info.init_seconds += again.init_seconds;
                info.iteration_seconds += again.iteration_seconds;
                info.flops += again.flops;
            }
        }
        Ok((w, h, info))
    }

    /// The rounds in f32 on sparse activations, from the templates `start`
    /// (`w0` in the first cycle, the previous cycle's otherwise) and the
    /// activations `h`, pulled towards the learned `w0`; activations below
    /// `prune` × their local level are dropped after each activation update,
    /// as in the fast regression. With a shared `filter` (see
    /// [`Adaptation::flat_filter`]), `start` are effective templates `G · W`
    /// and the filter's gains are updated in place, so that cycles carry
    /// them. Returns the adapted (effective) templates at their learned
    /// norms, and the activations.
    pub fn run_fast(
        &self,
        m: &Matrix<f32>,
        w0: &ConvTemplates<f32>,
        start: &ConvTemplates<f32>,
        h: Matrix<f32>,
        prune: f32,
        mut filter: Option<&mut SharedFilter>,
    ) -> (ConvTemplates<f32>, Matrix<f32>, AdaptInfo) {
        let started = std::time::Instant::now();
        let mut sh = SparseActivations::from_dense(&h);
        let mut info = AdaptInfo::default();
        let packed = SparseCnmf::new(w0).pack(m);
        let (f_len, tau) = (w0.n_bins as f64, w0.tau as f64);
        let step = Step { prune, ..Step::default() };
        let lambda = self.lambda(&sh.values, w0.n_templates);
        info.lambda = lambda;
        let mut templates = FilteredTemplates::new(start, filter.as_deref());
        for _ in 0..self.rounds {
            info.flops += 4.0 * f_len * tau * sh.nnz() as f64;
            let (wnum, den) = sparse_numerators(m, templates.effective(), &sh);
            templates.update(w0, (&wnum, &den), lambda, filter.as_deref_mut());
            info.flops += SparseCnmf::new(templates.effective()).step(&packed, &mut sh, &step).flops;
        }
        let mut h = sh.to_dense();
        let mut w = templates.into_effective();
        restore_norms(&mut w, w0, &mut h);
        info.seconds = started.elapsed().as_secs_f64();
        (w, h, info)
    }

    /// The rounds in f64 with the dense kernels, from the templates `start`,
    /// the activations `h` and the `filter` ([`run_fast`](Self::run_fast)'s
    /// roles).
    pub fn run_exact(
        &self,
        m: &Matrix<f64>,
        w0: &ConvTemplates<f64>,
        start: &ConvTemplates<f64>,
        mut h: Matrix<f64>,
        mut filter: Option<&mut SharedFilter>,
    ) -> (ConvTemplates<f64>, Matrix<f64>, AdaptInfo) {
        let started = std::time::Instant::now();
        let mut info = AdaptInfo::default();
        let (f_len, n, k, tau) = (w0.n_bins as f64, m.cols as f64, w0.n_templates as f64, w0.tau as f64);
        let round_flops = 4.0 * 2.0 * f_len * n * k * tau;
        let lambda = self.lambda(&h.data, w0.n_templates);
        info.lambda = lambda;
        let mut templates = FilteredTemplates::new(start, filter.as_deref());
        for _ in 0..self.rounds {
            let (wnum, den) = dense_numerators(m, templates.effective(), &h);
            templates.update(w0, (&wnum, &den), lambda, filter.as_deref_mut());
            CnmfKernel::new(templates.effective().clone()).update_activations(m, &mut h, Beta::KL, false);
            info.flops += round_flops;
        }
        let mut w = templates.into_effective();
        restore_norms(&mut w, w0, &mut h);
        info.seconds = started.elapsed().as_secs_f64();
        (w, h, info)
    }
}

/// The templates the rounds update: the per-note part `W`, and with a
/// shared filter the effective templates `G · W` the model uses (without a
/// filter `W` is the effective one, kept once).
struct FilteredTemplates<T> {
    per_note: ConvTemplates<T>,
    effective: Option<ConvTemplates<T>>,
}

impl<T: Real> FilteredTemplates<T> {
    /// From effective templates `start`: `W = start / G` with a filter.
    fn new(start: &ConvTemplates<T>, filter: Option<&SharedFilter>) -> Self {
        match filter {
            Some(g) => FilteredTemplates { per_note: g.remove(start), effective: Some(start.clone()) },
            None => FilteredTemplates { per_note: start.clone(), effective: None },
        }
    }

    /// The templates the model uses.
    fn effective(&self) -> &ConvTemplates<T> {
        self.effective.as_ref().unwrap_or(&self.per_note)
    }

    fn into_effective(self) -> ConvTemplates<T> {
        self.effective.unwrap_or(self.per_note)
    }

    /// One round's template update from the numerators `(W̃·Num, Den)` of
    /// the effective templates: `W` by [`penalised_update`], then the
    /// filter's gains (if any) by [`SharedFilter::update`], then `G · W`.
    fn update(
        &mut self,
        w0: &ConvTemplates<T>,
        (wnum, den): (&[T], &[T]),
        lambda: f64,
        filter: Option<&mut SharedFilter>,
    ) {
        self.per_note = penalised_update(&self.per_note, w0, wnum, den, lambda, filter.as_deref());
        if let (Some(g), Some(effective)) = (filter, self.effective.as_mut()) {
            g.update(effective, wnum, den);
            *effective = g.apply(&self.per_note);
        }
    }
}

/// The penalised update of every template entry,
/// `(W̃·Num + λ·W0)/(Den + λ)`, from `wnum = W̃·Num` (F × τ × K, laid out
/// as the templates) and `den = Den` (at `q·τ + i`).
///
/// With a shared filter `G` the numerators are those of the effective
/// templates `G · W` (`wnum = G·W̃·Num`, the gradient's share of `W`) and
/// `Den` is scaled by `G[b(f), i]`: `W ← (G·W̃·Num + λ·W0)/(G·Den + λ)`,
/// the majorisation–minimisation step in `W` for fixed `G`.
fn penalised_update<T: Real>(
    w: &ConvTemplates<T>,
    w0: &ConvTemplates<T>,
    wnum: &[T],
    den: &[T],
    lambda: f64,
    filter: Option<&SharedFilter>,
) -> ConvTemplates<T> {
    let f_len = w.n_bins;
    let lambda = T::from_f64(lambda);
    let data = (0..w.data.len()).map(|idx| {
        let d = den[idx / f_len];
        let d = filter.map_or(d, |g| d * T::from_f64(g.gains[g.index(idx, f_len)]));
        penalised(wnum[idx], w.data[idx], w0.data[idx], d, lambda)
    });
    ConvTemplates { data: data.collect(), ..*w }
}

/// The penalised template entry `(W̃·Num + λ·W0)/(Den + λ)` given
/// `w_num = W̃·Num`, floored like the kernels' templates; `W̃` when the
/// denominator is zero (a silent note and no penalty).
#[inline]
fn penalised<T: Real>(w_num: T, w: T, w0: T, den: T, lambda: T) -> T {
    let d = den + lambda;
    if d <= T::ZERO {
        return w;
    }
    let v = (w_num + lambda * w0) / d;
    if v < T::from_f64(TEMPLATE_FLOOR) {
        T::ZERO
    } else {
        v
    }
}

/// The lowest bin of the shared filter's second band: the bins below it
/// share the lowest band ([`Adaptation::filter_bands_per_octave`]).
pub const FILTER_LOWEST_BIN: usize = 16;

/// The default [`Adaptation::filter_strength`]: the same relative weight
/// as the templates' [`DEFAULT_STRENGTH`]; without a pull (0) the filter
/// lost 5-6 onset F points on the TimGM6mb songs (docs/results/dev/adaptation-filter.md).
pub const DEFAULT_FILTER_STRENGTH: f64 = 1.0;

/// A spectral filter shared by all templates (see
/// [`Adaptation::filter_bands_per_octave`]): one gain `G[b, i]` per band
/// `b` of bins and slice `i`.
///
/// With the effective templates `E = G · W`, the KL gradient in `G[b, i]`
/// is `Σ_{f ∈ b, q} W[f,i,q] (Den[q,i] − Num[f,i,q])`. With a Gamma prior
/// of shape `μ + 1` and rate `μ` on each gain (mode 1: no colouring), the
/// majorisation–minimisation step, as for the templates, is
///
/// ```text
/// G[b,i] ← ( Σ_{f∈b,q} E·Num + μ ) / ( Σ_{f∈b,q} W·Den + μ ),
/// ```
///
/// `E·Num` being the templates' numerator (Lee & Seung 2001's update for a
/// factor shared by all templates, for μ = 0). μ is
/// [`Adaptation::filter_strength`] times the mean of `Σ_{f∈b,q} W·Den`
/// over the gains, at each update (it follows the recording's level like
/// the templates' λ).
///
/// `G` carries what all notes share (the recording chain, the instrument's
/// overall colour and decay), the prior on `W` keeps each note's own
/// partials near the learned ones; notes that are seldom played still get
/// the shared part. The bands are logarithmic in bin index, hence in
/// frequency: `b(f) = ⌊n · log2(max(f, f₀) / f₀)⌋`, n per octave, f₀ =
/// [`FILTER_LOWEST_BIN`].
#[derive(Debug, Clone, PartialEq)]
pub struct SharedFilter {
    /// The band of each bin.
    band_of_bin: Vec<usize>,
    /// Slices per template.
    tau: usize,
    /// The prior's relative weight (μ over the mean `Σ W·Den`).
    strength: f64,
    /// `G[b, i]` at `b·τ + i`.
    gains: Vec<f64>,
}

impl SharedFilter {
    /// The flat filter (all gains 1) for `n_bins` bins, `tau` slices and
    /// `per_octave` bands per octave, pulled towards 1 with `strength`;
    /// `None` when `per_octave` is 0.
    pub fn new(n_bins: usize, tau: usize, per_octave: usize, strength: f64) -> Option<Self> {
        if per_octave == 0 {
            return None;
        }
        let f0 = FILTER_LOWEST_BIN as f64;
        let band_of_bin: Vec<usize> =
            (0..n_bins).map(|f| (per_octave as f64 * ((f as f64).max(f0) / f0).log2()).floor() as usize).collect();
        let n_bands = band_of_bin.last().map_or(0, |&b| b + 1);
        Some(SharedFilter { band_of_bin, tau, strength, gains: vec![1.0; n_bands * tau] })
    }

    /// The number of bands.
    pub fn n_bands(&self) -> usize {
        self.gains.len() / self.tau.max(1)
    }

    /// Where the gain of the template entry at `idx` is (templates of
    /// `f_len` bins, laid out as [`ConvTemplates`]).
    fn index(&self, idx: usize, f_len: usize) -> usize {
        self.band_of_bin[idx % f_len] * self.tau + (idx / f_len) % self.tau
    }

    /// The effective templates `G · W`.
    pub fn apply<T: Real>(&self, w: &ConvTemplates<T>) -> ConvTemplates<T> {
        self.scaled(w, |x, g| x * T::from_f64(g))
    }

    /// `W = E / G` from effective templates `E`.
    pub fn remove<T: Real>(&self, e: &ConvTemplates<T>) -> ConvTemplates<T> {
        self.scaled(e, |x, g| x / T::from_f64(g))
    }

    fn scaled<T: Real>(&self, w: &ConvTemplates<T>, op: impl Fn(T, f64) -> T) -> ConvTemplates<T> {
        let data = w.data.iter().enumerate().map(|(idx, &x)| op(x, self.gains[self.index(idx, w.n_bins)]));
        ConvTemplates { data: data.collect(), ..*w }
    }

    /// One update of the gains from the effective templates `e` and their
    /// numerators (`wnum = E·Num`, `den = Den`, as for the templates'
    /// update). Sums in f64 in a fixed order.
    pub fn update<T: Real>(&mut self, e: &ConvTemplates<T>, wnum: &[T], den: &[T]) {
        let f_len = e.n_bins;
        let mut num = vec![0.0f64; self.gains.len()];
        let mut dsum = vec![0.0f64; self.gains.len()];
        for (idx, (&x, &a)) in e.data.iter().zip(wnum).enumerate() {
            let at = self.index(idx, f_len);
            num[at] += a.into();
            dsum[at] += x.into() / self.gains[at] * den[idx / f_len].into();
        }
        let mu = self.strength * dsum.iter().sum::<f64>() / dsum.len().max(1) as f64;
        for ((g, &a), &d) in self.gains.iter_mut().zip(&num).zip(&dsum) {
            let v = (a + mu) / (d + mu);
            if d + mu > 0.0 && v > 0.0 && v.is_finite() {
                *g = v;
            }
        }
    }
}

/// `W̃·Num` and `Den` of the [module docs](self) with dense activations
/// (the kernel's plain update is `W̃·Num/Den`).
fn dense_numerators<T: Real>(m: &Matrix<T>, w: &ConvTemplates<T>, h: &Matrix<T>) -> (Vec<T>, Vec<T>) {
    let mut kernel = CnmfKernel::new(w.clone());
    kernel.update_templates(m, h, Beta::KL);
    let mut wnum = kernel.into_templates().data;
    let den = shifted_sums(h, w.tau);
    for (j, slice) in wnum.chunks_mut(w.n_bins).enumerate() {
        slice.iter_mut().for_each(|x| *x *= den[j]);
    }
    (wnum, den)
}

/// `Den[q, i] = Σ_{s < N − i} H[q, s]` at `q·τ + i`.
fn shifted_sums<T: Real>(h: &Matrix<T>, tau: usize) -> Vec<T> {
    let n = h.cols;
    let mut den = vec![T::ZERO; h.rows * tau];
    for q in 0..h.rows {
        for i in 0..tau {
            let sum: f64 = (0..n.saturating_sub(i)).map(|s| h.get(q, s).into()).sum();
            den[q * tau + i] = T::from_f64(sum);
        }
    }
    den
}

/// Rescales each template of `w` to the L1 norm of its `w0` and its row of
/// `h` by the inverse (the model is unchanged).
fn restore_norms<T: Real>(w: &mut ConvTemplates<T>, w0: &ConvTemplates<T>, h: &mut Matrix<T>) {
    for q in 0..w.n_templates {
        let norm: f64 = w.template(q).iter().map(|&x| x.into()).sum();
        let target: f64 = w0.template(q).iter().map(|&x| x.into()).sum();
        if !(norm > 0.0 && target > 0.0 && norm.is_finite()) || norm == target {
            continue;
        }
        let len = w.n_bins * w.tau;
        let shrink = T::from_f64(target / norm);
        w.data[q * len..(q + 1) * len].iter_mut().for_each(|x| *x *= shrink);
        let grow = T::from_f64(norm / target);
        for t in 0..h.cols {
            let v = h.get(q, t) * grow;
            h.set(q, t, if v < T::from_f64(ACTIVATION_FLOOR) { T::ZERO } else { v });
        }
    }
}

/// `W̃·Num` and `Den` of the [module docs](self) with sparse activations
/// (f32): the model `M̂` frame by frame from the nonzero activations,
/// `R = M / M̂`, then each template's numerator from its note's nonzero
/// activations. Deterministic whatever the number of threads (frames and
/// notes are independent tasks, each summed in a fixed order).
fn sparse_numerators(m: &Matrix<f32>, w: &ConvTemplates<f32>, h: &SparseActivations) -> (Vec<f32>, Vec<f32>) {
    let (f_len, tau, k, n) = (w.n_bins, w.tau, w.n_templates, h.n_frames);
    assert_eq!((m.rows, m.cols), (f_len, n));
    // R = M / max(M̂, floor), computed in blocks of frames.
    let floor = MODEL_FLOOR as f32;
    let mut ratio = vec![0.0f32; f_len * n];
    ratio.par_chunks_mut(f_len * FRAME_BLOCK).enumerate().for_each(|(b, out)| {
        for (c, col) in out.chunks_mut(f_len).enumerate() {
            let t = b * FRAME_BLOCK + c;
            for i in 0..tau.min(t + 1) {
                let s = t - i;
                for e in h.start[s]..h.start[s + 1] {
                    let v = h.values[e];
                    for (y, &x) in col.iter_mut().zip(w.slice(h.notes[e] as usize, i)) {
                        *y += x * v;
                    }
                }
            }
            for (y, &x) in col.iter_mut().zip(m.col(t)) {
                *y = if x == 0.0 { 0.0 } else { x / y.max(floor) };
            }
        }
    });
    // Each note's nonzero activations, in frame order.
    let mut rows: Vec<Vec<(usize, f32)>> = vec![Vec::new(); k];
    for s in 0..n {
        for e in h.start[s]..h.start[s + 1] {
            rows[h.notes[e] as usize].push((s, h.values[e]));
        }
    }
    let len = f_len * tau;
    let per_note: Vec<(Vec<f32>, Vec<f32>)> = (0..k)
        .into_par_iter()
        .map(|q| {
            let mut num = vec![0.0f32; len];
            let mut den = vec![0.0f64; tau];
            for &(s, v) in &rows[q] {
                for i in 0..tau.min(n - s) {
                    let t = s + i;
                    for (a, &r) in num[i * f_len..(i + 1) * f_len].iter_mut().zip(&ratio[t * f_len..(t + 1) * f_len]) {
                        *a += r * v;
                    }
                    den[i] += v as f64;
                }
            }
            let wq = w.template(q);
            num.iter_mut().zip(wq).for_each(|(a, &x)| *a *= x);
            (num, den.into_iter().map(|x| x as f32).collect())
        })
        .collect();
    let mut wnum = Vec::with_capacity(len * k);
    let mut den = Vec::with_capacity(tau * k);
    for (num, d) in per_note {
        wnum.extend(num);
        den.extend(d);
    }
    (wnum, den)
}

/// One round as plain f64 loops over the formulas of the
/// [module docs](self): the penalised template update, then the activation
/// update ([`reference::update_activations`]). For the tests.
pub fn reference_round(
    m: &Matrix<f64>,
    w: &mut ConvTemplates<f64>,
    w0: &ConvTemplates<f64>,
    h: &mut Matrix<f64>,
    lambda: f64,
) {
    let (f_len, tau, k, n) = (w.n_bins, w.tau, w.n_templates, h.cols);
    let model = reference::reconstruct(w, h);
    let mut updated = w.clone();
    for q in 0..k {
        for i in 0..tau {
            let den: f64 = (0..n.saturating_sub(i)).map(|s| h.get(q, s)).sum();
            for f in 0..f_len {
                let num: f64 = (i..n).map(|t| m.get(f, t) / model.get(f, t).max(MODEL_FLOOR) * h.get(q, t - i)).sum();
                let idx = (q * tau + i) * f_len + f;
                if den + lambda > 0.0 {
                    updated.data[idx] = (w.data[idx] * num + lambda * w0.data[idx]) / (den + lambda);
                }
            }
        }
    }
    *w = updated;
    reference::update_activations(m, w, h, Beta::KL);
}

/// The penalised objective `D_KL(M | M̂) + λ · D_KL(W0 | W)` (plain f64).
pub fn objective(
    m: &Matrix<f64>,
    w: &ConvTemplates<f64>,
    w0: &ConvTemplates<f64>,
    h: &Matrix<f64>,
    lambda: f64,
) -> f64 {
    let penalty: f64 = w0.data.iter().zip(&w.data).map(|(&a, &b)| Beta::KL.divergence(a, b.max(MODEL_FLOOR))).sum();
    reference::loss(m, w, h, Beta::KL) + lambda * penalty
}

#[cfg(test)]
mod tests {
    use super::super::{Precision, SplitMix64};
    use super::*;

    /// Harmonic templates of `k` notes (partials of note q at bins
    /// (q + 3)·j), each partial's amplitude `amp(q, j)`, decaying over τ
    /// slices; normalised to unit L1 norm.
    fn harmonic(f: usize, tau: usize, k: usize, amp: impl Fn(usize, usize) -> f64) -> ConvTemplates<f64> {
        let mut w = vec![0.0; f * tau * k];
        for q in 0..k {
            for i in 0..tau {
                for j in 1.. {
                    let bin = (q + 3) * j;
                    if bin >= f {
                        break;
                    }
                    // A little energy everywhere, as learned templates have.
                    w[(q * tau + i) * f + bin] = amp(q, j) * 0.7f64.powi(i as i32);
                }
                for b in 0..f {
                    w[(q * tau + i) * f + b] += 1e-4;
                }
            }
            let s: f64 = w[q * tau * f..(q + 1) * tau * f].iter().sum();
            w[q * tau * f..(q + 1) * tau * f].iter_mut().for_each(|x| *x /= s);
        }
        ConvTemplates::new(f, tau, k, w).unwrap()
    }

    /// Learned templates (partials falling as 1/j) and the "other piano"
    /// (partials rising then falling) that made the spectrogram.
    fn problem() -> (Matrix<f64>, ConvTemplates<f64>, ConvTemplates<f64>, Matrix<f64>) {
        let (f, tau, k, n) = (48, 3, 4, 60);
        let learned = harmonic(f, tau, k, |_, j| 1.0 / j as f64);
        let other = harmonic(f, tau, k, |q, j| if j == 2 + q % 2 { 1.0 } else { 0.15 / j as f64 });
        let mut truth = Matrix::zeros(k, n);
        for (q, t, v) in [(0, 2, 3.0), (1, 10, 2.0), (2, 10, 1.0), (3, 25, 2.5), (0, 33, 1.5), (2, 41, 2.0)] {
            truth.set(q, t, v);
        }
        let mut m = reference::reconstruct(&other, &truth);
        let mut g = SplitMix64::new(5);
        m.data.iter_mut().for_each(|x| *x += 1e-4 * g.next_unit());
        (m, learned, other, truth)
    }

    /// The first pass: the regression of H on fixed templates.
    fn first_pass(m: &Matrix<f64>, w: &ConvTemplates<f64>) -> Matrix<f64> {
        let mut h = Matrix { rows: w.n_templates, cols: m.cols, data: vec![1.0; w.n_templates * m.cols] };
        for _ in 0..200 {
            reference::update_activations(m, w, &mut h, Beta::KL);
        }
        h
    }

    #[test]
    fn rounds_never_increase_the_objective() {
        let (m, w0, _, _) = problem();
        for lambda in [0.0, 0.5, 20.0] {
            let mut h = first_pass(&m, &w0);
            let mut w = w0.clone();
            let mut last = objective(&m, &w, &w0, &h, lambda);
            for round in 0..15 {
                reference_round(&m, &mut w, &w0, &mut h, lambda);
                let now = objective(&m, &w, &w0, &h, lambda);
                assert!(now <= last * (1.0 + 1e-12), "λ={lambda} round {round}: {now} > {last}");
                last = now;
            }
        }
    }

    #[test]
    fn the_penalty_keeps_the_templates_near_the_learned_ones() {
        let (m, w0, _, _) = problem();
        let distance = |lambda: f64| {
            let mut h = first_pass(&m, &w0);
            let mut w = w0.clone();
            for _ in 0..10 {
                reference_round(&m, &mut w, &w0, &mut h, lambda);
            }
            w.data.iter().zip(&w0.data).map(|(a, b)| (a - b).abs()).sum::<f64>()
        };
        let (free, mild, strong, huge) = (distance(0.0), distance(1.0), distance(30.0), distance(1e9));
        assert!(free > mild && mild > strong && strong > huge, "{free} {mild} {strong} {huge}");
        assert!(huge < 1e-6 * free, "{huge} vs {free}");
    }

    /// Templates move towards the piano that played, each keeps its
    /// pitch (its largest partial stays on one of its harmonics), and the
    /// model explains the recording better than the learned templates do.
    #[test]
    fn adaptation_moves_templates_to_the_new_piano_and_keeps_their_pitch() {
        let (m, w0, other, _) = problem();
        let h0 = first_pass(&m, &w0);
        let adaptation = Adaptation { rounds: 30, strength: 0.1, ..Adaptation::default() };
        let (w, h, info) = adaptation.run_exact(&m, &w0, &w0, h0.clone(), None);
        assert!(info.lambda > 0.0);
        let before = reference::loss(&m, &w0, &h0, Beta::KL);
        let after = reference::loss(&m, &w, &h, Beta::KL);
        assert!(after < 0.5 * before, "{after} vs {before}");
        let dist = |a: &ConvTemplates<f64>, q: usize| {
            a.template(q).iter().zip(other.template(q)).map(|(x, y)| (x - y).abs()).sum::<f64>()
        };
        for q in 0..w.n_templates {
            assert!(dist(&w, q) < 0.7 * dist(&w0, q), "note {q}: {} vs {}", dist(&w, q), dist(&w0, q));
            let norm: f64 = w.template(q).iter().sum();
            assert!((norm - 1.0).abs() < 1e-9, "{norm}");
            let slice = w.slice(q, 0);
            let top = (0..slice.len()).fold(0, |b, f| if slice[f] > slice[b] { f } else { b });
            assert_eq!(top % (q + 3), 0, "note {q}: largest partial at bin {top}");
        }
    }

    /// `rounds` of [`reference_round`] from `h0`, then the norms restored.
    fn reference_rounds(
        m: &Matrix<f64>,
        w0: &ConvTemplates<f64>,
        h0: &Matrix<f64>,
        rounds: usize,
        lambda: f64,
    ) -> (ConvTemplates<f64>, Matrix<f64>) {
        let (mut w, mut h) = (w0.clone(), h0.clone());
        for _ in 0..rounds {
            reference_round(m, &mut w, w0, &mut h, lambda);
        }
        restore_norms(&mut w, w0, &mut h);
        (w, h)
    }

    #[test]
    fn the_exact_path_follows_the_reference_loops() {
        let (m, w0, _, _) = problem();
        let h0 = first_pass(&m, &w0);
        let adaptation = Adaptation { rounds: 4, strength: 0.3, ..Adaptation::default() };
        let (w, h, info) = adaptation.run_exact(&m, &w0, &w0, h0.clone(), None);
        let (wr, hr) = reference_rounds(&m, &w0, &h0, 4, info.lambda);
        let worst =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-9)).fold(0.0, f64::max);
        assert!(worst(&w.data, &wr.data) < 1e-8, "{}", worst(&w.data, &wr.data));
        assert!(worst(&h.data, &hr.data) < 1e-8, "{}", worst(&h.data, &hr.data));
    }

    /// The fast path's rounds, unpruned, from the f64 problem, with the
    /// adaptation's own (flat) filter if it has one.
    fn fast_rounds(
        adaptation: &Adaptation,
        m: &Matrix<f64>,
        w0: &ConvTemplates<f64>,
        h0: &Matrix<f64>,
    ) -> (ConvTemplates<f32>, Matrix<f32>, AdaptInfo) {
        let (m, w0, h0) = (m.map(|x| x as f32), w0.map(|x| x as f32), h0.map(|x| x as f32));
        adaptation.run_fast(&m, &w0, &w0, h0, 0.0, adaptation.flat_filter(w0.n_bins, w0.tau).as_mut())
    }

    /// f32 templates and activations within 1e-4 of the largest reference
    /// entry.
    fn assert_within_single_precision(
        w: &ConvTemplates<f32>,
        h: &Matrix<f32>,
        wr: &ConvTemplates<f64>,
        hr: &Matrix<f64>,
    ) {
        let scale_w = wr.data.iter().copied().fold(0.0, f64::max);
        let scale_h = hr.data.iter().copied().fold(0.0, f64::max);
        let worst_w = w.data.iter().zip(&wr.data).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max);
        let worst_h = h.data.iter().zip(&hr.data).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max);
        assert!(worst_w < 1e-4 * scale_w, "{worst_w} vs {scale_w}");
        assert!(worst_h < 1e-4 * scale_h, "{worst_h} vs {scale_h}");
    }

    /// The f32 sparse path against the reference loops, with no pruning.
    #[test]
    fn the_fast_path_follows_the_reference_loops_to_single_precision() {
        let (m, w0, _, _) = problem();
        let h0 = first_pass(&m, &w0);
        let adaptation = Adaptation { rounds: 4, strength: 0.3, ..Adaptation::default() };
        let (w, h, info) = fast_rounds(&adaptation, &m, &w0, &h0);
        let (wr, hr) = reference_rounds(&m, &w0, &h0, 4, info.lambda);
        assert_within_single_precision(&w, &h, &wr, &hr);
    }

    /// One round with a shared filter as plain f64 loops: the effective
    /// templates `E = G·W`, the penalised update of `W` with `G·Den`, the
    /// gains from the same numerators (pulled towards 1 with
    /// `filter_strength`), then the activations on the new `G·W`; the
    /// weights are `(λ, filter_strength)`.
    fn reference_filtered_round(
        m: &Matrix<f64>,
        w: &mut ConvTemplates<f64>,
        w0: &ConvTemplates<f64>,
        h: &mut Matrix<f64>,
        gain: &mut [f64],
        band: &dyn Fn(usize) -> usize,
        (lambda, filter_strength): (f64, f64),
    ) {
        let (f_len, tau, k, n) = (w.n_bins, w.tau, w.n_templates, h.cols);
        let effective = |w: &ConvTemplates<f64>, gain: &[f64]| {
            let mut e = w.clone();
            for q in 0..k {
                for i in 0..tau {
                    for f in 0..f_len {
                        e.data[(q * tau + i) * f_len + f] *= gain[band(f) * tau + i];
                    }
                }
            }
            e
        };
        let e = effective(w, gain);
        let model = reference::reconstruct(&e, h);
        let mut updated = w.clone();
        let (mut gnum, mut gden) = (vec![0.0; gain.len()], vec![0.0; gain.len()]);
        for q in 0..k {
            for i in 0..tau {
                let den: f64 = (0..n.saturating_sub(i)).map(|s| h.get(q, s)).sum();
                for f in 0..f_len {
                    let num: f64 =
                        (i..n).map(|t| m.get(f, t) / model.get(f, t).max(MODEL_FLOOR) * h.get(q, t - i)).sum();
                    let idx = (q * tau + i) * f_len + f;
                    let g = gain[band(f) * tau + i];
                    updated.data[idx] = (e.data[idx] * num + lambda * w0.data[idx]) / (g * den + lambda);
                    gnum[band(f) * tau + i] += e.data[idx] * num;
                    gden[band(f) * tau + i] += w.data[idx] * den;
                }
            }
        }
        let mu = filter_strength * gden.iter().sum::<f64>() / gden.len() as f64;
        for (g, (a, d)) in gain.iter_mut().zip(gnum.iter().zip(&gden)) {
            *g = (a + mu) / (d + mu);
        }
        *w = updated;
        reference::update_activations(m, &effective(w, gain), h, Beta::KL);
    }

    /// Both paths with a shared filter against [`reference_filtered_round`].
    #[test]
    fn the_shared_filter_follows_the_reference_loops_on_both_paths() {
        let (m, w0, _, _) = problem();
        let h0 = first_pass(&m, &w0);
        let adaptation = Adaptation {
            rounds: 4,
            strength: 0.3,
            filter_bands_per_octave: 3,
            filter_strength: 0.3,
            ..Adaptation::default()
        };
        let filter = SharedFilter::new(w0.n_bins, w0.tau, 3, 0.3).unwrap();
        assert!(filter.n_bands() > 1);
        let band = |f: usize| filter.band_of_bin[f];
        let (mut wr, mut hr) = (w0.clone(), h0.clone());
        let mut gain = vec![1.0; filter.gains.len()];
        let lambda = adaptation.lambda(&h0.data, w0.n_templates);
        for _ in 0..4 {
            reference_filtered_round(&m, &mut wr, &w0, &mut hr, &mut gain, &band, (lambda, 0.3));
        }
        let mut er = wr.clone();
        for (idx, x) in er.data.iter_mut().enumerate() {
            *x *= gain[band(idx % w0.n_bins) * w0.tau + (idx / w0.n_bins) % w0.tau];
        }
        restore_norms(&mut er, &w0, &mut hr);
        // The gains did move: the filter is not the identity.
        assert!(gain.iter().any(|g| (g - 1.0).abs() > 1e-3), "{gain:?}");
        let (w, h, _) =
            adaptation.run_exact(&m, &w0, &w0, h0.clone(), adaptation.flat_filter(w0.n_bins, w0.tau).as_mut());
        let worst =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-9)).fold(0.0, f64::max);
        assert!(worst(&w.data, &er.data) < 1e-8, "{}", worst(&w.data, &er.data));
        assert!(worst(&h.data, &hr.data) < 1e-8, "{}", worst(&h.data, &hr.data));
        let (w, h, _) = fast_rounds(&adaptation, &m, &w0, &h0);
        assert_within_single_precision(&w, &h, &er, &hr);
    }

    /// A piano whose every note is the learned one through the same
    /// colouring (a spectral tilt): with the shared filter, a note played
    /// once, softly, among many loud ones moves to the new piano's
    /// template; without it, it stays near the learned one.
    #[test]
    fn a_shared_filter_brings_a_seldom_played_note_to_the_new_piano() {
        let (f, tau, k, n) = (64, 3, 4, 80);
        let learned = harmonic(f, tau, k, |_, j| 1.0 / j as f64);
        let tilt = |bin: usize| 0.05 + (bin as f64 / f as f64).powi(2) * 4.0;
        let mut other = learned.clone();
        for (idx, x) in other.data.iter_mut().enumerate() {
            *x *= tilt(idx % f);
        }
        for q in 0..k {
            let s: f64 = other.template(q).iter().sum();
            let len = f * tau;
            other.data[q * len..(q + 1) * len].iter_mut().for_each(|x| *x /= s);
        }
        let mut truth = Matrix::zeros(k, n);
        for (q, t, v) in
            [(0, 2, 3.0), (1, 10, 2.0), (2, 18, 2.5), (0, 30, 2.0), (1, 38, 3.0), (2, 47, 2.0), (3, 60, 0.3)]
        {
            truth.set(q, t, v);
        }
        let m = reference::reconstruct(&other, &truth);
        let h0 = first_pass(&m, &learned);
        let dist = |a: &ConvTemplates<f64>, q: usize| {
            a.template(q).iter().zip(other.template(q)).map(|(x, y)| (x - y).abs()).sum::<f64>()
        };
        let plain = Adaptation { rounds: 30, ..Adaptation::default() };
        let filtered = Adaptation { filter_bands_per_octave: 3, ..plain };
        let (wp, _, _) = plain.run_exact(&m, &learned, &learned, h0.clone(), None);
        let (wf, hf, _) = filtered.run_exact(&m, &learned, &learned, h0.clone(), filtered.flat_filter(f, tau).as_mut());
        let (wfree, _, _) = {
            let free = Adaptation { filter_strength: 0.0, ..filtered };
            free.run_exact(&m, &learned, &learned, h0.clone(), free.flat_filter(f, tau).as_mut())
        };
        let (before, without, with, free) = (dist(&learned, 3), dist(&wp, 3), dist(&wf, 3), dist(&wfree, 3));
        // Without the filter the note stays near the learned template; the
        // filter (the default pull towards flat) brings it a good part of
        // the way, a free filter most of it.
        assert!(
            without > 0.8 * before && with < 0.7 * without && free < 0.2 * without,
            "note 3: learned {before}, plain {without}, filtered {with}, free filter {free}"
        );
        // The filter explains the recording at least as well, and every
        // note keeps its pitch.
        let (lp, lf) = (
            reference::loss(&m, &wp, &plain.run_exact(&m, &learned, &learned, h0.clone(), None).1, Beta::KL),
            reference::loss(&m, &wf, &hf, Beta::KL),
        );
        assert!(lf <= lp * 1.001, "{lf} vs {lp}");
        for q in 0..k {
            let slice = wf.slice(q, 0);
            let top = (0..slice.len()).fold(0, |b, f| if slice[f] > slice[b] { f } else { b });
            assert_eq!(top % (q + 3), 0, "note {q}: largest partial at bin {top}");
        }
    }

    #[test]
    fn zero_rounds_give_the_first_pass_and_the_level_does_not_matter() {
        let (m, w0, _, _) = problem();
        let h0 = first_pass(&m, &w0);
        let (w, h, _) =
            Adaptation { rounds: 0, strength: 1.0, ..Adaptation::default() }.run_exact(&m, &w0, &w0, h0.clone(), None);
        assert_eq!((w, h), (w0.clone(), h0.clone()));
        // Ten times louder: the same templates, ten times the activations.
        let adaptation = Adaptation { rounds: 5, strength: 0.5, ..Adaptation::default() };
        let (w1, h1, _) = adaptation.run_exact(&m, &w0, &w0, h0.clone(), None);
        let loud = m.map(|x| 10.0 * x);
        let (w10, h10, _) = adaptation.run_exact(&loud, &w0, &w0, h0.map(|x| 10.0 * x), None);
        for (a, b) in w1.data.iter().zip(&w10.data) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1e-12), "{a} {b}");
        }
        let top = h10.data.iter().copied().fold(0.0, f64::max);
        for (a, b) in h1.data.iter().zip(&h10.data) {
            assert!((10.0 * a - b).abs() <= 1e-9 * top, "{a} {b}");
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Adaptation { rounds: 1, strength: -1.0, ..Adaptation::default() }.validate().is_err());
        assert!(Adaptation { rounds: 1, strength: f64::NAN, ..Adaptation::default() }.validate().is_err());
        let (m, w0, _, _) = problem();
        let w = w0.map(|x| x as f32);
        let a = Adaptation::default();
        let beta = ConvolutiveRegression { beta: Beta::new(0.5).unwrap(), ..Default::default() };
        assert!(a.fit_at(&beta, &m, &w, 0).is_err());
        let (h, _) = a.fit_at(&ConvolutiveRegression::default(), &m, &w, 0).unwrap();
        assert_eq!((h.rows, h.cols), (4, 60));
    }

    /// The refit is the regression, from its own initial activations, on
    /// the adapted templates; with no rounds the templates are the learned
    /// ones and the refit gives the regression's activations back.
    #[test]
    fn the_refit_is_the_regression_on_the_adapted_templates() {
        let (m, w0, _, _) = problem();
        let w = w0.map(|x| x as f32);
        for precision in [Precision::Exact, Precision::Fast] {
            let regression = ConvolutiveRegression { precision, ..Default::default() };
            let refit = Adaptation { rounds: 10, strength: 0.3, refit: true, ..Adaptation::default() };
            let (adapted, h, _) = refit.adapted_at(&regression, &m, &w, 0).unwrap();
            assert_ne!(adapted.data, w.data, "{precision:?}");
            assert_eq!(h.data, regression.fit(&m, &adapted).unwrap().0.data, "{precision:?}");
            let no_refit = Adaptation { refit: false, ..refit };
            assert_ne!(h.data, no_refit.fit_at(&regression, &m, &w, 0).unwrap().0.data, "{precision:?}");
            let none = Adaptation { rounds: 0, ..refit };
            assert_eq!(none.fit_at(&regression, &m, &w, 0).unwrap().0.data, regression.fit(&m, &w).unwrap().0.data);
        }
    }

    /// The dense first pass is the fast regression without its sparse
    /// iterations; the exact path, dense already, is unchanged by it.
    #[test]
    fn the_dense_first_pass_is_the_regression_without_pruning() {
        let (m, w0, _, _) = problem();
        let w = w0.map(|x| x as f32);
        let first_only = Adaptation { rounds: 0, dense_first_pass: true, ..Adaptation::default() };
        let fast = ConvolutiveRegression::default();
        let mut dense = fast.clone();
        dense.fast.sparse = None;
        assert_eq!(first_only.fit_at(&fast, &m, &w, 0).unwrap().0.data, dense.fit(&m, &w).unwrap().0.data);
        let exact = ConvolutiveRegression { precision: Precision::Exact, ..Default::default() };
        let sparse_first = Adaptation { dense_first_pass: false, ..first_only };
        assert_eq!(
            first_only.fit_at(&exact, &m, &w, 0).unwrap().0.data,
            sparse_first.fit_at(&exact, &m, &w, 0).unwrap().0.data
        );
    }

    /// A second cycle is the rounds again from the first cycle's templates
    /// and refitted activations (pulled towards the learned templates), then
    /// the refit on the templates they end with; on both paths.
    #[test]
    fn a_second_cycle_starts_from_the_first() {
        let (m, w0, _, _) = problem();
        let w = w0.map(|x| x as f32);
        for precision in [Precision::Exact, Precision::Fast, Precision::Faithful] {
            let regression = ConvolutiveRegression { precision, ..Default::default() };
            let one = Adaptation { rounds: 6, strength: 0.3, refit: true, ..Adaptation::default() };
            let two = Adaptation { cycles: 2, ..one };
            let (w1, h1, _) = one.adapted_at(&regression, &m, &w, 0).unwrap();
            let (w2, h2, _) = two.adapted_at(&regression, &m, &w, 0).unwrap();
            let mut floored = m.clone();
            floor_silent_frames(&mut floored, regression.silence_floor);
            let again = match precision {
                Precision::Exact => {
                    one.run_exact(&floored, &w.map(|x| x as f64), &w1.map(|x| x as f64), h1, None).0.map(|x| x as f32)
                }
                Precision::Fast | Precision::Faithful => {
                    // The faithful path prunes nothing in the rounds either.
                    let prune = match precision {
                        Precision::Fast => regression.fast.sparse.as_ref().map_or(0.0, |s| s.prune) as f32,
                        _ => 0.0,
                    };
                    one.run_fast(&floored.map(|x| x as f32), &w, &w1, h1.map(|x| x as f32), prune, None).0
                }
            };
            assert_eq!(w2.data, again.data, "{precision:?}");
            assert_ne!(w2.data, w1.data, "{precision:?}");
            assert_eq!(h2.data, regression.fit(&m, &again).unwrap().0.data, "{precision:?}");
        }
    }

    /// With a frequency cut the templates adapt on the bins below it: the
    /// same bits as adapting on the cut spectrogram and templates, on both
    /// paths, and not the result on all bins.
    #[test]
    fn a_bin_cut_adapts_on_the_lowest_bins() {
        let (m, w0, _, _) = problem();
        let w = w0.map(|x| x as f32);
        let a = Adaptation::default();
        for precision in [Precision::Exact, Precision::Fast] {
            let cut = ConvolutiveRegression { precision, max_bins: Some(10), ..Default::default() };
            let (cut_m, cut_w) = cut.lowest_bins(&m, &w).unwrap().expect("10 bins cut");
            let all = ConvolutiveRegression { precision, ..Default::default() };
            let (h, _) = a.fit_at(&cut, &m, &w, 0).unwrap();
            assert_eq!(h.data, a.fit_at(&all, &cut_m, &cut_w, 0).unwrap().0.data, "{precision:?}");
            assert_ne!(h.data, a.fit_at(&all, &m, &w, 0).unwrap().0.data, "{precision:?}");
        }
    }
}
