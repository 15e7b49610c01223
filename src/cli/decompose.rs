//! `sscnmf decompose`: the tutorial's blind analyses of an excerpt.

use std::collections::HashMap;

use sscnmf::audio::load_audio;
use sscnmf::factorization::blind::{
    estimate_fundamental, frequency_midi, kl_divergence, order_by_pitch, rank_one_frobenius, rank_one_kl,
    relative_frobenius_error, BlindCnmf, RankOne,
};
use sscnmf::factorization::Matrix;
use sscnmf::plot::{save, DecompositionFigure, ImageFormat, TfFigure, TfImage};
use sscnmf::spectrogram::Stft;

use super::*;

/// What `decompose` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DecomposeModel {
    /// Blind NMF with the KL divergence (Lee & Seung's multiplicative updates).
    Nmf,
    /// Blind convolutive NMF (Smaragdis), templates of --tau frames.
    Cnmf,
    /// The best rank-one approximations of the excerpt (a single note): KL in closed form, Frobenius by SVD.
    RankOne,
}

#[derive(Args, Debug)]
pub(super) struct DecomposeArgs {
    /// Audio file (WAV, FLAC, MP3, OGG).
    input: PathBuf,
    /// nmf, cnmf or rank-one.
    #[arg(long, value_enum, default_value = "nmf")]
    model: DecomposeModel,
    /// Number of components (nmf, cnmf).
    #[arg(long, default_value_t = 7)]
    rank: usize,
    /// Frames per template (cnmf; 20 ms each).
    #[arg(long, default_value_t = 10)]
    tau: usize,
    /// Start of the excerpt, seconds.
    #[arg(long, default_value_t = 0.0)]
    start: f64,
    /// End of the excerpt, seconds (default: the end of the file).
    #[arg(long)]
    end: Option<f64>,
    /// Multiplicative-update iterations (nmf, cnmf).
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Seed of the random start (nmf, cnmf).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use channel N (0-based) instead of the mean of the channels.
    #[arg(long)]
    channel: Option<usize>,
    /// Refuse excerpts longer than this many seconds (the factorisation holds the whole spectrogram).
    #[arg(long, default_value_t = 120.0)]
    max_duration: f64,
    /// Write the factors here (safetensors, F64 tensors; see --help).
    #[arg(short, long, value_name = "FILE.safetensors")]
    output: Option<PathBuf>,
    /// Draw the factors (nmf, cnmf: W and H) or the approximations (rank-one) here: .png or .svg.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// Highest frequency drawn, Hz.
    #[arg(long, default_value_t = 10_000.0)]
    fmax: f64,
    /// Replace output files that exist.
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Rows of a column-major R × N matrix, row after row (row-major).
fn row_major(m: &Matrix<f64>) -> Vec<f64> {
    (0..m.rows).flat_map(|r| (0..m.cols).map(move |c| m.get(r, c))).collect()
}

pub(super) fn decompose(a: DecomposeArgs) -> anyhow::Result<()> {
    let mut inputs = vec![a.input.clone()];
    if let Some(o) = &a.output {
        if o.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            bail!("{}: the factors are written as .safetensors", o.display());
        }
        check_writable(o, a.overwrite, &inputs)?;
        inputs.push(o.clone());
    }
    if let Some(p) = &a.plot {
        ImageFormat::from_path(p)?;
        check_writable(p, a.overwrite, &inputs)?;
    }
    let duration = match a.end {
        Some(end) if end.is_nan() || end <= a.start => bail!("--end ({end}) must be after --start ({})", a.start),
        Some(end) => Some(end - a.start),
        None => None,
    };
    if a.model != DecomposeModel::RankOne && (a.rank == 0 || a.iterations == 0) {
        bail!("--rank and --iterations must be at least 1");
    }
    let config = StftConfig::default();
    let decode = DecodeOptions {
        channel: channel_selection(a.channel),
        offset_seconds: a.start,
        duration_seconds: duration,
        max_duration_seconds: a.max_duration,
    };
    let audio = load_audio(&a.input, &decode, config.sample_rate)?;
    if audio.samples.is_empty() {
        bail!("{}: no audio in the excerpt", a.input.display());
    }
    let stft = Stft::new(config.clone())?;
    let spec = stft.magnitude(&audio.samples);
    let m = Matrix::from_column_major(spec.n_bins, spec.n_frames, spec.data)?;
    let bin_hz = config.sample_rate as f64 / config.n_fft as f64;
    let hop = config.hop_seconds();
    let excerpt = format!("{:.2}-{:.2} s", a.start, a.start + audio.duration_seconds());
    let name = a.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();

