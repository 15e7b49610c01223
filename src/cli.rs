//! Argument parsing and the commands' glue. Each command is a function from
//! its parsed arguments to `anyhow::Result<()>`; errors print as one line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use sscnmf::audio::{ChannelSelection, DecodeOptions};
use sscnmf::evaluation::evaluate;
use sscnmf::factorization::{Beta, Precision, RankOneCnmf};
use sscnmf::notes::{read_notes, write_notes, NoteFormat};
use sscnmf::spectrogram::StftConfig;
use sscnmf::templates::{discover_maps_notes, is_audio_file, read_manifest, TemplateDictionary, TemplateLearner};
use sscnmf::transcription::{ActivationScale, Transcriber, DEFAULT_THRESHOLD};
use sscnmf::{Error, ErrorKind};

#[derive(Parser, Debug)]
#[command(
    name = "sscnmf",
    version,
    about = "Piano transcription by semi-supervised convolutive NMF",
    long_about = "Turns piano recordings into MIDI notes. It learns one time-frequency template per note \
from recordings of isolated notes (`learn`), then finds when each template sounds in music (`transcribe`): \
the method of Wu, Marmoret & Cohen, \"Semi-Supervised Convolutive NMF for Automatic Music Transcription\", SMC 2022.",
    after_help = "Examples:\n  sscnmf learn data/FluidR3/ISOL/NO -o fluid.templates\n  \
sscnmf transcribe song.flac --templates fluid.templates -o song.mid --format csv\n  \
sscnmf evaluate song.txt song.mid\n\nExit codes: 0 success, 2 bad usage or input (the message names the file), \
1 internal error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Learn a template dictionary from recordings of isolated notes.
    #[command(after_help = "Examples:\n  sscnmf learn MAPS/ENSTDkCl/ISOL/NO -o enstdkcl.templates\n  \
sscnmf learn my-notes/ --manifest my-notes/notes.csv -o mine.templates --tau 5\n\n\
The folder's files must follow MAPS's naming MAPS_ISOL_NO_<I>_S<s>_M<midi>_<piano>.<wav|flac|mp3|ogg> \
(e.g. MAPS_ISOL_NO_M_S0_M60_ENSTDkCl.wav); with --manifest any names work. Each recording should hold one \
note, struck once. The output is a safetensors file (see the README for its layout).")]
    Learn(LearnArgs),
    /// Transcribe audio files to MIDI (and CSV, MAPS txt or JSON note lists).
    #[command(after_help = "Examples:\n  sscnmf transcribe song.flac --templates piano.templates\n  \
sscnmf transcribe a.wav b.wav -o out/ --templates piano.templates --format csv --format txt\n  \
sscnmf transcribe long.mp3 --templates piano.templates --offset 60 --duration 30 --threshold 0.08\n\n\
Without -o, each output goes beside its input (song.flac -> song.mid). Existing files are not replaced \
unless --overwrite is given.")]
    Transcribe(TranscribeArgs),
    /// Score a transcription against a reference, as mir_eval.transcription does.
    #[command(after_help = "Examples:\n  sscnmf evaluate MAPS_MUS-bach_ENSTDkCl.txt bach.mid\n  \
sscnmf evaluate reference.mid estimate.csv --json\n\n\
Either side may be MIDI (.mid), CSV (start_time_s,end_time_s,pitch_midi,velocity), MAPS txt or JSON. \
A note matches when the pitch is the same (within 50 cents), the onsets are within --onset-tolerance, and, \
for the onset+offset scores, the offsets are within max(50 ms, --offset-ratio x reference duration); \
the matching is a maximum bipartite matching, as in mir_eval.")]
    Evaluate(EvaluateArgs),
    /// Evaluate on a MAPS-layout dataset: learn each piano's templates, transcribe its songs, sweep δ.
    #[command(after_help = "Example:\n  sscnmf experiment ../shared/data/dev --out results/\n\n\
