//! Learning one note's template: a rank-one CNMF of its isolated recording
//! (Wu, Marmoret & Cohen 2022, §3.1 and eq. 7-8).

use super::kernels::{CnmfKernel, Real, SPECTROGRAM_FLOOR};
use super::{Beta, ConvTemplates, Matrix};
use crate::{Error, Result};

/// Parameters of the rank-one CNMF that turns one isolated-note spectrogram
/// into a template.
#[derive(Debug, Clone, PartialEq)]
pub struct RankOneCnmf {
    /// τ, frames per template. Default 10 (200 ms at a 20 ms hop), the
    /// paper's best trade-off.
    pub tau: usize,
    /// Maximum number of outer iterations (one H and one W update each).
    /// Default 500, as in the paper.
    pub iterations: usize,
    /// The divergence. Default KL (β = 1).
    pub beta: Beta,
    /// Stop early when the loss decreases by less than this fraction per
    /// iteration. Default 1e-7, the authors' value. 0 disables it. The loss
    /// is evaluated every [`LOSS_EVERY`] iterations (it costs a logarithm per
    /// bin and frame, more than the updates themselves) and the decrease is
    /// averaged over them; the authors evaluated it every iteration.
    pub tolerance: f64,
    /// Frames whose every bin is below this are dropped before learning
    /// (digital silence). Default 1e-10, as in the authors' code.
    pub silence_threshold: f64,
    /// Run in f64 (`true`) or f32 (`false`, default: faster, and the templates
    /// are stored in f32 anyway).
    pub exact: bool,
}

impl Default for RankOneCnmf {
    fn default() -> Self {
        RankOneCnmf {
            tau: 10,
            iterations: 500,
            beta: Beta::KL,
            tolerance: 1e-7,
            silence_threshold: 1e-10,
            exact: false,
        }
    }
}

/// Iterations between two evaluations of the loss during learning.
pub const LOSS_EVERY: usize = 10;

/// The result of [`learn_rank_one`].
#[derive(Debug, Clone)]
pub struct RankOneFit {
    /// The template, F × τ, column-major (slice 0 first), L1-normalised:
    /// `Σ_{f,i} W[f,i] = 1`.
    pub template: Matrix<f64>,
    /// The first of the τ frames the initialisation copied (eq. 8's t*),
    /// counted among the non-silent frames.
    pub init_frame: usize,
    /// Frames used after dropping silent ones.
    pub frames_used: usize,
    /// Iterations run.
    pub iterations: usize,
    /// The loss before iterations 0, 10, 20, … ([`LOSS_EVERY`]), then the
    /// final loss.
    pub loss_history: Vec<f64>,
    /// Whether the tolerance stopped it before `iterations`.
    pub converged: bool,
}

/// The start `t*` of the τ consecutive frames with the largest mean L1 norm
/// (eq. 8): `t* = argmax_t Σ_{j<τ} ‖M[:, t+j]‖₁`. Ties go to the earliest.
pub fn strongest_window(spectrogram: &Matrix<f64>, tau: usize) -> Option<usize> {
    let n = spectrogram.cols;
    if tau == 0 || n < tau {
        return None;
    }
    let norms: Vec<f64> = (0..n).map(|t| spectrogram.col(t).iter().sum()).collect();
    let mut best = (0, f64::NEG_INFINITY);
    for t in 0..=n - tau {
        let s: f64 = norms[t..t + tau].iter().sum();
        if s > best.1 {
            best = (t, s);
        }
    }
    Some(best.0)
}

/// Learns the rank-one CNMF `M ≈ W * h` of one isolated note's magnitude
/// spectrogram `M` (F × N) and returns `W` (F × τ).
///
/// - Frames that are all below `silence_threshold` are dropped.
/// - Initialisation (eq. 8): `W⁰ = M[:, t*..t*+τ]`, `h⁰ = 10⁻¹⁰` except
///   `h⁰[t*] = 1`, so that `W⁰ * h⁰` reproduces the strongest τ frames.
///   (The authors' code put the 1 at `t* + τ`; the paper's placement is the
///   one consistent with the model and is used here.)
/// - Then the multiplicative MM updates of H and W of Fagot et al. (2019),
///   each iteration followed by the renormalisation `W /= λ, h *= λ`,
///   `λ = Σ W`.
pub fn learn_rank_one(spectrogram: &Matrix<f64>, params: &RankOneCnmf) -> Result<RankOneFit> {
    let tau = params.tau;
    if tau == 0 {
        return Err(Error::invalid_input("tau must be at least 1"));
    }
    let f_len = spectrogram.rows;
    let keep: Vec<usize> =
        (0..spectrogram.cols).filter(|&t| spectrogram.col(t).iter().any(|&x| x >= params.silence_threshold)).collect();
    if keep.len() < tau {
        return Err(Error::invalid_input(format!(
            "the note has {} non-silent frames, fewer than tau = {tau}",
            keep.len()
        )));
    }
    let mut m = Matrix::zeros(f_len, keep.len());
    for (c, &t) in keep.iter().enumerate() {
        m.col_mut(c).copy_from_slice(spectrogram.col(t));
    }
    m.data.iter_mut().filter(|x| **x < SPECTROGRAM_FLOOR).for_each(|x| *x = 0.0);
    let t_star = strongest_window(&m, tau).expect("at least tau frames");
    if params.exact {
        run(&m, t_star, params, |x| x)
    } else {
        run(&m.map(|x| x as f32), t_star, params, |x| x as f32)
    }
}

