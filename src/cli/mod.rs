//! Argument parsing and the commands' glue. Each command is a function from
//! its parsed arguments to `anyhow::Result<()>`; errors print as one line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use sscnmf::attack_decay::AttackDecayLearner;
use sscnmf::audio::{ChannelSelection, DecodeOptions};
use sscnmf::evaluation::evaluate;
use sscnmf::factorization::{Beta, Precision, RankOneCnmf};
use sscnmf::notes::{read_notes, write_notes, NoteFormat};
use sscnmf::soundfont::{render_isolated_notes, IsolatedNoteTiming, LoadedSoundFont, Preset};
use sscnmf::spectrogram::StftConfig;
use sscnmf::templates::{discover_maps_notes, is_audio_file, read_manifest, TemplateDictionary, TemplateLearner};
use sscnmf::transcription::{
    ActivationScale, IntensityMerge, IntensitySelection, Method, Model, OffsetRule, Transcriber,
    DEFAULT_INTENSITY_SELECTION, DEFAULT_THRESHOLD,
};
use sscnmf::{Error, ErrorKind};

#[derive(Parser, Debug)]
#[command(
    name = "sscnmf",
    version,
    about = "Piano transcription by semi-supervised convolutive NMF",
    long_about = "Turns piano recordings into MIDI notes. It learns one time-frequency template per note \
from recordings of isolated notes (`learn`), then finds when each template sounds in music (`transcribe`): \
the method of Wu, Marmoret & Cohen, \"Semi-Supervised Convolutive NMF for Automatic Music Transcription\", SMC 2022.",
    after_help = "Examples:\n  sscnmf transcribe examples/bach-prelude-c.flac\n  \
sscnmf learn data/FluidR3/ISOL/NO -o fluid.templates\n  \
sscnmf transcribe song.flac --templates fluid.templates -o song.mid --format csv\n  \
sscnmf evaluate song.txt song.mid\n  \
sscnmf render song.mid -o song.wav\n  \
sscnmf plot roll song.flac --reference song.mid -o roll.png\n  \
sscnmf decompose song.flac --model nmf --rank 7 --end 6 --plot nmf.png\n\nExit codes: 0 success, 2 bad usage or input (the message names the file), \
1 internal error, 130 interrupted (Ctrl-C)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Learn a template dictionary from recordings of isolated notes.
    #[command(after_help = "Examples:\n  sscnmf learn MAPS/ENSTDkCl/ISOL/NO -o enstdkcl.templates\n  \
