//! `sscnmf experiment`: the paper's protocol on a MAPS-layout dataset.

use super::*;

#[derive(Args, Debug)]
pub(super) struct ExperimentArgs {
    /// Dataset folder in the MAPS layout.
    dataset: PathBuf,
    /// Pianos (sub-folders) to test; default all.
    #[arg(long, value_delimiter = ',')]
    pianos: Vec<String>,
    /// Pianos whose templates are used; default the same as --pianos (each on every other: cross-piano).
    #[arg(long, value_delimiter = ',')]
    train_pianos: Vec<String>,
    /// Only matched pianos (templates of a piano on its own songs).
    #[arg(long)]
    matched_only: bool,
    /// τ values to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    tau: Vec<usize>,
    /// δ grid as start:step:stop.
    #[arg(long, default_value = "0.01:0.01:0.40")]
    thresholds: String,
    /// Seconds of each song to transcribe (and of its ground truth to score).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Only the first N songs of each piano.
    #[arg(long)]
    limit: Option<usize>,
    /// Threshold raw activations as the paper did.
    #[arg(long)]
    raw_activations: bool,
    /// f64 reference path.
    #[arg(long)]
    exact: bool,
    /// Also run the reference path (f64, dense) on every song and report how the fast path
    /// compares: F at the global and songwise δ, and the songs with identical notes.
    #[arg(long, conflicts_with = "exact")]
    compare_exact: bool,
    /// Output folder for report.md and results.json (and the cache of templates and activations).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

pub(super) fn experiment(a: ExperimentArgs) -> anyhow::Result<()> {
    use sscnmf::experiments::{run_experiment, ExperimentConfig, ThresholdGrid};
    let grid: ThresholdGrid = a.thresholds.parse()?;
    let config = ExperimentConfig {
        dataset: a.dataset.clone(),
        test_pianos: a.pianos.clone(),
        train_pianos: a.train_pianos.clone(),
        matched_only: a.matched_only,
        taus: a.tau.clone(),
        thresholds: grid,
        duration_seconds: a.duration,
        song_limit: a.limit,
        scale: if a.raw_activations { ActivationScale::Raw } else { ActivationScale::Max },
        precision: if a.exact { Precision::Exact } else { Precision::Fast },
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        cache: a.out.as_ref().map(|o| o.join("cache")),
        compare_exact: a.compare_exact,
    };
    let bar = progress(0, a.quiet, "experiment");
    let report = run_experiment(&config, |done, total, what| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
    })?;
    bar.finish_and_clear();
    let markdown = report.to_markdown();
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        sscnmf::files::write_atomically(&out.join("report.md"), markdown.as_bytes())?;
        sscnmf::files::write_atomically(&out.join("results.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    println!("{markdown}");
    Ok(())
}