fn run<T: Real>(m: &Matrix<T>, t_star: usize, params: &RankOneCnmf, conv: impl Fn(f64) -> T) -> Result<RankOneFit> {
    let (f_len, n, tau) = (m.rows, m.cols, params.tau);
    let w0 = m.data[t_star * f_len..(t_star + tau) * f_len].to_vec();
    let mut kernel = CnmfKernel::new(ConvTemplates::new(f_len, tau, 1, w0)?);
    let mut h = Matrix { rows: 1, cols: n, data: vec![conv(1e-10); n] };
    h.data[t_star] = conv(1.0);
    kernel.normalize(&mut h);

    let mut history: Vec<f64> = Vec::with_capacity(params.iterations + 1);
    let mut converged = false;
    let mut iterations = 0;
    for it in 0..params.iterations {
        let want_loss = it % LOSS_EVERY == 0;
        let stats = kernel.update_activations(m, &mut h, params.beta, want_loss);
        kernel.update_templates(m, &h, params.beta);
        kernel.normalize(&mut h);
        iterations += 1;
        if let Some(loss) = stats.loss_before {
            let stalled = history.last().is_some_and(|&prev: &f64| {
                params.tolerance > 0.0 && (prev - loss).abs() <= params.tolerance * (LOSS_EVERY as f64) * prev.abs()
            });
            history.push(loss);
            if stalled {
                converged = true;
                break;
            }
        }
    }
    let model = kernel.reconstruct(&h);
    history.push(super::beta_divergence(&m.data, &model.data, params.beta));
    let template = kernel.into_templates();
    if template.data.iter().any(|&x| !(x.into()).is_finite()) {
        return Err(Error::invalid_input("learning diverged (non-finite template values)"));
    }
    Ok(RankOneFit {
        template: Matrix { rows: f_len, cols: tau, data: template.data.iter().map(|&x| x.into()).collect() },
        init_frame: t_star,
        frames_used: n,
        iterations,
        loss_history: history,
        converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic note: a fixed spectral shape decaying over time, after
    /// some digital silence.
    fn decaying_note(f: usize, silent: usize, sounding: usize) -> Matrix<f64> {
        let mut m = Matrix::zeros(f, silent + sounding);
        for t in 0..sounding {
            let env = if t < 3 { (t + 1) as f64 / 3.0 } else { (-(t as f64 - 3.0) / 8.0).exp() };
            for b in 0..f {
                let shape =
                    1.0 / (1.0 + ((b as f64 - 5.0) / 1.5).powi(2)) + 0.5 / (1.0 + ((b as f64 - 10.0) / 1.5).powi(2));
                m.set(b, silent + t, env * shape * (1.0 + 0.1 * (t as f64 / 5.0).sin()));
            }
        }
        m
    }

    #[test]
    fn initialisation_picks_the_strongest_window() {
        let m = decaying_note(16, 5, 30);
        // Among non-silent frames the envelope peaks at t = 2..=3.
        let fit =
            learn_rank_one(&m, &RankOneCnmf { tau: 4, iterations: 0, exact: true, ..Default::default() }).unwrap();
        assert_eq!(fit.frames_used, 30);
        let norms: Vec<f64> = (0..30).map(|t| m.col(5 + t).iter().sum()).collect();
        let best = (0..=26).max_by(|&a, &b| {
            let sa: f64 = norms[a..a + 4].iter().sum();
            let sb: f64 = norms[b..b + 4].iter().sum();
            sa.partial_cmp(&sb).unwrap().then(b.cmp(&a))
        });
        assert_eq!(Some(fit.init_frame), best);
        // With no iterations the template is those frames, normalised.
        let total: f64 = (0..4).map(|j| norms[fit.init_frame + j]).sum();
        for i in 0..4 {
            for b in 0..16 {
                let expect = m.get(b, 5 + fit.init_frame + i) / total;
                assert!((fit.template.get(b, i) - expect).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn learning_decreases_the_loss_and_normalises() {
        let m = decaying_note(24, 3, 40);
        for exact in [true, false] {
            let fit = learn_rank_one(
                &m,
                &RankOneCnmf { tau: 5, iterations: 200, tolerance: 0.0, exact, ..Default::default() },
            )
            .unwrap();
            for pair in fit.loss_history.windows(2) {
                assert!(pair[1] <= pair[0] * (1.0 + 1e-6), "{:?}", pair);
            }
            assert!(fit.loss_history.last().unwrap() < &(0.5 * fit.loss_history[0]));
            let sum: f64 = fit.template.data.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn too_short_or_silent_notes_are_errors() {
        let m = Matrix::zeros(8, 20);
        assert!(learn_rank_one(&m, &RankOneCnmf::default()).is_err());
    }
}
