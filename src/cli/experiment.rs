//! `sscnmf experiment`: the paper's protocol on a MAPS or MAESTRO dataset.

use super::*;

#[derive(Args, Debug)]
pub(super) struct ExperimentArgs {
    /// Dataset folder: MAPS layout (<piano>/ISOL/NO, <piano>/MUS), or MAESTRO's (maestro-v*.csv inside).
    dataset: PathBuf,
    /// MAPS pianos (sub-folders) to test; default all. Not for MAESTRO.
    #[arg(long, value_delimiter = ',')]
    pianos: Vec<String>,
    /// Pianos whose templates are used; default the same as --pianos (each on every other: cross-piano),
    /// or every piano of --templates-from.
    #[arg(long, value_delimiter = ',')]
    train_pianos: Vec<String>,
    /// A MAPS folder whose pianos' ISOL/NO give the templates (default: the dataset itself). Required for
    /// MAESTRO, which has no isolated notes.
    #[arg(long, value_name = "MAPS_DIR")]
    templates_from: Option<PathBuf>,
    /// MAESTRO split to transcribe: train, validation or test [default: test].
    #[arg(long, value_parser = ["train", "validation", "test"])]
    split: Option<String>,
    /// Only matched pianos (templates of a piano on its own songs).
    #[arg(long)]
    matched_only: bool,
    /// τ values to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    tau: Vec<usize>,
    /// Methods to compare, comma-separated: cnmf (the paper's), nmf (supervised NMF on the first
    /// slices of the same templates, at each τ), attack-decay (Cheng et al. 2016, its own model
    /// learned from the same isolated notes; no τ, run once per pair of pianos). All get the same
    /// spectrogram, onset rule and δ grid. Example: --methods cnmf,nmf,attack-decay
    #[arg(long, value_delimiter = ',', default_value = "cnmf", value_name = "METHOD")]
    methods: Vec<Method>,
    /// MAPS intensities to learn templates from, comma-separated: one (default M) gives one template
    /// per pitch, as in the paper; several (e.g. P,M,F) one template per pitch and intensity, all
    /// fitted, the rows of each pitch merged (cnmf and nmf; attack-decay keeps M).
    #[arg(long, value_delimiter = ',', default_value = "M", value_name = "I")]
    intensities: Vec<String>,
    /// With several --intensities: how the rows of a pitch are merged, sum or max.
    #[arg(long, default_value = "sum", value_name = "MERGE")]
    intensity_merge: IntensityMerge,
    /// With several --intensities: which templates cnmf's convolutive iterations use: `all`, or a
    /// fraction f in (0, 1]: per chunk, after the NMF initialisation on all of them, each pitch's
    /// templates whose summed activation is at least f of the pitch's most active one.
    #[arg(long, default_value_t = DEFAULT_INTENSITY_SELECTION, value_name = "all|FRACTION")]
    intensity_selection: IntensitySelection,
    /// δ grid as start:step:stop.
    #[arg(long, default_value = "0.01:0.01:0.40")]
    thresholds: String,
    /// Seconds of each song to transcribe (and of its ground truth to score).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Only the first N songs of each piano (MAESTRO: of the split, in the index's order).
    #[arg(long)]
    limit: Option<usize>,
    /// Threshold raw activations as the paper did.
    #[arg(long)]
    raw_activations: bool,
    /// f64 reference path.
    #[arg(long)]
    exact: bool,
    /// The paper's iterations as they are, in f32 (see `transcribe --faithful`): the tables of
    /// the reference path at about half its time. With --compare-exact, compares this path
    /// with the reference path instead of the fast one.
    #[arg(long, conflicts_with = "exact")]
    faithful: bool,
    /// Fit only the spectrogram's bins below this frequency (Hz; up to the Nyquist frequency,
    /// 22050 at 44.1 kHz, which fits all bins). Default for cnmf and nmf: 8268.75 (1536 of the 4097 bins
    /// at 44.1 kHz; within 0.3 F-points of all bins on the dev songs, 2.7x less work per
    /// iteration). The templates file is not changed. cnmf and nmf only, on both paths; the templates are learned and calibrated on all bins.
    #[arg(long, value_name = "HZ")]
    max_frequency: Option<f64>,
    /// Fit every frequency bin, up to the Nyquist frequency (the paper's setting; slower).
    #[arg(long, conflicts_with = "max_frequency")]
    full_band: bool,
    /// Also run the reference path (f64, dense) on every song and report how the main path (fast,
    /// or faithful with --faithful) compares: F at the global and songwise δ, and the songs with
    /// identical notes.
    #[arg(long, conflicts_with = "exact")]
    compare_exact: bool,
    /// Output folder for report.md, results.json and songs.csv, and the cache of templates and
    /// activations (<out>/cache) that a re-run or an interrupted run reuses.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Songs transcribed at a time [default: one per core].
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    #[command(flatten)]
    adapt: AdaptArgs,
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
        templates_from: a.templates_from.clone(),
        split: a.split.clone(),
        matched_only: a.matched_only,
        taus: a.tau.clone(),
        thresholds: grid,
        duration_seconds: a.duration,
        song_limit: a.limit,
        scale: if a.raw_activations { ActivationScale::Raw } else { ActivationScale::Max },
        precision: if a.exact {
            Precision::Exact
        } else if a.faithful {
            Precision::Faithful
        } else {
            Precision::Fast
        },
        max_frequency: a.max_frequency,
        full_band: a.full_band,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        cache: a.out.as_ref().map(|o| o.join("cache")),
        compare_exact: a.compare_exact,
        jobs: a.jobs.map_or(0, |j| j as usize),
        methods: a.methods.clone(),
        adaptation: a.adapt.adaptation()?,
        intensities: a.intensities.clone(),
        intensity_merge: a.intensity_merge,
        intensity_selection: a.intensity_selection,
    };
    let bar = progress(0, a.quiet, "experiment");
    let report = run_experiment(&config, |done, total, what| {
        bar.set_length(total as u64);
        // Songs finish on several threads: never move the bar back.
        if done as u64 >= bar.position() {
            bar.set_position(done as u64);
        }
        bar.set_message(what.to_string());
    })?;
    bar.finish_and_clear();
    if let Some(out) = &a.out {
        report.write(out)?;
    }
    println!("{}", report.to_markdown());
    match report.failed_songs() {
        0 => Ok(()),
        n => {
            Err(Error::invalid_input(format!("{n} song(s) failed (listed under \"Failed songs\" in the report)"))
                .into())
        }
    }
}