sscnmf learn my-notes/ --manifest my-notes/notes.csv -o mine.templates --tau 5\n  \
sscnmf learn --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 --program 0 -o fluid-gm.templates\n  \
sscnmf learn MAPS/ENSTDkCl/ISOL/NO --intensity P,M,F -o enstdkcl-pmf.templates   # one template per note and intensity\n\n\
The folder's files must follow MAPS's naming MAPS_ISOL_NO_<I>_S<s>_M<midi>_<piano>.<wav|flac|mp3|ogg> \
(e.g. MAPS_ISOL_NO_M_S0_M60_ENSTDkCl.wav); with --manifest any names work. Each recording should hold one \
note, struck once. With --soundfont, each pitch of --pitches is rendered alone from the SoundFont's preset \
(--bank, --program) at --velocity, with MAPS's timing, and learned in memory. Then the decision rule (δ, \
offsets, velocities) is calibrated on a synthetic mix of the isolated notes (unless --no-calibrate) and stored \
in the file. The output is a safetensors file (see the README for its layout).")]
    Learn(LearnArgs),
    /// Transcribe audio files to MIDI (and CSV, MAPS txt or JSON note lists).
    #[command(
        after_help = "Examples:\n  sscnmf transcribe examples/bach-prelude-c.flac                 # the built-in piano\n  \
sscnmf transcribe song.flac --templates piano.templates\n  \
sscnmf transcribe a.wav b.wav -o out/ --templates piano.templates --format csv --format txt\n  \
sscnmf transcribe long.mp3 --templates piano.templates --offset 60 --duration 30 --threshold 0.08\n  \
sscnmf transcribe song.flac --sonify                # also song.sonified.wav, to hear it\n  \
sscnmf transcribe song.flac --sonify --soundfont FluidR3_GM.sf2 --program 0\n  \
sscnmf transcribe 'songs/*.flac' -o out/ --jobs 2   # a glob, 2 files at a time\n  \
sscnmf transcribe song.flac --plot                  # also song.png, its piano roll\n  \
sscnmf transcribe songs/ -o out/ --json -q > results.jsonl\n  \
sscnmf transcribe song.flac --templates other-piano.templates --adapt   # templates of another piano\n  \
sscnmf transcribe song.flac --faithful             # the paper's iterations, unshortened, in f32\n\n\
Three paths compute the activations (CNMF and NMF). The default, fast path shortens the paper's \
iterations (extrapolated updates, small activations pruned): within 0.3 F-points of the reference path \
on the dev songs, but not the same notes (a velocity or an offset differs on every dev song). \
--faithful runs the paper's iterations as they are in f32: on the 36 dev songs the same notes as --exact \
(f64, dense, the reference) on every song, at about half --exact's time and about 4x the fast path's.\n\n\
Without -o, each output goes beside its input (song.flac -> song.mid; with --sonify, song.sonified.wav, which \
starts at --offset and lasts as long as the audio transcribed or until the last release has faded; with --plot, song.png). Existing files are not replaced unless \
--overwrite is given.\n\n\
Several files (folders, globs) are transcribed --jobs at a time (default: one per core, each file on one \
thread; the outputs are the same whatever --jobs). A file that fails is reported and the others go on; the \
batch ends with a summary (files done, failed with the reason, audio time, wall time, speed) and exit code \
2 if any failed. --json prints one line per file (in input order), then {\"summary\": {...}}. Ctrl-C stops at once: finished outputs are whole, unfinished ones are not written."
    )]
    Transcribe(TranscribeArgs),
    /// Score a transcription against a reference, as mir_eval.transcription does.
    #[command(after_help = "Examples:\n  sscnmf evaluate MAPS_MUS-bach_ENSTDkCl.txt bach.mid\n  \
sscnmf evaluate reference.mid estimate.csv --json\n\n\
Either side may be MIDI (.mid), CSV (start_time_s,end_time_s,pitch_midi,velocity), MAPS txt or JSON. \
A note matches when the pitch is the same (within 50 cents), the onsets are within --onset-tolerance, and, \
for the onset+offset scores, the offsets are within max(50 ms, --offset-ratio x reference duration); \
the matching is a maximum bipartite matching, as in mir_eval.")]
    Evaluate(EvaluateArgs),
    /// Evaluate on a MAPS or MAESTRO dataset: learn each piano's templates, transcribe its songs, sweep δ.
    #[command(after_help = "Examples:\n  \
sscnmf experiment ../shared/data/dev --out results/\n  \
sscnmf experiment ../shared/data/dev --matched-only --tau 5,10,20 --limit 4 --out results/\n  \
sscnmf experiment ../shared/data/dev --tau 5,10,20 --methods cnmf,nmf,attack-decay --out results/\n  \
sscnmf experiment ../shared/data/dev --adapt --out adapted/          # templates adapted to each song\n  \
sscnmf experiment MAPS --pianos ENSTDkCl,ENSTDkAm --train-pianos AkPnBcht --jobs 1 --out cross/\n  \
sscnmf experiment maestro-v3.0.0 --split test --limit 20 --templates-from MAPS --train-pianos ENSTDkCl --out maestro/\n\n\
MAPS layout: <DATASET>/<piano>/ISOL/NO/ (isolated notes, MAPS names) and <DATASET>/<piano>/MUS/ (songs with .txt \
or .mid ground truth beside them). MAESTRO layout: <DATASET>/maestro-v*.csv (columns split, midi_filename, \
audio_filename, ...; paths relative to <DATASET>); its songs have no isolated notes, so the templates come from \
the pianos of a MAPS folder (--templates-from, --train-pianos).\n\n\
Writes report.md (table 1: scores per condition; table 2: cross-piano matrix; table 3: time), results.json and \
songs.csv to --out, and caches templates, attack/decay models and activations in <out>/cache: re-running with another δ grid, or after \
an interruption, reuses them. A song that fails is listed in the report and the run goes on (exit code 2 at the \
end).")]
    Experiment(ExperimentArgs),
    /// Play a note list (MIDI, CSV, MAPS txt, JSON) into a WAV file, to listen to it.
    #[command(
        after_help = "Examples:\n  sscnmf render song.mid -o song.wav                       # the built-in additive piano\n  \
sscnmf render song.csv -o song.wav --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 --program 0\n  \
sscnmf render MAPS_MUS-bach_ENSTDkCl.txt -o reference.wav --sample-rate 22050\n\n\
Without --soundfont the notes are played by a small additive piano built into the binary (up to 16 \
slightly stretched partials, each decaying exponentially, the higher ones faster; velocity sets the level; \
no pedal): it always works and is meant for hearing which notes a transcription holds, not for beauty. With \
--soundfont, rustysynth plays the preset (--bank, --program; reverb and chorus off). The file is mono \
16-bit PCM, scaled to peak at -1 dBFS, and lasts until the last release has faded (0.25 s after the last \
note off with the built-in piano, 1 s with a SoundFont)."
    )]
    Render(RenderArgs),
    /// Time each stage of a transcription, fast path against the exact (f64) reference.
    #[command(after_help = "Examples:\n  sscnmf bench song.flac --templates piano.templates --duration 30\n  \
