//! The reference path: the CNMF model and its multiplicative updates as plain
//! f64 loops over the formulas of the [module docs](super), with no product
//! reformulation, no blocking and no threads. Slow (O(F·τ·K·N) per call with no
//! vectorisation) and obviously correct; the tests check the fast kernels
//! against it.

use super::{Beta, ConvTemplates, Matrix, MODEL_FLOOR};

/// The model `M̂[f,t] = Σ_q Σ_i W[f,i,q] H[q,t−i]` (F × N), not floored.
pub fn reconstruct(templates: &ConvTemplates<f64>, activations: &Matrix<f64>) -> Matrix<f64> {
    let (f_len, tau, k) = (templates.n_bins, templates.tau, templates.n_templates);
    let n = activations.cols;
    assert_eq!(activations.rows, k);
    let mut model = Matrix::zeros(f_len, n);
    for t in 0..n {
        for q in 0..k {
            for i in 0..tau.min(t + 1) {
                let h = activations.get(q, t - i);
                if h == 0.0 {
                    continue;
                }
                for f in 0..f_len {
                    let v = model.get(f, t) + templates.get(f, i, q) * h;
                    model.set(f, t, v);
                }
            }
        }
    }
    model
}

/// `D_β(M | M̂)` of the current factors.
pub fn loss(spectrogram: &Matrix<f64>, templates: &ConvTemplates<f64>, activations: &Matrix<f64>, beta: Beta) -> f64 {
    let model = reconstruct(templates, activations);
    super::beta_divergence(&spectrogram.data, &model.data, beta)
}

/// `R = M ⊙ M̂^(β−2)` and `P = M̂^(β−1)`, with `M̂` floored.
fn ratios(spectrogram: &Matrix<f64>, model: &Matrix<f64>, beta: Beta) -> (Matrix<f64>, Matrix<f64>) {
    let b = beta.value();
    let mut r = model.clone();
    let mut p = model.clone();
    for idx in 0..model.data.len() {
        let y = model.data[idx].max(MODEL_FLOOR);
        r.data[idx] = spectrogram.data[idx] * y.powf(b - 2.0);
        p.data[idx] = y.powf(b - 1.0);
    }
    (r, p)
}

/// One multiplicative update of every activation `H[q,t]`, templates fixed.
pub fn update_activations(
    spectrogram: &Matrix<f64>,
    templates: &ConvTemplates<f64>,
    activations: &mut Matrix<f64>,
    beta: Beta,
) {
    let (f_len, tau, k) = (templates.n_bins, templates.tau, templates.n_templates);
    let n = activations.cols;
    let model = reconstruct(templates, activations);
    let (r, p) = ratios(spectrogram, &model, beta);
    let gamma = beta.mm_exponent();
    for q in 0..k {
        for t in 0..n {
            let (mut num, mut den) = (0.0, 0.0);
            for i in 0..tau {
                if t + i >= n {
                    break;
                }
                for f in 0..f_len {
                    num += templates.get(f, i, q) * r.get(f, t + i);
                    den += templates.get(f, i, q) * p.get(f, t + i);
                }
            }
            let h = activations.get(q, t);
            let updated = if den > 0.0 { h * (num / den).powf(gamma) } else { h };
            activations.set(q, t, updated);
        }
    }
}

/// One multiplicative update of every template entry `W[f,i,q]`, activations
/// fixed.
pub fn update_templates(
    spectrogram: &Matrix<f64>,
    templates: &mut ConvTemplates<f64>,
    activations: &Matrix<f64>,
    beta: Beta,
) {
    let (f_len, tau, k) = (templates.n_bins, templates.tau, templates.n_templates);
    let n = activations.cols;
    let model = reconstruct(templates, activations);
    let (r, p) = ratios(spectrogram, &model, beta);
    let gamma = beta.mm_exponent();
    for q in 0..k {
        for i in 0..tau {
            for f in 0..f_len {
                let (mut num, mut den) = (0.0, 0.0);
                for t in i..n {
                    let h = activations.get(q, t - i);
                    num += r.get(f, t) * h;
                    den += p.get(f, t) * h;
                }
                let idx = (q * tau + i) * f_len + f;
                if den > 0.0 {
                    templates.data[idx] *= (num / den).powf(gamma);
                }
            }
        }
    }
}
