//! Convolutive regression: the activations H of a spectrogram on fixed
//! templates (Wu, Marmoret & Cohen 2022, §3.2, eq. 9). The problem is convex
//! in H for KL; the multiplicative updates converge to its minimum.

use super::kernels::{CnmfKernel, Real, ACTIVATION_FLOOR, SPECTROGRAM_FLOOR};
use super::sparse::{PackedSpectrogram, SparseActivations, SparseCnmf, Step};
use super::{Beta, ConvTemplates, Matrix, SplitMix64};
use crate::{Error, Result};

/// Which path the regression runs: how it computes the paper's iterations.
/// More paths may come (non-exhaustive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precision {
    /// The default: f32, the iterations shortened as
    /// [`ConvolutiveRegression::fast`] says (extrapolated updates, small
    /// activations pruned or dormant on the sparse kernel). Within 0.3
    /// F-points of [`Precision::Exact`] on the dev songs, but not the same
    /// note lists (see the tests and BENCHMARKS.md for the effect on notes).
    #[default]
    Fast,
    /// The paper's iterations as they are, in f32: none of
    /// [`FastSettings`]' shortcuts (no extrapolation, nothing pruned or
    /// dormant; [`FastSettings::faithful`], which replaces
    /// [`ConvolutiveRegression::fast`]). On the 36 dev songs its notes are
    /// identical to [`Precision::Exact`]'s on every song (activations within
    /// 7.2e-7 of the song's largest), at about half its time and about 4x
    /// the fast path's (BENCHMARKS.md, "The faithful path").
    Faithful,
    /// f64 dense products: the reference the fast path is checked against.
    Exact,
}

/// Estimates activations `H` (K × N) such that `M ≈ Σ_i W_i H(shifted by i)`
/// for fixed templates `W`.
///
/// Follows the paper's procedure: H starts seeded-random, goes through
/// `init_iterations` KL NMF updates with each template's first slice as an
/// F × K dictionary, then `iterations` convolutive updates.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvolutiveRegression {
    /// NMF iterations (first template slices only) before the convolutive
    /// ones. Default 50, as in the authors' code.
    pub init_iterations: usize,
    /// Convolutive iterations. Default 100, as in the authors' code.
    pub iterations: usize,
    /// The divergence. Default KL.
    pub beta: Beta,
    /// Seed of the random initial H. Default 0.
    pub seed: u64,
    /// The path: shortened f32 ([`Precision::Fast`], the default), the
    /// paper's iterations in f32 ([`Precision::Faithful`]) or in f64
    /// ([`Precision::Exact`]).
    pub precision: Precision,
    /// Frames whose every bin is below this are set to this value
    /// everywhere (the authors' floor). Default 1e-10.
    pub silence_floor: f64,
    /// Use only the lowest `max_bins` frequency bins of the spectrogram and
    /// templates (`None`, the default: all). Piano partials above a few kHz
    /// carry little energy; the products' cost is proportional to the bins.
    pub max_bins: Option<usize>,
    /// Record the loss before every convolutive iteration in
    /// [`FitInfo::loss_history`] (costs one logarithm per bin and frame).
    /// Default false.
    pub track_loss: bool,
    /// How [`Precision::Fast`] shortens the iterations (ignored by
    /// [`Precision::Faithful`] and [`Precision::Exact`]).
    pub fast: FastSettings,
}

impl Default for ConvolutiveRegression {
    fn default() -> Self {
        ConvolutiveRegression {
            init_iterations: 50,
            iterations: 100,
            beta: Beta::KL,
            seed: 0,
            precision: Precision::Fast,
            silence_floor: 1e-10,
            max_bins: None,
            track_loss: false,
            fast: FastSettings::default(),
        }
    }
}

/// How [`Precision::Fast`] approximates the paper's iterations; see
/// BENCHMARKS.md ("Speed (issue 3)") for the measured effect of each setting.
#[derive(Debug, Clone, PartialEq)]
pub struct FastSettings {
    /// Extrapolated updates: after the first [`init_plain`](Self::init_plain)
    /// initialisation and [`conv_plain`](Self::conv_plain) convolutive
    /// iterations, each update applies its ratio twice, `H ← H·ρ²`, and
    /// counts as two iterations: two plain updates whose ratio would hardly
    /// change. Default true.
    pub extrapolate: bool,
    /// Plain initialisation iterations before extrapolating. Default 10.
    pub init_plain: usize,
    /// Plain convolutive iterations before extrapolating. Default 5.
    pub conv_plain: usize,
    /// Sparse iterations (KL only): `None` updates every activation with
    /// dense products.
    pub sparse: Option<SparseSettings>,
}