sscnmf bench song.flac --templates piano.templates --no-exact --full-band   # all bins, the paper's setting\n  \
sscnmf bench song.flac --templates piano.templates --faithful   # also the faithful path (transcribe --faithful)\n\n\
By default cnmf fits the bins below 8268.75 Hz on both paths (--max-frequency, --full-band). Prints the wall time of decoding, STFT, initialisation, iterations and note reading, the iterations per \
second, the effective GFLOP/s of the products, the peak memory, the speed-up over the exact path and \
whether both paths give the same notes.")]
    Bench(BenchArgs),
    /// Pictures (PNG or SVG): spectrogram, templates, activations, piano roll against a reference.
    #[command(after_help = "Examples:\n  \
sscnmf plot spectrogram examples/bach-prelude-c.flac -o spectrogram.png --duration 8\n  \
sscnmf plot templates --notes 36,60,84 -o templates.png\n  \
sscnmf plot activations examples/bach-prelude-c.flac -o activations.png --duration 8\n  \
sscnmf plot roll examples/bach-prelude-c.flac --reference examples/bach-prelude-c.reference.mid -o roll.png\n\n\
The format follows the output's extension (.png or .svg). See `sscnmf plot <KIND> --help`.")]
    Plot(PlotArgs),
    /// Blind NMF or CNMF of an excerpt, or its best rank-one approximations (the tutorial's analyses).
    #[command(after_help = "Examples:\n  \
sscnmf decompose examples/bach-prelude-c.flac --model nmf --rank 7 --end 2.1 --plot nmf.png\n  \
sscnmf decompose song.wav --model cnmf --rank 4 --tau 10 --start 6 --end 8 -o factors.safetensors\n  \
sscnmf decompose MAPS_ISOL_NO_M_S0_M69_ENSTDkAm.wav --model rank-one --end 4 --plot a4.png\n\n\
The magnitude spectrogram (the paper's STFT) of the excerpt --start..--end is factorised from scratch, with no \
templates: nmf is M = WH with the KL divergence and Lee & Seung's multiplicative updates; cnmf gives each \
component a template of --tau frames (Smaragdis). The start is seeded-random (--seed), so runs repeat. Components \
are sorted by the fundamental estimated from their spectra; the table gives each one's f0, pitch and share of the \
model, and the KL divergence and relative Frobenius error of the fit. rank-one gives, for a single note, the best \
rank-one approximations: in KL the closed form (M1)(1'M)/(1'M1), in Frobenius the SVD's leading triplet.\n\n\
-o writes safetensors with F64 tensors: W [rank, tau, bins] (each template of unit sum), H [rank, frames], \
fundamental_hz [rank] (NaN when none), loss_history; for rank-one w_kl, h_kl, w_frobenius, h_frobenius. \
The metadata holds the STFT and the parameters.")]
    Decompose(DecomposeArgs),
}

mod bench;
mod decompose;
mod evaluate;
mod experiment;
mod learn;
mod plot;
mod render;
mod transcribe;
use bench::{bench, BenchArgs};
use decompose::{decompose, DecomposeArgs};
use evaluate::{evaluate_cmd, EvaluateArgs};
use experiment::{experiment, ExperimentArgs};
use learn::{learn, LearnArgs};
use plot::{plot, PlotArgs};
use render::{render, RenderArgs};
use transcribe::{transcribe, TranscribeArgs};