    let mut meta: HashMap<String, String> = HashMap::from([
        ("format".into(), "sscnmf-decomposition".into()),
        ("source".into(), name.clone()),
        ("start_seconds".into(), a.start.to_string()),
        ("sample_rate".into(), config.sample_rate.to_string()),
        ("n_fft".into(), config.n_fft.to_string()),
        ("win_length".into(), config.win_length.to_string()),
        ("hop_length".into(), config.hop_length.to_string()),
        ("tool_version".into(), env!("CARGO_PKG_VERSION").into()),
    ]);

    if a.model == DecomposeModel::RankOne {
        let kl = rank_one_kl(&m);
        let fro = rank_one_frobenius(&m)?;
        let (kl_model, fro_model) = (kl.reconstruct(), fro.reconstruct());
        let row = |r: &RankOne, model: &Matrix<f64>| {
            let f0 = estimate_fundamental(&r.w, bin_hz);
            serde_json::json!({
                "kl_divergence": kl_divergence(&m, model),
                "relative_frobenius_error": relative_frobenius_error(&m, model),
                "fundamental_hz": f0,
                "pitch": f0.map(|f| frequency_midi(f).round()),
            })
        };
        let (kl_row, fro_row) = (row(&kl, &kl_model), row(&fro, &fro_model));
        if a.json {
            let obj = serde_json::json!({"input": a.input, "excerpt_seconds": [a.start, a.start + audio.duration_seconds()],
                "frames": m.cols, "bins": m.rows, "kl": kl_row, "frobenius": fro_row});
            println!("{obj}");
        } else {
            println!("{name}, {excerpt}: {} frames x {} bins; best rank-one approximations", m.cols, m.rows);
            println!("{:<22} {:>14} {:>16} {:>10}", "", "KL divergence", "rel. Frobenius", "pitch");
            for (label, r) in [("KL (closed form)", &kl_row), ("Frobenius (SVD)", &fro_row)] {
                let pitch = r["pitch"].as_f64().map(|p| sscnmf::plot::note_name(p as u8)).unwrap_or_else(|| "-".into());
                println!(
                    "{label:<22} {:>14.6e} {:>16.4} {pitch:>10}",
                    r["kl_divergence"].as_f64().unwrap_or(f64::NAN),
                    r["relative_frobenius_error"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
        if let Some(o) = &a.output {
            meta.insert("model".into(), "rank-one".into());
            let tensors = [
                ("w_kl", vec![m.rows], kl.w.clone()),
                ("h_kl", vec![m.cols], kl.h.clone()),
                ("w_frobenius", vec![m.rows], fro.w.clone()),
                ("h_frobenius", vec![m.cols], fro.h.clone()),
            ];
            sscnmf::files::write_atomically(o, &sscnmf::files::f64_safetensors(&tensors, meta)?)?;
            eprintln!("wrote {}", o.display());
        }
        if let Some(p) = &a.plot {
            let image = |x: &Matrix<f64>| TfImage::from_matrix(x, bin_hz, a.start, hop);
            let caption = |what: &str, r: &serde_json::Value| {
                format!("{what}: rel. error {:.3}", r["relative_frobenius_error"].as_f64().unwrap_or(f64::NAN))
            };
            let panels = vec![
                ("spectrogram".to_string(), image(&m)),
                (caption("rank one, KL", &kl_row), image(&kl_model)),
                (caption("rank one, Frobenius", &fro_row), image(&fro_model)),
            ];
            let mut figure = TfFigure::rank_one(panels, format!("{name}, {excerpt}: best rank-one approximations"));
            figure.freq.end = a.fmax;
            save(&figure, p)?;
            eprintln!("wrote {}", p.display());
        }
        return Ok(());
    }

    let tau = if a.model == DecomposeModel::Nmf { 1 } else { a.tau };
    let params = BlindCnmf { rank: a.rank, tau, iterations: a.iterations, seed: a.seed };
    let fitted = params.fit(&m).map_err(|e| e.with_path(&a.input))?;
    let (d, f0) = order_by_pitch(&fitted, bin_hz);
    let model = d.reconstruct();
    let rel = relative_frobenius_error(&m, &model);
    let initial = d.loss_history.first().copied().unwrap_or(f64::NAN);
    let what = if tau == 1 { "NMF (KL, Lee & Seung)".to_string() } else { format!("CNMF (KL, Smaragdis), tau {tau}") };
    // Each component's share of the model.
    let shares: Vec<f64> = (0..d.activations.rows).map(|q| d.contribution(q)).collect();
    let total: f64 = shares.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    if a.json {
        let components: Vec<_> = f0
            .iter()
            .zip(&shares)
            .map(|(f, s)| serde_json::json!({"fundamental_hz": f, "pitch": f.map(|f| frequency_midi(f).round()), "share": s / total}))
            .collect();
        let obj = serde_json::json!({"input": a.input, "model": if tau == 1 { "nmf" } else { "cnmf" }, "rank": a.rank, "tau": tau,
            "iterations": a.iterations, "seed": a.seed, "frames": m.cols, "bins": m.rows,
            "initial_kl_divergence": initial, "kl_divergence": d.loss(), "relative_frobenius_error": rel, "components": components});
        println!("{obj}");
    } else {
        println!(
            "{name}, {excerpt}: {} frames x {} bins; {what}, rank {}, {} iterations, seed {}",
            m.cols, m.rows, a.rank, a.iterations, a.seed
        );
        println!("KL divergence {initial:.6e} -> {:.6e}; relative Frobenius error {rel:.4}", d.loss());
        println!("{:>9} {:>10} {:>6} {:>7}", "component", "f0 (Hz)", "pitch", "share");
        for (q, (f, s)) in f0.iter().zip(&shares).enumerate() {
            let (hz, pitch) = match f {
                Some(f) => {
                    (format!("{f:.1}"), sscnmf::plot::note_name(frequency_midi(*f).round().clamp(0.0, 127.0) as u8))
                }
                None => ("-".into(), "-".into()),
            };
            println!("{:>9} {hz:>10} {pitch:>6} {:>6.1}%", q + 1, 100.0 * s / total);
        }
    }
    if let Some(o) = &a.output {
        meta.extend([
            ("model".to_string(), if tau == 1 { "nmf" } else { "cnmf" }.to_string()),
            ("rank".into(), a.rank.to_string()),
            ("tau".into(), tau.to_string()),
            ("iterations".into(), a.iterations.to_string()),
            ("seed".into(), a.seed.to_string()),
            ("kl_divergence".into(), d.loss().to_string()),
            ("relative_frobenius_error".into(), rel.to_string()),
        ]);
        let r = d.activations.rows;
        let tensors = [
            ("W", vec![r, tau, m.rows], d.templates.data.clone()),
            ("H", vec![r, m.cols], row_major(&d.activations)),
            ("fundamental_hz", vec![r], f0.iter().map(|f| f.unwrap_or(f64::NAN)).collect()),
            ("loss_history", vec![d.loss_history.len()], d.loss_history.clone()),
        ];
        sscnmf::files::write_atomically(o, &sscnmf::files::f64_safetensors(&tensors, meta)?)?;
        eprintln!("wrote {}", o.display());
    }
    if let Some(p) = &a.plot {
        let title = format!("{name}, {excerpt}: blind {what}, rank {}", a.rank);
        let mut figure = DecompositionFigure::new(&d, bin_hz, hop, a.start, title);
        figure.freq.end = a.fmax;
        save(&figure, p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