impl FastSettings {
    /// The paper's iterations as they are, in f32: no extrapolation, no
    /// dormant activations, dense products.
    pub fn plain() -> Self {
        FastSettings { extrapolate: false, init_plain: 0, conv_plain: 0, sparse: None }
    }

    /// [`Precision::Faithful`]'s settings: the same iterations as
    /// [`plain`](Self::plain), on the sparse kernel with nothing pruned
    /// ([`SparseSettings::unpruned`]), which skips the activations that f32
    /// has flushed to zero: 545-650 GFLOP per 30 s at the default frequency
    /// cut against 852 dense, 3.7 s against 4.1 s on bach-bwv846 (Intel Xeon
    /// model 167).
    pub fn faithful() -> Self {
        FastSettings { sparse: Some(SparseSettings::unpruned()), ..Self::plain() }
    }
}

impl Default for FastSettings {
    fn default() -> Self {
        FastSettings { extrapolate: true, init_plain: 10, conv_plain: 5, sparse: Some(SparseSettings::default()) }
    }
}

/// The sparse iterations: the activations are stored as a sparse matrix,
/// small ones are dropped for good, and between full updates the dormant
/// ones (small for their surroundings) reuse their last ratio; the products
/// only touch what is left (see [`super::sparse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseSettings {
    /// Activations below this fraction of the local level (the largest
    /// total activation of a frame within τ frames) are set to zero (for
    /// good: a multiplicative update keeps a zero at zero) after each
    /// convolutive update from [`prune_after`](Self::prune_after) on (the
    /// initialisation uses [`init_prune`](Self::init_prune)). Default 1e-5.
    pub prune: f64,
    /// Convolutive iterations that update every activation before any is
    /// dormant. Default 5.
    pub after: usize,
    /// Activations below this fraction of the local level (the largest
    /// total activation of a frame within τ frames) are dormant, unless
    /// their last ratio exceeds [`super::sparse::DORMANT_RATIO_CAP`].
    /// Default 1e-3.
    pub dormant: f64,
    /// Activations below this fraction of the local level are left out of
    /// the model between full updates. Default 1e-6.
    pub model_threshold: f64,
    /// Every this many updates one is a full update of every activation,
    /// which refreshes the ratios. Default 10.
    pub refresh_every: usize,
    /// [`prune`](Self::prune) during the initialisation iterations (first
    /// template slices only). Default 0: not pruned, and then the whole
    /// initialisation runs on faer's dense products, faster than the sparse
    /// ones on an unpruned H. The initialisation's single-slice model
    /// explains the music differently from the convolutive one: with another
    /// piano's templates it shrinks notes whose first slice fits badly to
    /// the noise level, and the convolutive iterations bring them back from
    /// there (even from below 1e-9 of their local level). Pruned, they are
    /// lost for good: at the former default 1e-6, FluidR3's templates on the
    /// first 4 Salamander songs scored 63.2 % onset F at the default rule
    /// against the reference path's 71.6 % (70.3 % at 1e-9, 71.35 % unpruned
    /// with [`prune_after`](Self::prune_after) 40; BENCHMARKS.md, "The
    /// fast path across pianos"). The test
    /// `the_initialisation_keeps_what_the_convolutive_iterations_bring_back`
    /// builds such a template.
    pub init_prune: f64,
    /// Convolutive iterations (counting an extrapolated update as two)
    /// before the first pruning. Default 40: with an unpruned
    /// initialisation, activations that it left tiny need about 20
    /// iterations to grow back; pruning from iteration 20 lost up to 1.3
    /// points of onset F across pianos (FluidR3 → Salamander, first 4 songs:
    /// 70.3 % against 71.35 % from iteration 40 and the reference path's
    /// 71.6 %). Earlier, with the initialisation pruned, pruning from
    /// iteration 20 instead of the first kept the matched notes closer to
    /// the reference path's (BENCHMARKS.md, "Frequency range").
    pub prune_after: usize,
}

impl SparseSettings {
    /// The sparse iterations without any approximation: nothing pruned
    /// (activations leave only below the activation floor), none dormant,
    /// all in the model. The same updates as the dense f32 products: with
    /// the extrapolation, on the 36 dev songs, 10 note lists identical to the
    /// reference path's and 30 with the same pitches and onsets, for 4.5x
    /// the work of the default before the initialisation was unpruned
    /// (about 3x today's); without it ([`FastSettings::extrapolate`] false)
    /// all 12 FluidR3 songs identical, for 8.7x (BENCHMARKS.md, "Fidelity to
    /// the reference path").
    pub fn unpruned() -> Self {
        SparseSettings { prune: 0.0, dormant: 0.0, model_threshold: 0.0, init_prune: 0.0, ..Default::default() }
    }
}

