//! Learning one note's template: a rank-one CNMF of its isolated recording
//! (Wu, Marmoret & Cohen 2022, §3.1 and eq. 7-8).

use super::kernels::{CnmfKernel, Real, SPECTROGRAM_FLOOR};
use super::rank_one_kl::{FusedRankOneKl, MAX_TAU};
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
    /// Run in f64 with the generic kernel ([`CnmfKernel`], `true`: the
    /// reference) or in f32 (`false`, default: faster, and the templates are
    /// stored in f32 anyway). In f32, KL with τ ≤ [`MAX_TAU`] uses the fused
    /// rank-one kernel ([`FusedRankOneKl`]), other cases the generic kernel.
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

/// Iterations between two evaluations of the loss during learning. An
/// iteration that also computes the loss costs about 1.9 times one that does
/// not (a logarithm per bin and frame; measured on the fused kernel, Intel
/// Xeon, 2026-12-02), so evaluating it every 10 iterations added 9 % to
/// learning and every 50 adds 2 %. The tolerance test then stops learning at
/// a multiple of 50 iterations; with the default tolerance no note of the
/// dev pianos stops before the 500th (identical templates with
/// `--tolerance 0`).
pub const LOSS_EVERY: usize = 50;

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
    } else if params.beta.is_kl() && tau <= MAX_TAU {
        run_fused(&m.map(|x| x as f32), t_star, params)
    } else {
        run(&m.map(|x| x as f32), t_star, params, |x| x as f32)
    }
}

/// Whether the tolerance test stops learning: the loss fell by at most
/// `tolerance` per iteration, averaged over the last [`LOSS_EVERY`].
fn stalled(history: &[f64], loss: f64, tolerance: f64) -> bool {
    history
        .last()
        .is_some_and(|&prev| tolerance > 0.0 && (prev - loss).abs() <= tolerance * (LOSS_EVERY as f64) * prev.abs())
}

/// [`run`] with the fused f32 KL kernel ([`FusedRankOneKl`]): the same
/// iterations, stopping rule and loss history. The kernel returns the loss
/// *after* an iteration, so the loss before iteration `it` comes from
/// iteration `it − 1`'s pass, and the pass that ends learning (the last
/// iteration, or the one the tolerance stops) also computes the final loss.
fn run_fused(m: &Matrix<f32>, t_star: usize, params: &RankOneCnmf) -> Result<RankOneFit> {
    let (f_len, n, tau) = (m.rows, m.cols, params.tau);
    let w0 = &m.data[t_star * f_len..(t_star + tau) * f_len];
    let mut h0 = vec![1e-10f32; n];
    h0[t_star] = 1.0;
    let mut kernel = FusedRankOneKl::new(&m.data, f_len, n, w0, tau, &h0).expect("tau within the kernel's range");
    let mut pending = kernel.start();

    let mut history: Vec<f64> = Vec::with_capacity(params.iterations / LOSS_EVERY + 2);
    let mut converged = false;
    let mut iterations = 0;
    for it in 0..params.iterations {
        let loss_before = (it % LOSS_EVERY == 0).then_some(pending);
        let stop = loss_before.is_some_and(|loss| stalled(&history, loss, params.tolerance));
        let want_loss = (it + 1) % LOSS_EVERY == 0 || it + 1 == params.iterations || stop;
        if let Some(loss) = kernel.iterate(want_loss) {
            pending = loss;
        }
        iterations += 1;
        if let Some(loss) = loss_before {
            history.push(loss);
            if stop {
                converged = true;
                break;
            }
        }
    }
    history.push(pending);
    let template = kernel.template();
    if template.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid_input("learning diverged (non-finite template values)"));
    }
    Ok(RankOneFit {
        template: Matrix { rows: f_len, cols: tau, data: template.iter().map(|&x| x as f64).collect() },
        init_frame: t_star,
        frames_used: n,
        iterations,
        loss_history: history,
        converged,
    })
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
            let stop = stalled(&history, loss, params.tolerance);
            history.push(loss);
            if stop {
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

    /// A note whose bins each have their own decay and seeded noise, so the
    /// rank-one model does not fit exactly and every bin keeps moving.
    fn noisy_note(f: usize, n: usize, seed: u64) -> Matrix<f64> {
        let mut g = super::super::SplitMix64::new(seed);
        let mut m = Matrix::zeros(f, n);
        for b in 0..f {
            let rate = 4.0 + 8.0 * g.next_unit();
            let shape = 1.0 / (1.0 + ((b as f64 - 0.3 * f as f64) / 3.0).powi(2)) + 0.01;
            for t in 0..n {
                let env = if t < 2 { (t + 1) as f64 / 2.0 } else { (-(t as f64 - 2.0) / rate).exp() };
                m.set(b, t, shape * env * (0.8 + 0.4 * g.next_unit()));
            }
        }
        m
    }

    fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-300)).fold(0.0, f64::max)
    }

    #[test]
    fn fused_kernel_agrees_with_the_exact_path_on_awkward_sizes() {
        // Bins around multiples of 16 (the kernel's blocks) and of 256 (its
        // groups); τ at and between the compiled lengths (5, 10, 20, 32);
        // N from τ up.
        for &(f, tau, n) in
            &[(1, 1, 5), (15, 3, 20), (17, 7, 7), (33, 10, 11), (300, 10, 40), (40, 12, 30), (20, 20, 45), (16, 32, 33)]
        {
            let m = noisy_note(f, n, (f * 100 + tau) as u64);
            let params = RankOneCnmf { tau, iterations: 200, tolerance: 0.0, ..Default::default() };
            let fast = learn_rank_one(&m, &RankOneCnmf { exact: false, ..params.clone() }).unwrap();
            let exact = learn_rank_one(&m, &RankOneCnmf { exact: true, ..params }).unwrap();
            let d = max_rel_diff(&fast.template.data, &exact.template.data);
            // Losses within 10⁻⁵ of each other, or within 10⁻⁷ Σ M (the f32
            // rounding of the loss terms) where they approach 0 (exact fits).
            let mass: f64 = m.data.iter().sum();
            let dl = fast
                .loss_history
                .iter()
                .zip(&exact.loss_history)
                .map(|(a, b)| ((a - b).abs() - 1e-7 * mass).max(0.0) / a.abs().max(b.abs()))
                .fold(0.0, f64::max);
            eprintln!("F {f} tau {tau} N {n}: template {d:.2e} loss {dl:.2e}");
            assert_eq!(fast.loss_history.len(), exact.loss_history.len());
            assert!(d < 1e-4, "F {f} tau {tau} N {n}: templates differ by {d:e}");
            assert!(dl < 1e-5, "F {f} tau {tau} N {n}: losses differ by {dl:e}");
        }
    }

    #[test]
    fn too_short_or_silent_notes_are_errors() {
        let m = Matrix::zeros(8, 20);
        assert!(learn_rank_one(&m, &RankOneCnmf::default()).is_err());
    }
}