/// The last panic's message and location, kept by the panic hook.
static PANIC_MESSAGE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Exit code after an interrupt (Ctrl-C): 128 + SIGINT, as shells report it.
const INTERRUPTED: i32 = 130;

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    // Ctrl-C (or SIGTERM) ends the process at once; the outputs finished so
    // far are whole (each was renamed into place when complete), and the
    // one being written is removed with its temporary file.
    let _ = ctrlc::set_handler(|| {
        sscnmf::files::remove_pending_temporary_files();
        eprintln!("interrupted: finished outputs are complete; the unfinished one was not written");
        std::process::exit(INTERRUPTED);
    });
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // A panic is a bug: it is reported on one line with exit code 1, not
    // with Rust's multi-line message (a decoder's panic on a malformed file
    // is caught by the library and becomes an input error).
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        *PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{message}{location}"));
    }));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Learn(a) => learn(a),
        Command::Transcribe(a) => transcribe(a),
        Command::Evaluate(a) => evaluate_cmd(a),
        Command::Experiment(a) => experiment(a),
        Command::Render(a) => render(a),
        Command::Bench(a) => bench(a),
        Command::Plot(a) => plot(a),
        Command::Decompose(a) => decompose(a),
    });
    let Ok(result) = result else {
        let message = PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        eprintln!("error: internal error, please report it: {}", message.replace('\n', " "));
        return 1;
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let internal = e.downcast_ref::<Error>().is_some_and(|e| e.kind() == ErrorKind::Internal);
            eprintln!("error: {}", one_line(&e));
            if internal {
                1
            } else {
                2
            }
        }
    }
}

/// The error and its causes on one line, without repeating a cause the
/// message already contains.
fn one_line(e: &anyhow::Error) -> String {
    if let Some(e) = e.downcast_ref::<Error>() {
        // Our errors already say everything in their message.
        return e.to_string();
    }
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out.replace('\n', " ")
}