impl Default for SparseSettings {
    fn default() -> Self {
        SparseSettings {
            prune: 1e-5,
            after: 5,
            dormant: 1e-3,
            model_threshold: 1e-6,
            refresh_every: 10,
            init_prune: 0.0,
            prune_after: 40,
        }
    }
}

/// What a fit did.
#[derive(Debug, Clone, Default)]
pub struct FitInfo {
    /// Convolutive iterations run.
    pub iterations: usize,
    /// Loss before each convolutive iteration, when tracked.
    pub loss_history: Vec<f64>,
    /// Wall-clock seconds of the NMF initialisation.
    pub init_seconds: f64,
    /// Wall-clock seconds of the convolutive iterations.
    pub iteration_seconds: f64,
    /// Floating-point operations of the matrix products (multiply and add
    /// counted separately), initialisation and iterations together.
    pub flops: f64,
}

impl ConvolutiveRegression {
    /// The lowest [`max_bins`](Self::max_bins) bins of the spectrogram and
    /// of the templates, or `None` when the cut keeps every bin.
    pub fn lowest_bins(
        &self,
        spectrogram: &Matrix<f64>,
        templates: &ConvTemplates<f32>,
    ) -> Result<Option<(Matrix<f64>, ConvTemplates<f32>)>> {
        let bins = self.max_bins.unwrap_or(spectrogram.rows).clamp(1, spectrogram.rows);
        if bins >= spectrogram.rows {
            return Ok(None);
        }
        let mut m = Matrix::zeros(bins, spectrogram.cols);
        for t in 0..spectrogram.cols {
            m.col_mut(t).copy_from_slice(&spectrogram.col(t)[..bins]);
        }
        let mut data = Vec::with_capacity(bins * templates.tau * templates.n_templates);
        for slice in templates.data.chunks(templates.n_bins) {
            data.extend_from_slice(&slice[..bins]);
        }
        Ok(Some((m, ConvTemplates::new(bins, templates.tau, templates.n_templates, data)?)))
    }

    /// Every setting that shapes the result, as text (for cache keys): the
    /// `Debug` form, without [`fast`](Self::fast) for [`Precision::Exact`],
    /// which ignores it, and with [`FastSettings::faithful`] in its place for
    /// [`Precision::Faithful`], which runs those settings whatever `fast` says.
    pub fn settings_key(&self) -> String {
        match self.f32_settings() {
            Some(fast) => format!("{:?}", ConvolutiveRegression { fast, ..self.clone() }),
            None => {
                // `fast` is the last field, so cutting at it keeps all the
                // others (the exact-path key test checks that nothing of it
                // is left).
                let mut key = format!("{self:?}");
                if let Some(at) = key.find(", fast: ") {
                    key.truncate(at);
                    key.push_str(" }");
                }
                key
            }
        }
    }

    /// The [`FastSettings`] the f32 paths run: [`fast`](Self::fast) for
    /// [`Precision::Fast`], [`FastSettings::faithful`] for
    /// [`Precision::Faithful`]; `None` for [`Precision::Exact`], which has
    /// no shortcuts to set.
    pub fn f32_settings(&self) -> Option<FastSettings> {
        match self.precision {
            Precision::Fast => Some(self.fast.clone()),
            Precision::Faithful => Some(FastSettings::faithful()),
            Precision::Exact => None,
        }
    }

    /// Fits the activations of `spectrogram` (F × N magnitudes) on
    /// `templates` (F × τ × K). Returns H (K × N) in f64.
    pub fn fit(&self, spectrogram: &Matrix<f64>, templates: &ConvTemplates<f32>) -> Result<(Matrix<f64>, FitInfo)> {
        self.fit_at(spectrogram, templates, 0)
    }

    /// [`fit`](Self::fit) for frames `first_frame ..` of a longer recording:
    /// the random initial activations are those the whole recording's fit
    /// would start from at these frames, so that pieces of a recording fitted
    /// separately agree with the whole away from their ends.
    pub fn fit_at(
        &self,
        spectrogram: &Matrix<f64>,
        templates: &ConvTemplates<f32>,
        first_frame: usize,
    ) -> Result<(Matrix<f64>, FitInfo)> {
        if spectrogram.rows != templates.n_bins {
            return Err(Error::invalid_input(format!(
                "spectrogram has {} frequency bins but the templates have {}",
                spectrogram.rows, templates.n_bins
            )));
        }
        let n = spectrogram.cols;
        let k = templates.n_templates;
        let (mut m, cut_templates);
        let templates = match self.lowest_bins(spectrogram, templates)? {
            Some((cut_m, cut_w)) => {
                (m, cut_templates) = (cut_m, cut_w);
                &cut_templates
            }
            None => {
                m = spectrogram.clone();
                templates
            }
        };
        floor_silent_frames(&mut m, self.silence_floor);
        let h0 = random_activations(self.seed, k, n, first_frame);
        match self.f32_settings() {
            None => self.run(&m, &templates.map(|x| x as f64), h0),
            Some(fast) => {
                let f32_path = ConvolutiveRegression { fast, ..self.clone() };
                let (h, info) = f32_path.run_fast(&m.map(|x| x as f32), templates, h0.map(|x| x as f32))?;
                Ok((h.map(|x| x as f64), info))
            }
        }
    }