Expects <DATASET>/<piano>/ISOL/NO/ (isolated notes) and <DATASET>/<piano>/MUS/ (songs with .txt or .mid \
ground truth beside them). Writes report.md and results.json to --out.")]
    Experiment(ExperimentArgs),
    /// Time each stage of a transcription, fast path against the exact (f64) reference.
    #[command(after_help = "Example:\n  sscnmf bench song.flac --templates piano.templates --duration 30\n\n\
Prints the wall time of decoding, STFT, initialisation, iterations and note reading, the iterations per \
second, the effective GFLOP/s of the products, the peak memory, the speed-up over the exact path and \
whether both paths give the same notes.")]
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct LearnArgs {
    /// Folder of isolated-note recordings (MAPS naming), or the manifest's folder.
    notes_dir: Option<PathBuf>,
    /// Output dictionary file.
    #[arg(short, long)]
    output: PathBuf,
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
    /// Maximum learning iterations per note.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
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
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct TranscribeArgs {
    /// Audio files (WAV, FLAC, MP3, OGG) or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Template dictionary made by `sscnmf learn`.
    #[arg(short, long)]
    templates: PathBuf,
    /// Output MIDI file (one input) or folder (several inputs). Default: beside each input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also write note lists in these formats: csv, txt (MAPS), json. Repeatable.
    #[arg(long = "format", value_name = "FORMAT")]
    formats: Vec<NoteFormat>,
    /// δ of the onset rule (eq. 10), as a fraction of the recording's largest activation.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Threshold raw activations, as the paper did (δ then depends on the recording's level).
    #[arg(long)]
    raw_activations: bool,
    /// Transcribe only this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Start this many seconds into the file.
    #[arg(long, default_value_t = 0.0)]
    offset: f64,
    /// Use channel N (0-based) instead of the mean of the channels.
    #[arg(long)]
    channel: Option<usize>,
    /// Refuse files longer than this many seconds.
    #[arg(long, default_value_t = 4.0 * 3600.0)]
    max_duration: f64,
    /// Compute in f64 (the reference path) instead of f32.
    #[arg(long)]
    exact: bool,
    /// Replace output files that exist.
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object per file on standard output.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct EvaluateArgs {
    /// Reference notes (MIDI, CSV, MAPS txt or JSON).
    reference: PathBuf,
    /// Estimated notes (same formats).
    estimate: PathBuf,
    /// Onset tolerance in seconds.
    #[arg(long, default_value_t = 0.05)]
    onset_tolerance: f64,
    /// Offset tolerance as a fraction of the reference note's duration (at least 50 ms).
    #[arg(long, default_value_t = 0.2)]
    offset_ratio: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExperimentArgs {
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
    /// Output folder for report.md and results.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Audio file to transcribe.
    audio: PathBuf,
    /// Template dictionary.
    #[arg(short, long)]
    templates: PathBuf,
    /// Seconds of audio (from the start).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Runs of the fast path (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the exact (f64) reference run.
    #[arg(long)]
    no_exact: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Peak resident memory of this process in bytes (Linux), if known.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let dictionary = TemplateDictionary::load(&a.templates)?;
    let mut transcriber = Transcriber::new(dictionary)?;
    transcriber.decode = DecodeOptions { duration_seconds: Some(a.duration), ..Default::default() };
    let total = |t: &sscnmf::transcription::Transcription| {
        t.times.decode + t.times.stft + t.times.init + t.times.iterations + t.times.notes
    };
    let mut best: Option<sscnmf::transcription::Transcription> = None;
    for _ in 0..a.repeat.max(1) {
        let t = transcriber.transcribe_file(&a.audio)?;
        if best.as_ref().is_none_or(|b| total(&t) < total(b)) {
            best = Some(t);
        }
    }
    let fast = best.expect("at least one run");
    let exact = if a.no_exact {
        None
    } else {
        transcriber.regression.precision = Precision::Exact;
        Some(transcriber.transcribe_file(&a.audio)?)
    };
    let iterations = transcriber.regression.init_iterations + transcriber.regression.iterations;
    let report = serde_json::json!({
        "audio": a.audio, "audio_seconds": fast.audio_seconds, "threads": rayon::current_num_threads(),
        "fast": {
            "times": fast.times, "total_seconds": total(&fast),
            "iterations_per_second": iterations as f64 / (fast.times.init + fast.times.iterations),
            "gflops": fast.times.flops / (fast.times.init + fast.times.iterations) / 1e9,
            "realtime_factor": fast.audio_seconds / total(&fast),
            "notes": fast.notes.len(),
        },
        "exact": exact.as_ref().map(|e| serde_json::json!({
            "times": e.times, "total_seconds": total(e), "notes": e.notes.len(),
            "speedup_of_fast": total(e) / total(&fast),
            "same_notes": e.notes == fast.notes,
        })),
        "peak_memory_bytes": peak_memory_bytes(),
    });
    if a.json {
        println!("{report}");
        return Ok(());
    }
    let row = |name: &str, t: &sscnmf::transcription::StageTimes, all: f64| {
        println!(
            "{name:<8} decode {:>7.3}  stft {:>7.3}  init {:>7.3}  iterations {:>7.3}  notes {:>6.3}  total {:>7.3} s",
            t.decode, t.stft, t.init, t.iterations, t.notes, all
        );
    };
    println!("{}: {:.1} s of audio, {} threads", a.audio.display(), fast.audio_seconds, rayon::current_num_threads());
    row("fast", &fast.times, total(&fast));
    println!(
        "         {:.1} iterations/s, {:.1} GFLOP/s, {:.1}x real time, {} notes",
        iterations as f64 / (fast.times.init + fast.times.iterations),
        fast.times.flops / (fast.times.init + fast.times.iterations) / 1e9,
        fast.audio_seconds / total(&fast),
        fast.notes.len()
    );
    if let Some(e) = &exact {
        row("exact", &e.times, total(e));
        println!(
            "         fast path {:.2}x faster; notes {}",
            total(e) / total(&fast),
            if e.notes == fast.notes {
                "identical".to_string()
            } else {
                format!("differ ({} vs {})", fast.notes.len(), e.notes.len())
            }
        );
    }
    if let Some(bytes) = peak_memory_bytes() {
        println!("peak memory {:.0} MB", bytes as f64 / 1e6);
    }
    Ok(())
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Learn(a) => learn(a),
        Command::Transcribe(a) => transcribe(a),
        Command::Evaluate(a) => evaluate_cmd(a),
        Command::Experiment(a) => experiment(a),
        Command::Bench(a) => bench(a),
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

fn check_writable(path: &Path, overwrite: bool, inputs: &[PathBuf]) -> anyhow::Result<()> {
    if inputs.iter().any(|i| same_file(i, path)) {
        bail!("{}: output would overwrite an input file", path.display());
    }
    if path.exists() && !overwrite {
        bail!("{}: already exists (use --overwrite to replace it)", path.display());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn learn(a: LearnArgs) -> anyhow::Result<()> {
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
    let learner = TemplateLearner {
        stft: StftConfig::default(),
        cnmf: RankOneCnmf {
            tau: a.tau,
            iterations: a.iterations,
            beta: Beta::new(a.beta)?,
            tolerance: a.tolerance,
            exact: a.exact,
            ..Default::default()
        },
        decode: DecodeOptions { channel: channel_selection(a.channel), ..Default::default() },
        source: a.manifest.as_ref().or(a.notes_dir.as_ref()).map(|p| p.display().to_string()).unwrap_or_default(),
    };
    let bar = progress(notes.len(), a.quiet, "learning");
    let dictionary = learner.learn(&notes, |_| bar.inc(1))?;
    bar.finish_and_clear();
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

/// Expands folders into their audio files (sorted), keeping files as given.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::io(input, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_audio_file(p))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no audio files (wav, flac, mp3, ogg) in this folder", input.display());
            }
            out.extend(files);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// Where each input's MIDI goes.
fn midi_output_path(input: &Path, output: Option<&Path>, several: bool) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_os_string()).unwrap_or_else(|| "transcription".into());
    match output {
        Some(o) if several || o.is_dir() => o.join(Path::new(&stem).with_extension("mid")),
        Some(o) => o.to_path_buf(),
        None => input.with_file_name(Path::new(&stem).with_extension("mid")),
    }
}

fn transcribe(a: TranscribeArgs) -> anyhow::Result<()> {
    let inputs = expand_inputs(&a.inputs)?;
    let several = inputs.len() > 1;
    if let Some(o) = &a.output {
        if several && !o.is_dir() {
            bail!("{}: with several inputs, -o must name an existing folder", o.display());
        }
    }
    let dictionary = TemplateDictionary::load(&a.templates)?;
    let mut transcriber = Transcriber::new(dictionary)?;
    transcriber.detector.threshold = a.threshold;
    if a.raw_activations {
        transcriber.detector.scale = ActivationScale::Raw;
    }
    if a.exact {
        transcriber.regression.precision = Precision::Exact;
    }
    transcriber.decode = DecodeOptions {
        channel: channel_selection(a.channel),
        offset_seconds: a.offset,
        duration_seconds: a.duration,
        max_duration_seconds: a.max_duration,
    };

    // Decide every output path first, and refuse before any work is done.
    let mut plans = Vec::new();
    for input in &inputs {
        let midi = midi_output_path(input, a.output.as_deref(), several);
        let mut outs = vec![(midi.clone(), NoteFormat::Midi)];
        for &f in &a.formats {
            if f != NoteFormat::Midi {
                outs.push((midi.with_extension(f.extension()), f));
            }
        }
        for (p, _) in &outs {
            check_writable(p, a.overwrite, &inputs)?;
        }
        plans.push((input.clone(), outs));
    }

    let bar = progress(plans.len(), a.quiet || plans.len() == 1, "transcribing");
    let failed = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let mut audio_seconds = 0.0;
    let mut last_error = None;
    for (input, outs) in &plans {
        let result = transcriber.transcribe_file(input).and_then(|t| {
            for (path, format) in outs {
                write_notes(path, &t.notes, *format)?;
            }
            Ok(t)
        });
        bar.inc(1);
        match result {
            Ok(t) => {
                audio_seconds += t.audio_seconds;
                if a.json {
                    let obj = serde_json::json!({
                        "input": input, "outputs": outs.iter().map(|(p, _)| p).collect::<Vec<_>>(),
                        "notes": t.notes.len(), "audio_seconds": t.audio_seconds, "status": "ok"
                    });
                    println!("{obj}");
                } else if !a.quiet {
                    bar.suspend(|| {
                        eprintln!("{}: {} notes -> {}", input.display(), t.notes.len(), outs[0].0.display())
                    });
                }
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                if a.json {
                    println!("{}", serde_json::json!({"input": input, "status": "error", "error": e.to_string()}));
                }
                if several {
                    bar.suspend(|| eprintln!("error: {e}"));
                }
                last_error = Some(e);
            }
        }
    }
    bar.finish_and_clear();
    let failed = failed.into_inner();
    if several && !a.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{} files transcribed, {} failed; {:.1} s of audio in {:.1} s ({:.1}x real time)",
            plans.len() - failed,
            failed,
            audio_seconds,
            secs,
            audio_seconds / secs.max(1e-9)
        );
    }
    match last_error {
        Some(e) if !several => Err(e.into()),
        Some(_) => Err(anyhow::anyhow!("{failed} of {} files failed", plans.len())),
        None => Ok(()),
    }
}

fn evaluate_cmd(a: EvaluateArgs) -> anyhow::Result<()> {
    let reference = read_notes(&a.reference)?;
    let estimate = read_notes(&a.estimate)?;
    let e = evaluate(&reference, &estimate, a.onset_tolerance, a.offset_ratio);
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    println!("{} reference notes, {} estimated notes", e.n_reference, e.n_estimate);
    println!("{:<16} {:>9} {:>9} {:>9} {:>9} {:>8}", "", "Precision", "Recall", "F1", "Accuracy", "Matched");
    for (name, s) in [("Onset", &e.onset), ("Onset + offset", &e.onset_offset)] {
        println!(
            "{:<16} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            name, s.precision, s.recall, s.f_measure, s.accuracy, s.matched
        );
    }
    Ok(())
}

fn experiment(a: ExperimentArgs) -> anyhow::Result<()> {
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
