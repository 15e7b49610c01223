//! `sscnmf learn`: templates from isolated notes.

use super::*;
use sscnmf::calibration::{calibrate_on_folder, calibrate_on_soundfont, calibration_transcriber, Calibration};

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
    /// Learn from a SoundFont (SF2) instead of recordings: each pitch is rendered alone, as MAPS's
    /// isolated notes are (0.5 s of silence, the key held 2 s, 1 s of release).
    #[arg(long, value_name = "FILE.sf2", conflicts_with_all = ["notes_dir", "manifest"])]
    soundfont: Option<PathBuf>,
    /// SoundFont bank of the preset to render (with --soundfont).
    #[arg(long, default_value_t = 0, requires = "soundfont")]
    bank: u8,
    /// SoundFont program of the preset to render (with --soundfont; 0 = GM grand piano).
    #[arg(long, default_value_t = 0, requires = "soundfont")]
    program: u8,
    /// MIDI velocity of the rendered notes (with --soundfont; 70 = MAPS's intensity M).
    #[arg(long, default_value_t = 70, requires = "soundfont", value_parser = clap::value_parser!(u8).range(1..=127))]
    velocity: u8,
    /// MIDI pitches to render, LOW-HIGH (with --soundfont).
    #[arg(long, default_value = "21-108", requires = "soundfont", value_name = "LOW-HIGH")]
    pitches: String,
    /// MAPS intensity to use (P, M, F, ...); `any` accepts all (one recording per pitch). Several,
    /// comma-separated (e.g. P,M,F), learn one template per pitch and intensity; transcription fits
    /// them all and merges each pitch's activations (cnmf only; not with --manifest).
    #[arg(long, default_value = "M", value_delimiter = ',', alias = "intensities")]
    intensity: Vec<String>,
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
    /// Do not calibrate the decision rule (δ, offsets, velocities). By default it is calibrated
    /// on a 60 s synthetic mix of the folder's isolated notes of the --sustain variant at
    /// intensities M and F (needs the `.mid` beside each) or, with --soundfont, of the preset's
    /// notes at velocities 70 and 100; transcribe then uses it.
    #[arg(long)]
    no_calibrate: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// Parses `--pitches LOW-HIGH` (or a single pitch).
fn parse_pitch_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u8>> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| x.trim().parse::<u8>().ok().filter(|&p| p <= 127);
    match (parse(lo), parse(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
        _ => bail!("--pitches must be LOW-HIGH with MIDI numbers 0..127, LOW <= HIGH (e.g. 21-108), not '{s}'"),
    }
}