    fn run<T: Real>(
        &self,
        m: &Matrix<T>,
        templates: &ConvTemplates<T>,
        mut h: Matrix<T>,
    ) -> Result<(Matrix<T>, FitInfo)> {
        let started = std::time::Instant::now();
        let mut info = FitInfo::default();
        let nmf = CnmfKernel::new(templates.first_slices());
        for _ in 0..self.init_iterations {
            nmf.update_activations(m, &mut h, Beta::KL, false);
        }
        info.init_seconds = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        let cnmf = CnmfKernel::new(templates.clone());
        for _ in 0..self.iterations {
            let stats = cnmf.update_activations(m, &mut h, self.beta, self.track_loss);
            if let Some(loss) = stats.loss_before {
                info.loss_history.push(loss);
            }
            info.iterations += 1;
        }
        info.iteration_seconds = started.elapsed().as_secs_f64();
        // Two products of F × τK by τK × N per iteration (three unless KL).
        let (f, n, k, tau) = (m.rows as f64, m.cols as f64, templates.n_templates as f64, templates.tau as f64);
        let products = if self.beta.is_kl() { 2.0 } else { 3.0 };
        info.flops = 2.0 * f * n * k * (2.0 * self.init_iterations as f64 + products * tau * info.iterations as f64);
        if h.data.iter().any(|&x| !x.into().is_finite()) {
            return Err(Error::internal("the activations became non-finite"));
        }
        Ok((h, info))
    }
}

impl ConvolutiveRegression {
    /// The fast path: the same updates in f32, shortened as
    /// [`fast`](Self::fast) says.
    fn run_fast(
        &self,
        m: &Matrix<f32>,
        templates: &ConvTemplates<f32>,
        mut h: Matrix<f32>,
    ) -> Result<(Matrix<f32>, FitInfo)> {
        let fast = &self.fast;
        let started = std::time::Instant::now();
        let mut info = FitInfo::default();
        let (f, n, k) = (m.rows as f64, m.cols as f64, templates.n_templates as f64);
        let sparse = fast.sparse.as_ref().filter(|_| self.beta.is_kl());
        let nmf = CnmfKernel::new(templates.first_slices());
        // Dense initialisation iterations: all of them without sparse
        // settings or when the initialisation is not pruned (then H stays
        // dense, and faer's products are faster than the sparse ones on a
        // dense H), else the first `init_plain` (H is dense at first).
        let dense_init = match sparse {
            Some(s) if s.init_prune > 0.0 => fast.init_plain.min(self.init_iterations),
            _ => self.init_iterations,
        };
        let mut it = 0;
        while it < dense_init {
            let double = fast.extrapolate && it >= fast.init_plain && it + 2 <= dense_init;
            let old = double.then(|| h.clone());
            nmf.update_activations(m, &mut h, Beta::KL, false);
            if let Some(old) = &old {
                repeat_ratio(old, &mut h, None);
            }
            info.flops += 2.0 * f * n * k * 2.0;
            it += 1 + double as usize;
        }
        let Some(settings) = sparse else {
            info.init_seconds = started.elapsed().as_secs_f64();
            let started = std::time::Instant::now();
            self.dense_iterations(m, templates, &mut h, &mut info);
            info.iteration_seconds = started.elapsed().as_secs_f64();
            return finite(h, info);
        };
        // The rest of the initialisation on the nonzero activations.
        let first = SparseCnmf::new(&templates.first_slices());
        let packed = first.pack(m);
        let mut sh = SparseActivations::from_dense(&h);
        let init_prune = settings.init_prune as f32;
        sh.prune_local(init_prune, templates.tau);
        while it < self.init_iterations {
            let double = fast.extrapolate && it + 2 <= self.init_iterations;
            let step = Step { exponent: 1 + double as u32, prune: init_prune, ..Step::default() };
            info.flops += first.step(&packed, &mut sh, &step).flops;
            it += 1 + double as usize;
        }
        info.init_seconds = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        self.sparse_iterations(&packed, templates, &mut sh, settings, &mut info);
        let h = sh.to_dense();
        info.iteration_seconds = started.elapsed().as_secs_f64();
        finite(h, info)
    }
}

