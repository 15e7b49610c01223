//! `sscnmf learn`: templates from isolated notes.

use super::*;
use sscnmf::calibration::calibrate_on_folder;

#[derive(Args, Debug)]
pub(super) struct LearnArgs {
    /// Folder of isolated-note recordings (MAPS naming), or the manifest's folder.
    notes_dir: Option<PathBuf>,
    /// Output dictionary file.
    #[arg(short, long)]
    output: PathBuf,
    /// What to learn: cnmf (a template dictionary, also used by `transcribe --method nmf`) or
    /// attack-decay (the attack/decay model of Cheng et al. 2016: attack and decay spectra, decay
    /// rates and attack envelope, 50 rounds per note).
    #[arg(long, default_value = "cnmf", value_name = "METHOD")]
    method: Method,
    /// A CSV with columns `path,midi` listing the recordings (any file names).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// MAPS intensity to use (P, M, F, ...); `any` accepts all.
    #[arg(long, default_value = "M")]
    intensity: String,
    /// MAPS sustain-pedal variant to use (0 or 1); `any` accepts both.
    #[arg(long, default_value = "0")]
    sustain: String,
    /// τ: frames per template (20 ms each).
    #[arg(long, default_value_t = 10)]
    tau: usize,
    /// Maximum learning iterations per note (default: 500 for cnmf, 50 for attack-decay).
    #[arg(long)]
    iterations: Option<usize>,
    /// β of the β-divergence (1 = Kullback-Leibler, as in the paper).
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Stop a note early when the loss improves by less than this fraction (0 = never).
    #[arg(long, default_value_t = 1e-7)]
    tolerance: f64,
    /// Use channel N (0-based) instead of the mean of the channels.
    #[arg(long)]
    channel: Option<usize>,
    /// Learn in f64 instead of f32.
    #[arg(long)]
    exact: bool,
    /// Do not calibrate the decision rule (δ, offsets, velocities) on the folder's isolated
    /// notes at every intensity (a 60 s synthetic mix of them; needs the `.mid` beside each).
    #[arg(long)]
    no_calibrate: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

pub(super) fn learn(a: LearnArgs) -> anyhow::Result<()> {
    let notes = match (&a.manifest, &a.notes_dir) {
        (Some(m), _) => read_manifest(m)?,
        (None, Some(dir)) => {
            let intensity = (a.intensity != "any").then_some(a.intensity.as_str());
            let sustain = match a.sustain.as_str() {
                "any" => None,
                s => Some(s.parse::<u8>().context("--sustain must be 0, 1 or any")?),
            };
            discover_maps_notes(dir, intensity, sustain)?
        }
        (None, None) => bail!("give a folder of isolated notes or --manifest"),
    };
    let inputs: Vec<PathBuf> = notes.iter().map(|n| n.path.clone()).collect();
    check_writable(&a.output, a.overwrite, &inputs)?;
    let source = a.manifest.as_ref().or(a.notes_dir.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
    let decode = DecodeOptions { channel: channel_selection(a.channel), ..Default::default() };
    if a.method == Method::AttackDecay {
        let mut learner = AttackDecayLearner { decode, source, ..Default::default() };
        if let Some(iterations) = a.iterations {
            learner.training.iterations = iterations;
        }
        let bar = progress(notes.len(), a.quiet, "learning");
        let model = learner.learn(&notes, |_| bar.inc(1))?;
        bar.finish_and_clear();
        model.save(&a.output)?;
        if !a.quiet {
            eprintln!("wrote an attack/decay model of {} pitches to {}", model.pitches.len(), a.output.display());
        }
        return Ok(());
    }
    let learner = TemplateLearner {
        stft: StftConfig::default(),
        cnmf: RankOneCnmf {
            tau: a.tau,
            iterations: a.iterations.unwrap_or(RankOneCnmf::default().iterations),
            beta: Beta::new(a.beta)?,
            tolerance: a.tolerance,
            exact: a.exact,
            ..Default::default()
        },
        decode,
        source,
    };
    let bar = progress(notes.len(), a.quiet, "learning");
    let mut dictionary = learner.learn(&notes, |_| bar.inc(1))?;
    bar.finish_and_clear();
    if let (Some(dir), false) = (a.notes_dir.as_ref().filter(|_| a.manifest.is_none()), a.no_calibrate) {
        let sustain = a.sustain.parse::<u8>().unwrap_or(0);
        match Transcriber::new(dictionary.clone()).and_then(|t| calibrate_on_folder(&t, dir, sustain)) {
            Ok(c) => {
                if !a.quiet {
                    eprintln!(
                        "calibrated on a {:.0} s mix of {} isolated notes: δ = {:.2} (onset F {:.1} %), offsets at \
                         {} of the peak, velocity = {:.1} + {:.2}·ln(peak) (error {:.1})",
                        c.mix_seconds,
                        c.mix_notes,
                        c.threshold,
                        100.0 * c.mix_onset_f,
                        c.offset_fraction,
                        c.velocity_intercept,
                        c.velocity_slope,
                        c.mix_velocity_mae
                    );
                }
                dictionary.calibration = Some(c);
            }
            Err(e) => eprintln!("note: not calibrated ({e}); transcription will use δ = {DEFAULT_THRESHOLD}"),
        }
    }
    dictionary.save(&a.output)?;
    let missing = dictionary.missing_pitches();
    if !a.quiet {
        eprintln!(
            "wrote {} templates (MIDI {}..{}, tau {}) to {}",
            dictionary.pitches.len(),
            dictionary.pitches.first().unwrap(),
            dictionary.pitches.last().unwrap(),
            dictionary.tau(),
            a.output.display()
        );
        if !missing.is_empty() {
            eprintln!("no recording for {} piano pitches: {:?}", missing.len(), missing);
        }
    }
    Ok(())
}
