//! Convolutive regression: the activations H of a spectrogram on fixed
//! templates (Wu, Marmoret & Cohen 2022, §3.2, eq. 9). The problem is convex
//! in H for KL; the multiplicative updates converge to its minimum.

use super::kernels::{CnmfKernel, Real, SPECTROGRAM_FLOOR};
use super::{Beta, ConvTemplates, Matrix, SplitMix64};
use crate::{Error, Result};

/// Which arithmetic the regression runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 dense products (the default): about twice the speed of f64;
    /// agrees with [`Precision::Exact`] to single precision (see the tests
    /// and BENCHMARKS.md for the effect on notes).
    #[default]
    Fast,
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
    /// f32 or f64. Default [`Precision::Fast`].
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
    /// Fits the activations of `spectrogram` (F × N magnitudes) on
    /// `templates` (F × τ × K). Returns H (K × N) in f64.
    pub fn fit(&self, spectrogram: &Matrix<f64>, templates: &ConvTemplates<f32>) -> Result<(Matrix<f64>, FitInfo)> {
        if spectrogram.rows != templates.n_bins {
            return Err(Error::invalid_input(format!(
                "spectrogram has {} frequency bins but the templates have {}",
                spectrogram.rows, templates.n_bins
            )));
        }
        let n = spectrogram.cols;
        let k = templates.n_templates;
        let bins = self.max_bins.unwrap_or(spectrogram.rows).clamp(1, spectrogram.rows);
        let (mut m, cut_templates);
        let templates = if bins < spectrogram.rows {
            m = Matrix::zeros(bins, n);
            for t in 0..n {
                m.col_mut(t).copy_from_slice(&spectrogram.col(t)[..bins]);
            }
            let mut data = Vec::with_capacity(bins * templates.tau * k);
            for slice in templates.data.chunks(templates.n_bins) {
                data.extend_from_slice(&slice[..bins]);
            }
            cut_templates = ConvTemplates::new(bins, templates.tau, k, data)?;
            &cut_templates
        } else {
            m = spectrogram.clone();
            templates
        };
        for t in 0..n {
            let col = m.col_mut(t);
            if col.iter().all(|&x| x < self.silence_floor) {
                col.iter_mut().for_each(|x| *x = self.silence_floor);
            } else {
                col.iter_mut().filter(|x| **x < SPECTROGRAM_FLOOR).for_each(|x| *x = 0.0);
            }
        }
        let mut rng = SplitMix64::new(self.seed);
        let h0: Vec<f64> = (0..k * n).map(|_| rng.next_unit()).collect();
        let h0 = Matrix { rows: k, cols: n, data: h0 };
        match self.precision {
            Precision::Exact => self.run(&m, &templates.map(|x| x as f64), h0),
            Precision::Fast => {
                let (h, info) = self.run(&m.map(|x| x as f32), templates, h0.map(|x| x as f32))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for precision in [Precision::Exact, Precision::Fast] {
            let reg = ConvolutiveRegression { precision, iterations: 400, track_loss: true, ..Default::default() };
            let (h, info) = reg.fit(&m, &templates).unwrap();
            for pair in info.loss_history.windows(2) {
                assert!(pair[1] <= pair[0] * (1.0 + 1e-5));
            }
            for (q, t, v) in [(0, 5, 2.0), (1, 12, 1.0), (2, 12, 0.5), (0, 30, 1.5)] {
                assert!((h.get(q, t) - v).abs() < 0.05 * v, "{precision:?} H[{q},{t}] = {}", h.get(q, t));
            }
            let total: f64 = h.data.iter().sum();
            assert!((total - 5.0).abs() < 0.25, "{total}");
        }
    }

    #[test]
    fn mismatched_bins_are_an_error() {
        let templates = ConvTemplates::new(10, 2, 1, vec![1.0; 20]).unwrap();
        let m = Matrix::zeros(11, 5);
        assert!(ConvolutiveRegression::default().fit(&m, &templates).is_err());
    }
}