/// Sets every frame whose bins are all below `silence_floor` to that value
/// everywhere (the authors' floor), and values below [`SPECTROGRAM_FLOOR`]
/// elsewhere to exactly zero.
pub fn floor_silent_frames(m: &mut Matrix<f64>, silence_floor: f64) {
    for t in 0..m.cols {
        let col = m.col_mut(t);
        if col.iter().all(|&x| x < silence_floor) {
            col.iter_mut().for_each(|x| *x = silence_floor);
        } else {
            col.iter_mut().filter(|x| **x < SPECTROGRAM_FLOOR).for_each(|x| *x = 0.0);
        }
    }
}

/// The seeded random initial activations (K × N, uniform in (0, 1]) of
/// frames `first_frame ..` of a recording: the stretch of the stream the
/// whole recording's would hold there, so that chunks agree with the whole.
pub fn random_activations(seed: u64, k: usize, n: usize, first_frame: usize) -> Matrix<f64> {
    let mut rng = SplitMix64::skipped(seed, (first_frame as u64).wrapping_mul(k as u64));
    Matrix { rows: k, cols: n, data: (0..k * n).map(|_| rng.next_unit()).collect() }
}

/// The activations, unless some are not finite.
fn finite(h: Matrix<f32>, info: FitInfo) -> Result<(Matrix<f32>, FitInfo)> {
    if h.data.iter().any(|&x| !x.is_finite()) {
        return Err(Error::internal("the activations became non-finite"));
    }
    Ok((h, info))
}

impl ConvolutiveRegression {
    /// The convolutive iterations with dense products, extrapolated as
    /// [`FastSettings`] says.
    fn dense_iterations(
        &self,
        m: &Matrix<f32>,
        templates: &ConvTemplates<f32>,
        h: &mut Matrix<f32>,
        info: &mut FitInfo,
    ) {
        let fast = &self.fast;
        let (f, n, k, tau) = (m.rows as f64, m.cols as f64, templates.n_templates as f64, templates.tau as f64);
        let products = if self.beta.is_kl() { 2.0 } else { 3.0 };
        let cnmf = CnmfKernel::new(templates.clone());
        let mut it = 0;
        while it < self.iterations {
            let double = fast.extrapolate && it >= fast.conv_plain && it + 2 <= self.iterations;
            let old = double.then(|| h.clone());
            let stats = cnmf.update_activations(m, h, self.beta, self.track_loss);
            if let Some(old) = &old {
                repeat_ratio(old, h, None);
            }
            info.flops += 2.0 * f * n * k * tau * products;
            info.loss_history.extend(stats.loss_before);
            it += 1 + double as usize;
        }
        info.iterations = it;
    }

    /// The convolutive iterations (KL) on the nonzero activations only
    /// ([`super::sparse`]), as [`SparseSettings`] says.
    fn sparse_iterations(
        &self,
        packed: &PackedSpectrogram,
        templates: &ConvTemplates<f32>,
        sh: &mut SparseActivations,
        settings: &SparseSettings,
        info: &mut FitInfo,
    ) {
        let fast = &self.fast;
        let kernel = SparseCnmf::new(templates);
        let mut it = 0;
        let mut step_index = 0;
        while it < self.iterations {
            let double = fast.extrapolate && it >= fast.conv_plain && it + 2 <= self.iterations;
            let full = it < settings.after || step_index % settings.refresh_every.max(1) == 0;
            let step = Step {
                exponent: 1 + double as u32,
                model_threshold: if full { 0.0 } else { settings.model_threshold as f32 },
                numer_threshold: if full { 0.0 } else { settings.dormant as f32 },
                prune: if it < settings.prune_after { 0.0 } else { settings.prune as f32 },
                want_loss: self.track_loss,
            };
            let stats = kernel.step(packed, sh, &step);
            info.flops += stats.flops;
            info.loss_history.extend(stats.loss_before);
            if it >= settings.after {
                step_index += 1;
            }
            it += 1 + double as usize;
        }
        info.iterations = it;
    }
}