fn progress(len: usize, quiet: bool, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn channel_selection(channel: Option<usize>) -> ChannelSelection {
    channel.map(ChannelSelection::Channel).unwrap_or(ChannelSelection::Mix)
}

/// Refuses, before any work, an output that would replace an input, an
/// existing file (without `overwrite`), or that cannot be written (a missing
/// or read-only folder).
fn check_writable(path: &Path, overwrite: bool, inputs: &[PathBuf]) -> anyhow::Result<()> {
    refuse_overwriting_an_input(path, inputs)?;
    if path.exists() && !overwrite {
        bail!("{}: already exists (use --overwrite to replace it)", path.display());
    }
    sscnmf::files::check_output_folder(path)?;
    Ok(())
}

/// Refuses an output that is one of `inputs` (also through a link).
fn refuse_overwriting_an_input(path: &Path, inputs: &[PathBuf]) -> anyhow::Result<()> {
    if inputs.iter().any(|i| same_file(i, path)) {
        bail!("{}: output would overwrite an input file", path.display());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The model in `path`, or the built-in dictionary.
fn load_model(path: Option<&Path>) -> anyhow::Result<Model> {
    Ok(match path {
        Some(path) => Model::load(path)?,
        None => Model::Templates(TemplateDictionary::builtin()?),
    })
}

/// A transcriber running `method` (default: the model's own) on the model
/// in `templates` (default: the built-in dictionary); errors name the file.
fn transcriber_for(templates: Option<&Path>, method: Option<Method>) -> anyhow::Result<(Transcriber, Method)> {
    let model = load_model(templates)?;
    let method = method.unwrap_or(model.default_method());
    let transcriber = Transcriber::for_method(method, model).map_err(|e| match templates {
        Some(path) => e.with_path(path),
        None => e,
    })?;
    Ok((transcriber, method))
}

/// The bins fitted: all with `--full-band`, those below `--max-frequency`
/// `hz`, else the transcriber's default; an error names the templates file,
/// whose sample rate bounds `hz`.
fn apply_max_frequency(
    transcriber: &mut Transcriber,
    hz: Option<f64>,
    full_band: bool,
    templates: Option<&Path>,
) -> anyhow::Result<()> {
    if full_band {
        transcriber.set_max_frequency(None)?;
        return Ok(());
    }
    let Some(hz) = hz else {
        return Ok(());
    };
    transcriber.set_max_frequency(Some(hz)).map_err(|e| {
        let e = Error::invalid_input(format!("--max-frequency {hz}: {e}"));
        match templates {
            Some(path) => e.with_path(path),
            None => e,
        }
    })?;
    Ok(())
}

/// `--chunk-seconds` in frames of the dictionary's STFT.
fn chunk_frames(seconds: f64, dictionary: &TemplateDictionary) -> anyhow::Result<usize> {
    let hop = dictionary.params.stft.hop_length as f64 / dictionary.params.stft.sample_rate as f64;
    if !(seconds.is_finite() && seconds >= hop) {
        bail!("--chunk-seconds must be at least one frame ({hop} s), not {seconds}");
    }
    Ok((seconds / hop).round() as usize)
}

/// `--adapt` and its settings, shared by `transcribe` and `experiment`.
#[derive(Args, Debug, Clone)]
struct AdaptArgs {
    /// Adapt the templates to each recording (cnmf, nmf): after the fit on the learned templates, a few
    /// multiplicative updates of the templates themselves on the recording, pulled towards the learned
    /// ones (a Gamma prior whose mode is the learned template), alternated with updates of the
    /// activations. For templates learned on another piano than the recording's (dev data: +4 to +16
    /// points of onset F; up to 3 points lost on a piano's own templates, hence off by default; about
    /// 6 s more per 30 s of audio). Long recordings adapt chunk by chunk (each --chunk-seconds chunk
    /// from the learned templates).
    #[arg(long)]
    adapt: bool,
    /// Rounds of adaptation (one template and one activation update each).
    #[arg(long, requires = "adapt", value_name = "N", default_value_t = sscnmf::factorization::adapt::DEFAULT_ROUNDS)]
    adapt_rounds: usize,
    /// Weight of the pull towards the learned templates, relative to a template's mean total activation
    /// (0: free updates; large: the learned templates).
    #[arg(long, requires = "adapt", value_name = "WEIGHT", default_value_t = sscnmf::factorization::adapt::DEFAULT_STRENGTH)]
    adapt_strength: f64,
    /// After adapting, fit the activations again from scratch on the adapted templates (the regression's
    /// iterations once more).
    #[arg(long, requires = "adapt")]
    adapt_refit: bool,
    /// The first fit (on the learned templates) without pruning small activations (dense f32 products on
    /// the fast path; slower).
    #[arg(long, requires = "adapt")]
    adapt_dense_first_pass: bool,
    /// Cycles of adaptation rounds (each followed by the refit with --adapt-refit), each from the
    /// previous cycle's templates and activations.
    #[arg(long, requires = "adapt", value_name = "N", default_value_t = 1)]
    adapt_cycles: usize,
    /// Also fit a spectral filter shared by all templates (one gain per frequency band and template
    /// slice, N bands per octave; 0: none; 3 measured best): what the recording's piano does to
    /// every note alike, which also reaches the notes that are seldom played.
    #[arg(long, requires = "adapt", value_name = "N", default_value_t = 0)]
    adapt_filter_bands: usize,
    /// Weight of the pull of the shared filter's gains towards 1 (no colouring), relative to their
    /// mean denominator (0: free).
    #[arg(long, requires = "adapt", value_name = "WEIGHT", default_value_t = sscnmf::factorization::adapt::DEFAULT_FILTER_STRENGTH)]
    adapt_filter_strength: f64,
}

impl AdaptArgs {
    /// The adaptation asked for (`None` without --adapt); errors on a bad strength.
    fn adaptation(&self) -> anyhow::Result<Option<sscnmf::factorization::Adaptation>> {
        if !self.adapt {
            return Ok(None);
        }
        let a = sscnmf::factorization::Adaptation {
            rounds: self.adapt_rounds,
            strength: self.adapt_strength,
            refit: self.adapt_refit,
            dense_first_pass: self.adapt_dense_first_pass,
            cycles: self.adapt_cycles,
            filter_bands_per_octave: self.adapt_filter_bands,
            filter_strength: self.adapt_filter_strength,
        };
        a.validate()?;
        Ok(Some(a))
    }
}