pub(super) fn learn(a: LearnArgs) -> anyhow::Result<()> {
    if let Some(sf2) = &a.soundfont {
        return learn_from_soundfont(&a, sf2);
    }
    let several = a.intensity.len() > 1;
    if several && (a.manifest.is_some() || a.method == Method::AttackDecay || a.intensity.iter().any(|i| i == "any")) {
        bail!("several --intensity values need a MAPS folder, --method cnmf and no `any`");
    }
    let sustain = match a.sustain.as_str() {
        "any" => None,
        s => Some(s.parse::<u8>().context("--sustain must be 0, 1 or any")?),
    };
    let notes = match (&a.manifest, &a.notes_dir) {
        (Some(m), _) => read_manifest(m)?,
        (None, Some(dir)) => {
            let mut notes = Vec::new();
            for intensity in &a.intensity {
                notes.extend(discover_maps_notes(dir, (intensity != "any").then_some(intensity.as_str()), sustain)?);
            }
            notes
        }
        (None, None) => bail!("give a folder of isolated notes, --manifest or --soundfont"),
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
    let learner = template_learner(&a, decode, source)?;
    let bar = progress(notes.len(), a.quiet, "learning");
    let mut dictionary = match &a.notes_dir {
        Some(dir) if several => learner.learn_maps_intensities(dir, &a.intensity, sustain, |_| bar.inc(1))?,
        _ => learner.learn(&notes, |_| bar.inc(1))?,
    };
    bar.finish_and_clear();
    match (&a.manifest, &a.notes_dir) {
        (None, Some(dir)) if !a.no_calibrate => {
            // Every intensity of the learned sustain variant (calibrate_on_folder keeps M and F).
            let sustain = a.sustain.parse::<u8>().unwrap_or(0);
            calibrate_dictionary(&a, &mut dictionary, |t| calibrate_on_folder(t, dir, sustain));
        }
        (Some(_), _) if !a.no_calibrate && !a.quiet => eprintln!(
            "note: not calibrated (a manifest gives no ground truth to calibrate on); transcription will use δ = \
             {DEFAULT_THRESHOLD}"
        ),
        _ => {}
    }
    save_and_report(&a, &dictionary)
}

/// Calibrates the decision rule of `dictionary` with `how` (unless
/// `--no-calibrate`), saying what was chosen; a failure leaves it
/// uncalibrated with a note (learning still succeeds).
fn calibrate_dictionary(
    a: &LearnArgs,
    dictionary: &mut TemplateDictionary,
    how: impl FnOnce(&Transcriber) -> sscnmf::Result<Calibration>,
) {
    if a.no_calibrate {
        return;
    }
    let spinner = progress(1, a.quiet, "calibrating");
    let calibrated = calibration_transcriber(dictionary.clone()).and_then(|t| how(&t));
    spinner.finish_and_clear();
    match calibrated {
        Ok(c) => {
            if !a.quiet {
                eprintln!(
                    "calibrated on a {:.0} s mix of {} isolated notes: δ = {:.2} (onset F {:.1} %), offsets at {} \
                     of the peak, velocity = {:.1} + {:.2}·ln(peak) (error {:.1})",
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

/// The CNMF learner the arguments describe.
fn template_learner(a: &LearnArgs, decode: DecodeOptions, source: String) -> anyhow::Result<TemplateLearner> {
    Ok(TemplateLearner {
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
    })
}

/// `learn --soundfont`: render each pitch, learn from the renderings in memory.
fn learn_from_soundfont(a: &LearnArgs, sf2: &Path) -> anyhow::Result<()> {
    if a.method == Method::AttackDecay {
        bail!("--soundfont learns CNMF templates only (not --method attack-decay)");
    }
    let range = parse_pitch_range(&a.pitches)?;
    check_writable(&a.output, a.overwrite, &[sf2.to_path_buf()])?;
    let sound_font = LoadedSoundFont::load(sf2)?;
    let preset = Preset { bank: a.bank, program: a.program };
    let name = sound_font.preset_name(preset)?;
    let timing = IsolatedNoteTiming { velocity: a.velocity, ..Default::default() };
    let source = format!(
        "SoundFont {} preset {}:{} \"{}\", velocity {}, rendered by rustysynth",
        sf2.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        a.bank,
        a.program,
        name,
        a.velocity
    );
    let learner = template_learner(a, DecodeOptions::default(), source)?;
    let pitches: Vec<u8> = range.collect();
    let bar = progress(2 * pitches.len(), a.quiet, "rendering");
    let notes = render_isolated_notes(&sound_font, preset, &pitches, timing, learner.stft.sample_rate)?;
    bar.inc(pitches.len() as u64);
    bar.set_message("learning");
    let mut dictionary = learner.learn_rendered(&notes, |_| bar.inc(1))?;
    bar.finish_and_clear();
    calibrate_dictionary(a, &mut dictionary, |t| calibrate_on_soundfont(t, &sound_font, preset, &pitches));
    save_and_report(a, &dictionary)
}

/// Saves the dictionary and says what it holds.
fn save_and_report(a: &LearnArgs, dictionary: &TemplateDictionary) -> anyhow::Result<()> {
    dictionary.save(&a.output)?;
    let missing = dictionary.missing_pitches();
    if !a.quiet {
        let per_pitch = if dictionary.intensities.is_empty() {
            String::new()
        } else {
            format!(" for {} pitches", dictionary.distinct_pitches().len())
        };
        eprintln!(
            "wrote {} templates{per_pitch} (MIDI {}..{}, tau {}) to {}",
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