/// After one update took `old` to `h`, applies the same ratio once more:
/// `h ← h · (h / old)`, with the activation floor. When `ratios` is given,
/// stores the ratio `h / old` of the single update there.
fn repeat_ratio(old: &Matrix<f32>, h: &mut Matrix<f32>, mut ratios: Option<&mut Matrix<f32>>) {
    let floor = ACTIVATION_FLOOR as f32;
    for (idx, (x, &o)) in h.data.iter_mut().zip(&old.data).enumerate() {
        let ratio = if o > 0.0 { *x / o } else { 0.0 };
        if let Some(r) = ratios.as_deref_mut() {
            r.data[idx] = ratio;
        }
        let v = *x * ratio;
        *x = if v < floor { 0.0 } else { v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_path_key_ignores_the_fast_settings() {
        let exact = ConvolutiveRegression { precision: Precision::Exact, ..Default::default() };
        let mut other = exact.clone();
        other.fast.extrapolate = false;
        assert_eq!(exact.settings_key(), other.settings_key());
        assert!(!exact.settings_key().contains("fast"), "{}", exact.settings_key());
        let fast = ConvolutiveRegression::default();
        let mut other = fast.clone();
        other.fast.extrapolate = false;
        assert_ne!(fast.settings_key(), other.settings_key());
        assert_ne!(fast.settings_key(), exact.settings_key());
    }

    /// Templates of 3 "notes" with disjoint harmonics; a spectrogram made from
    /// known activations; the regression must find them (up to small error).
    #[test]
    fn recovers_known_activations() {
        let (f, tau, k, n) = (30, 3, 3, 40);
        let mut w = vec![0.0f32; f * tau * k];
        for q in 0..k {
            for i in 0..tau {
                for h in 1..=3 {
                    let bin = (q + 2) * h + q;
                    if bin < f {
                        w[(q * tau + i) * f + bin] = 1.0 / (h * (i + 1)) as f32;
                    }
                }
            }
        }
        let templates = ConvTemplates::new(f, tau, k, w).unwrap();
        let mut h_true = Matrix::zeros(k, n);
        h_true.set(0, 5, 2.0);
        h_true.set(1, 12, 1.0);
        h_true.set(2, 12, 0.5);
        h_true.set(0, 30, 1.5);
        let kernel = CnmfKernel::new(templates.map(|x| x as f64));
        let m = kernel.reconstruct(&h_true);
        let plain = FastSettings::plain();
        for (precision, fast) in
            [(Precision::Exact, plain.clone()), (Precision::Fast, plain), (Precision::Fast, FastSettings::default())]
        {
            let extrapolated = fast.extrapolate;
            let reg =
                ConvolutiveRegression { precision, iterations: 400, track_loss: true, fast, ..Default::default() };
            let (h, info) = reg.fit(&m, &templates).unwrap();
            assert_eq!(info.iterations, 400);
            // Plain multiplicative updates never increase the loss; extrapolated
            // ones may overshoot slightly once converged.
            let slack = if extrapolated { 1e-2 } else { 1e-5 };
            for pair in info.loss_history.windows(2) {
                assert!(pair[1] <= pair[0] * (1.0 + slack), "{precision:?} {pair:?}");
            }
            if extrapolated {
                assert_eq!(info.loss_history.len(), 5 + 395 / 2 + 1);
            }
            for (q, t, v) in [(0, 5, 2.0), (1, 12, 1.0), (2, 12, 0.5), (0, 30, 1.5)] {
                assert!((h.get(q, t) - v).abs() < 0.05 * v, "{precision:?} H[{q},{t}] = {}", h.get(q, t));
            }
            let total: f64 = h.data.iter().sum();
            assert!((total - 5.0).abs() < 0.25, "{total}");
        }
    }

    /// A small seeded problem with awkward sizes: random templates and a
    /// spectrogram made from sparse activations plus noise.
    fn seeded_problem(f: usize, tau: usize, k: usize, n: usize) -> (Matrix<f64>, ConvTemplates<f32>) {
        let mut g = SplitMix64::new((f * 31 + n) as u64);
        let w =
            ConvTemplates::new(f, tau, k, (0..f * tau * k).map(|_| g.next_unit().powi(4) as f32).collect()).unwrap();
        let h = Matrix {
            rows: k,
            cols: n,
            data: (0..k * n).map(|_| g.next_unit()).map(|x| if x > 0.9 { 10.0 * x } else { 0.0 }).collect(),
        };
        let mut m = CnmfKernel::new(w.map(|x| x as f64)).reconstruct(&h);
        m.data.iter_mut().for_each(|x| *x += 0.01 * g.next_unit());
        (m, w)
    }

    /// The fast path's approximations against the exact path: the
    /// activations agree to a small fraction of the largest one.
    #[test]
    fn fast_settings_agree_with_the_exact_path() {
        let (m, w) = seeded_problem(131, 4, 7, 203);
        let exact = ConvolutiveRegression { precision: Precision::Exact, ..Default::default() };
        let (hx, _) = exact.fit(&m, &w).unwrap();
        let scale = hx.data.iter().copied().fold(0.0, f64::max);
        let dense = FastSettings { sparse: None, ..Default::default() };
        for (fast, tolerance) in [(FastSettings::plain(), 1e-4), (dense, 1e-2), (FastSettings::default(), 2e-2)] {
            let reg = ConvolutiveRegression { fast: fast.clone(), ..Default::default() };
            let (h, info) = reg.fit(&m, &w).unwrap();
            assert_eq!(info.iterations, 100);
            let worst = h.data.iter().zip(&hx.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst <= tolerance * scale, "{fast:?}: {worst} > {tolerance} × {scale}");
        }
    }

    /// The faithful path runs the paper's iterations in f32 whatever
    /// [`ConvolutiveRegression::fast`] says: it is the fast path with
    /// [`FastSettings::faithful`], bit for bit, and agrees with the exact
    /// path to f32 round-off, far closer than the default fast path.
    #[test]
    fn the_faithful_path_is_the_papers_iterations_in_f32() {
        let (m, w) = seeded_problem(131, 4, 7, 203);
        let (hx, _) = ConvolutiveRegression { precision: Precision::Exact, ..Default::default() }.fit(&m, &w).unwrap();
        let faithful = ConvolutiveRegression { precision: Precision::Faithful, ..Default::default() };
        let (h, info) = faithful.fit(&m, &w).unwrap();
        assert_eq!(info.iterations, 100);
        let ignored = ConvolutiveRegression { fast: FastSettings { sparse: None, ..Default::default() }, ..faithful };
        assert_eq!(ignored.fit(&m, &w).unwrap().0.data, h.data, "the fast settings changed the faithful path");
        assert_eq!(ignored.settings_key(), faithful.settings_key());
        assert_ne!(faithful.settings_key(), ConvolutiveRegression::default().settings_key());
        let spelled_out = ConvolutiveRegression { fast: FastSettings::faithful(), ..Default::default() };
        assert_eq!(spelled_out.fit(&m, &w).unwrap().0.data, h.data);
        let scale = hx.data.iter().copied().fold(0.0, f64::max);
        let distance = |a: &Matrix<f64>| a.data.iter().zip(&hx.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let worst = distance(&h);
        assert!(worst <= 1e-4 * scale, "faithful vs exact: {worst} > 1e-4 × {scale}");
        let fast = distance(&ConvolutiveRegression::default().fit(&m, &w).unwrap().0);
        assert!(worst * 10.0 < fast, "faithful {worst} is not far closer to exact than the fast path's {fast}");
    }

    /// Without pruning or dormant activations the sparse iterations are the
    /// dense f32 ones (the same updates, summed in another order): they agree
    /// to f32 round-off, far closer than either to the exact path.
    #[test]
    fn unpruned_sparse_iterations_are_the_dense_ones() {
        let (m, w) = seeded_problem(131, 4, 7, 203);
        let fit = |sparse: Option<SparseSettings>| {
            let reg =
                ConvolutiveRegression { fast: FastSettings { sparse, ..Default::default() }, ..Default::default() };
            reg.fit(&m, &w).unwrap().0
        };
        let (dense, sparse) = (fit(None), fit(Some(SparseSettings::unpruned())));
        let scale = dense.data.iter().copied().fold(0.0, f64::max);
        let worst = sparse.data.iter().zip(&dense.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-4 * scale, "unpruned sparse vs dense f32: {worst} > 1e-4 × {scale}");
        let pruned = fit(Some(SparseSettings::default()));
        let pruned_worst = pruned.data.iter().zip(&dense.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < pruned_worst, "pruning changes nothing here: {worst} vs {pruned_worst}");
    }

    /// A template whose first slice fits the music badly (another piano's):
    /// the initialisation, which fits the first slices alone, shrinks its
    /// activations to the noise level, and the convolutive iterations bring
    /// them back. Pruning the initialisation drops them for good; the
    /// default does not prune it, and agrees with the exact path.
    #[test]
    fn the_initialisation_keeps_what_the_convolutive_iterations_bring_back() {
        let (f, tau, k, n) = (8, 4, 2, 120);
        // Template 0: its first slice in bin 0, where the music is silent;
        // its later slices in bins 4 and 5. Template 1: bins 2 and 3.
        let mut w = vec![0.0f32; f * tau * k];
        w[0] = 1.0;
        for i in 1..tau {
            w[i * f + 4] = 1.0;
            w[i * f + 5] = 1.0;
        }
        for i in 0..tau {
            w[(tau + i) * f + 2] = 1.0;
            w[(tau + i) * f + 3] = 1.0;
        }
        let w = ConvTemplates::new(f, tau, k, w).unwrap();
        // The music: bins 4 and 5 sound for τ frames from every 20th frame,
        // bins 2 and 3 all the time; 1e-9 elsewhere.
        let mut m = Matrix { rows: f, cols: n, data: vec![1e-9; f * n] };
        for t in 0..n {
            for bin in [2, 3] {
                m.set(bin, t, 1.0);
            }
            if t % 20 < tau {
                for bin in [4, 5] {
                    m.set(bin, t, 2.0);
                }
            }
        }
        let total_of_template_0 = |h: &Matrix<f64>| (0..n).map(|t| h.get(0, t)).sum::<f64>();
        let exact = ConvolutiveRegression { precision: Precision::Exact, ..Default::default() };
        let (hx, _) = exact.fit(&m, &w).unwrap();
        let expected = total_of_template_0(&hx);
        assert!(expected > 10.0, "the exact path does not bring template 0 back: {expected}");
        let fast = ConvolutiveRegression::default();
        let got = total_of_template_0(&fast.fit(&m, &w).unwrap().0);
        assert!((got - expected).abs() <= 0.02 * expected, "default: {got} against {expected}");
        let pruned_init = ConvolutiveRegression {
            fast: FastSettings {
                sparse: Some(SparseSettings { init_prune: 1e-6, ..Default::default() }),
                ..Default::default()
            },
            ..Default::default()
        };
        let lost = total_of_template_0(&pruned_init.fit(&m, &w).unwrap().0);
        assert!(lost < 1e-3 * expected, "a pruned initialisation keeps template 0: {lost} against {expected}");
    }

    /// Work is cut in fixed blocks, so one thread or two give the same bits.
    #[test]
    fn fast_path_is_bit_identical_whatever_the_thread_count() {
        let (m, w) = seeded_problem(300, 5, 9, 157);
        let reg = ConvolutiveRegression {
            fast: FastSettings {
                sparse: Some(SparseSettings { refresh_every: 3, ..Default::default() }),
                ..Default::default()
            },
            ..Default::default()
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| reg.fit(&m, &w).unwrap().0)
        };
        let one = run(1);
        assert_eq!(one.data, run(2).data);
        assert_eq!(one.data, run(3).data);
    }

    /// `max_bins` fits the lowest bins alone: the same bits as a fit on the
    /// cut spectrogram and templates, whatever the bins above the cut hold;
    /// and with the cut the fast path still agrees with the exact path.
    #[test]
    fn a_bin_cut_fits_only_the_lowest_bins() {
        let (m, w) = seeded_problem(131, 4, 7, 203);
        let bins = 64;
        let mut cut_m = Matrix::zeros(bins, m.cols);
        for t in 0..m.cols {
            cut_m.col_mut(t).copy_from_slice(&m.col(t)[..bins]);
        }
        let cut_w: Vec<f32> = w.data.chunks(w.n_bins).flat_map(|s| s[..bins].to_vec()).collect();
        let cut_w = ConvTemplates::new(bins, w.tau, w.n_templates, cut_w).unwrap();
        let mut noisy_top = m.clone();
        for t in 0..m.cols {
            noisy_top.col_mut(t)[bins..].iter_mut().for_each(|x| *x = 3.0 * *x + 1.0);
        }
        let mut fits = Vec::new();
        for precision in [Precision::Exact, Precision::Fast] {
            let reg = ConvolutiveRegression { precision, max_bins: Some(bins), ..Default::default() };
            let (h, info) = reg.fit(&m, &w).unwrap();
            let all_bins = ConvolutiveRegression { precision, ..Default::default() };
            assert_eq!(h.data, all_bins.fit(&cut_m, &cut_w).unwrap().0.data, "{precision:?}");
            assert_eq!(h.data, reg.fit(&noisy_top, &w).unwrap().0.data, "{precision:?}");
            let (full, full_info) = all_bins.fit(&m, &w).unwrap();
            assert_ne!(h.data, full.data, "{precision:?}: the cut changes nothing");
            assert!(info.flops < full_info.flops * 0.6, "{precision:?}: {} vs {}", info.flops, full_info.flops);
            fits.push(h);
        }
        let scale = fits[0].data.iter().copied().fold(0.0, f64::max);
        let worst = fits[1].data.iter().zip(&fits[0].data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= 2e-2 * scale, "fast vs exact with the cut: {worst} > 2e-2 × {scale}");
    }

    #[test]
    fn mismatched_bins_are_an_error() {
        let templates = ConvTemplates::new(10, 2, 1, vec![1.0; 20]).unwrap();
        let m = Matrix::zeros(11, 5);
        assert!(ConvolutiveRegression::default().fit(&m, &templates).is_err());
    }
}
