//! `sscnmf transcribe`: audio files to MIDI and note lists, one file or a
//! batch (folders, globs) transcribed several at a time.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::Instant;

use sscnmf::evaluation::MatchParams;
use sscnmf::notes::Note;
use sscnmf::plot::PianoRollFigure;
use sscnmf::synth::{write_rendering, Renderer};
use sscnmf::transcription::Transcription;

use super::render::SoundArgs;
use super::*;

#[derive(Args, Debug)]
pub(super) struct TranscribeArgs {
    /// Audio files (WAV, FLAC, MP3, OGG), folders of them, or glob patterns ('songs/*.flac').
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Model made by `sscnmf learn`: a template dictionary (cnmf, nmf) or an attack/decay model.
    /// Default: the built-in grand piano dictionary.
    #[arg(short, long)]
    templates: Option<PathBuf>,
    /// How activations are computed: cnmf (the paper's), nmf (the templates' first slices),
    /// attack-decay (Cheng et al. 2016; needs a model from `learn --method attack-decay`).
    /// Default: cnmf for a template dictionary, attack-decay for an attack/decay model.
    #[arg(long, value_name = "METHOD")]
    method: Option<Method>,
    /// Output file (one input; its extension picks the format: .mid, .csv, .txt for MAPS, .json) or
    /// folder (several inputs, one MIDI file each). Default: a MIDI file beside each input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also write the notes in these formats, beside the main output: csv, txt (MAPS), json, mid.
    /// Repeatable.
    #[arg(long = "format", value_name = "FORMAT")]
    formats: Vec<NoteFormat>,
    /// Also write the transcription played back as audio, beside the notes (song.mid ->
    /// song.sonified.wav): the built-in additive piano, or --soundfont.
    #[arg(long)]
    sonify: bool,
    #[command(flatten)]
    sound: SoundArgs,
    /// δ of the onset rule (eq. 10), on scaled activations. Default (cnmf): the δ calibrated on
    /// the dictionary's isolated notes by `learn`, relative to the mean of the pitches' peak
    /// activations; for a dictionary without a calibration and for nmf and attack-decay, 0.11 of
    /// the recording's largest activation.
    #[arg(long)]
    threshold: Option<f64>,
    /// Where notes end: decay (when the activation stays below a fraction of its peak, or at
    /// the next onset of the pitch; for cnmf the dictionary's calibrated rule, else 0.01 of the
    /// peak) or run-end (the end of eq. 10's on-run, the paper's notes: a few frames long).
    #[arg(long, default_value = "decay", value_parser = ["decay", "run-end"])]
    offsets: String,
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
    /// The reference path: f64, dense, the paper's iterations as they are (about 8x slower)
    #[arg(long)]
    exact: bool,
    /// The paper's iterations as they are, in f32 (none of the fast path's shortcuts): the same
    /// notes as --exact on all 36 dev songs, at about half its time (about 4x the default's)
    #[arg(long, conflicts_with = "exact")]
    faithful: bool,
    /// Fit only the spectrogram's bins below this frequency (Hz; up to the Nyquist frequency,
    /// 22050 at 44.1 kHz, which fits all bins). Default for cnmf and nmf: 8268.75 (1536 of the 4097 bins
    /// at 44.1 kHz; within 0.3 F-points of all bins on the dev songs, 2.7x less work per
    /// iteration). The templates file is not changed. cnmf and nmf only.
    #[arg(long, value_name = "HZ")]
    max_frequency: Option<f64>,
    /// Fit every frequency bin, up to the Nyquist frequency (the paper's setting; slower).
    #[arg(long, conflicts_with = "max_frequency")]
    full_band: bool,
    #[command(flatten)]
    adapt: AdaptArgs,
    /// Recordings longer than this are fitted in chunks of this many seconds, with 2 s of
    /// context on each side (memory stays bounded; notes are those of an unchunked fit).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    chunk_seconds: f64,
    /// Files transcribed at a time. Default: as many as there are cores (RAYON_NUM_THREADS if
    /// set), each on one thread; a single file uses every core. Outputs do not depend on it.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Also draw each transcription's piano roll beside its notes (song.mid -> song.png).
    #[arg(long)]
    plot: bool,
    /// Replace output files that exist.
    #[arg(long)]
    overwrite: bool,
    /// Skip the inputs whose outputs all exist (to continue an interrupted batch).
    #[arg(long, conflicts_with = "overwrite")]
    skip_existing: bool,
    /// Print one JSON object per file on standard output (in input order), then a summary object.
    #[arg(long)]
    json: bool,
    /// No progress bar, no per-file lines, no summary (failures are still reported).
    #[arg(short, long)]
    quiet: bool,
}

/// Whether `s` is a glob pattern rather than a file name.
fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands folders into their audio files (sorted) and glob patterns into
/// the audio files they match (sorted; `glob`'s syntax: `*`, `?`, `[...]`,
/// `**` for any depth), keeping files as given and the first of repeated
/// files. A path that exists is never read as a pattern.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let files = sscnmf::files::sorted_entries(input, is_audio_file)?;
            if files.is_empty() {
                bail!("{}: no audio files (wav, flac, mp3, ogg) in this folder", input.display());
            }
            out.extend(files);
        } else if let Some(pattern) = input.to_str().filter(|s| !input.exists() && is_pattern(s)) {
            let paths =
                glob::glob(pattern).map_err(|e| anyhow::anyhow!("{pattern}: not a valid pattern ({})", e.msg))?;
            // Entries that cannot be read are skipped, as in a folder.
            let mut files: Vec<PathBuf> =
                paths.filter_map(Result::ok).filter(|p| p.is_file() && is_audio_file(p)).collect();
            files.sort();
            if files.is_empty() {
                bail!("{pattern}: no audio files (wav, flac, mp3, ogg) match this pattern");
            }
            out.extend(files);
        } else {
            out.push(input.clone());
        }
    }
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())));
    Ok(out)
}

/// Where each input's main notes file goes (MIDI, unless `-o` names a file
/// of another notes format: [`main_notes_format`]).
fn main_notes_path(input: &Path, output: Option<&Path>, several: bool) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_os_string()).unwrap_or_else(|| "transcription".into());
    match output {
        Some(o) if several || o.is_dir() => o.join(Path::new(&stem).with_extension("mid")),
        Some(o) => o.to_path_buf(),
        None => input.with_file_name(Path::new(&stem).with_extension("mid")),
    }
}

/// The sonified transcription beside the notes: song.mid -> song.sonified.wav.
fn sonified_path(notes: &Path) -> PathBuf {
    notes.with_extension("sonified.wav")
}

/// The format of the main notes file `path`: with one input and `-o FILE`,
/// the one FILE's extension names (song.csv gets CSV, not MIDI bytes under a
/// CSV name; an extension that names no notes format is refused), else MIDI.
/// `-o out.v2/`, a folder to be made, is not a file name. A FILE that is an
/// input is refused as such first, whatever its extension.
fn main_notes_format(
    path: &Path,
    output: Option<&Path>,
    several: bool,
    inputs: &[PathBuf],
) -> anyhow::Result<NoteFormat> {
    let named = output
        .filter(|o| !several && !o.is_dir() && !o.as_os_str().to_string_lossy().ends_with(std::path::is_separator))
        .is_some();
    let Some(ext) = path.extension().filter(|_| named) else {
        return Ok(NoteFormat::Midi);
    };
    refuse_overwriting_an_input(path, inputs)?;
    NoteFormat::from_path(path).with_context(|| {
        format!(
            "{}: -o names the notes file, whose extension picks its format: .mid, .csv, .txt (MAPS) or .json, not \
             .{} (for audio, use --sonify)",
            path.display(),
            ext.to_string_lossy()
        )
    })
}

/// One input and everything it will write.
struct Plan {
    input: PathBuf,
    notes: Vec<(PathBuf, NoteFormat)>,
    sonified: Option<PathBuf>,
    /// The piano roll picture (`--plot`).
    picture: Option<PathBuf>,
}

impl Plan {
    fn outputs(&self) -> impl Iterator<Item = &Path> {
        self.notes.iter().map(|(p, _)| p.as_path()).chain(self.sonified.as_deref()).chain(self.picture.as_deref())
    }
}

/// What became of one input.
enum Outcome {
    Done { notes: usize, audio_seconds: f64, seconds: f64 },
    Failed(Error),
    Skipped,
}

/// How a batch is run: `jobs` files at a time, each on `threads` threads.
#[derive(Debug, Clone, Copy)]
struct Parallelism {
    jobs: usize,
    threads: usize,
}

impl Parallelism {
    /// `--jobs` (default: one file per core), and the cores left to each file.
    fn choose(jobs: Option<u16>, files: usize) -> Self {
        let cores = rayon::current_num_threads().max(1);
        let jobs = jobs.map(usize::from).unwrap_or(cores).clamp(1, files.max(1));
        Parallelism { jobs, threads: (cores / jobs).max(1) }
    }
}

/// Everything a file's work needs, shared by the workers.
struct Work<'a> {
    transcriber: &'a Transcriber,
    renderer: Option<&'a Renderer>,
    sample_rate: u32,
}

impl Work<'_> {
    /// Transcribes `plan.input` and writes its outputs.
    fn run(&self, plan: &Plan, progress: &dyn Fn(f64)) -> sscnmf::Result<Transcription> {
        let t = self.transcriber.transcribe_file_with_progress(&plan.input, progress)?;
        for (path, format) in &plan.notes {
            write_notes(path, &t.notes, *format)?;
        }
        if let Some(path) = &plan.picture {
            let name = plan.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let roll = PianoRollFigure::new(&t.notes, None, &MatchParams::onset_only(), name);
            sscnmf::plot::save(&roll, path)?;
        }
        if let (Some(path), Some(renderer)) = (&plan.sonified, self.renderer) {
            self.sonify(path, renderer, &t)?;
        }
        Ok(t)
    }

    /// Writes `t`'s notes played by `renderer`, aligned with the audio
    /// transcribed: the WAV starts at `--offset` and lasts as long as the
    /// audio, or until the last release has faded if that is later.
    fn sonify(&self, path: &Path, renderer: &Renderer, t: &Transcription) -> sscnmf::Result<()> {
        let start = self.transcriber.decode.offset_seconds;
        let notes: Vec<Note> =
            t.notes.iter().map(|n| Note { onset: n.onset - start, offset: n.offset - start, ..*n }).collect();
        let duration = renderer.duration_of(&notes).max(t.audio_seconds);
        write_rendering(path, renderer, &notes, self.sample_rate, duration)
    }

    /// [`run`](Self::run), with a panic (a bug) turned into this file's
    /// internal error so that the other files go on.
    fn run_caught(&self, plan: &Plan, progress: &dyn Fn(f64)) -> Outcome {
        let started = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(plan, progress))) {
            Ok(Ok(t)) => Outcome::Done {
                notes: t.notes.len(),
                audio_seconds: t.audio_seconds,
                seconds: started.elapsed().as_secs_f64(),
            },
            Ok(Err(e)) => Outcome::Failed(e.with_path(&plan.input)),
            Err(_) => {
                let message = PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                Outcome::Failed(
                    Error::internal(format!("internal error, please report it: {}", message.replace('\n', " ")))
                        .with_path(&plan.input),
                )
            }
        }
    }
}

/// Why `input` failed: the message, and the file it concerns when that is
/// not `input` itself (an output that could not be written).
fn reason(input: &Path, e: &Error) -> String {
    match e.path() {
        Some(p) if p != input => e.to_string(),
        _ => e.message().to_string(),
    }
}

/// Prints `value` on a line of standard output; a closed pipe (`| head`)
/// is not an error: the rest of the batch goes on.
fn print_line(value: &serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{value}");
}

/// Seconds as the summary says them: s, min or h.
fn human_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.2} h", seconds / 3600.0)
    }
}

/// The configured transcriber (model, method and options).
fn transcriber(a: &TranscribeArgs) -> anyhow::Result<Transcriber> {
    let (mut transcriber, method) = transcriber_for(a.templates.as_deref(), a.method)?;
    if a.exact && method == Method::AttackDecay {
        bail!("--exact applies to cnmf and nmf; the attack/decay model runs in f32 only");
    }
    if a.faithful && method == Method::AttackDecay {
        bail!("--faithful applies to cnmf and nmf; the attack/decay model has one path only");
    }
    if let Some(threshold) = a.threshold {
        transcriber.detector.threshold = threshold;
    }
    if a.offsets == "run-end" {
        transcriber.detector.offsets = OffsetRule::RunEnd;
    }
    if a.raw_activations {
        transcriber.detector.scale = ActivationScale::Raw;
    }
    if a.exact {
        transcriber.regression.precision = Precision::Exact;
    } else if a.faithful {
        transcriber.regression.precision = Precision::Faithful;
    }
    apply_max_frequency(&mut transcriber, a.max_frequency, a.full_band, a.templates.as_deref())?;
    transcriber.adaptation = a.adapt.adaptation()?;
    if transcriber.adaptation.is_some() && method == Method::AttackDecay {
        bail!("--adapt adapts templates (cnmf, nmf); the attack/decay model has none");
    }
    transcriber.chunking.chunk_frames = chunk_frames(a.chunk_seconds, transcriber.dictionary())?;
    transcriber.decode = DecodeOptions {
        channel: channel_selection(a.channel),
        offset_seconds: a.offset,
        duration_seconds: a.duration,
        max_duration_seconds: a.max_duration,
    };
    Ok(transcriber)
}

/// Decides every output path, and refuses before any work is done an
/// output that is claimed twice, exists (without --overwrite), would
/// replace an input or cannot be written. Inputs whose outputs all exist
/// are `None` with --skip-existing.
fn plan(a: &TranscribeArgs, inputs: &[PathBuf]) -> anyhow::Result<Vec<Option<Plan>>> {
    let several = inputs.len() > 1;
    let mut read: Vec<PathBuf> = inputs.to_vec();
    read.extend(a.templates.clone());
    read.extend(a.sound.soundfont.clone());
    let mut plans = Vec::new();
    let mut claimed: HashMap<PathBuf, &Path> = HashMap::new();
    for input in inputs {
        let main = main_notes_path(input, a.output.as_deref(), several);
        let mut notes = vec![(main.clone(), main_notes_format(&main, a.output.as_deref(), several, &read)?)];
        for &f in &a.formats {
            if !notes.iter().any(|(_, g)| *g == f) {
                notes.push((main.with_extension(f.extension()), f));
            }
        }
        let plan = Plan {
            input: input.clone(),
            notes,
            sonified: a.sonify.then(|| sonified_path(&main)),
            picture: a.plot.then(|| main.with_extension("png")),
        };
        for p in plan.outputs() {
            if let Some(other) = claimed.insert(p.to_path_buf(), input) {
                bail!(
                    "{}: is the output of both {} and {}; transcribe them to different folders",
                    p.display(),
                    other.display(),
                    input.display()
                );
            }
        }
        if a.skip_existing && plan.outputs().all(|p| p.is_file()) {
            plans.push(None);
            continue;
        }
        for p in plan.outputs() {
            check_writable(p, a.overwrite, &read)?;
        }
        plans.push(Some(plan));
    }
    Ok(plans)
}

pub(super) fn transcribe(a: TranscribeArgs) -> anyhow::Result<()> {
    if a.sound.soundfont.is_some() && !a.sonify {
        bail!("--soundfont plays the transcription with --sonify; add --sonify (or use `sscnmf render`)");
    }
    let inputs = expand_inputs(&a.inputs)?;
    let several = inputs.len() > 1;
    if let Some(o) = &a.output {
        if several && !o.is_dir() {
            bail!("{}: with several inputs, -o must name an existing folder", o.display());
        }
    }
    let transcriber = transcriber(&a)?;
    // A dictionary of the user's own learned before calibration existed (the
    // built-in one is documented as uncalibrated): say what was used instead.
    let uncalibrated = a.threshold.is_none()
        && a.templates.is_some()
        && transcriber.method() == Method::Cnmf
        && transcriber.dictionary().calibration.is_none();
    let renderer = if a.sonify { Some(a.sound.renderer()?) } else { None };
    let plans = plan(&a, &inputs)?;
    let todo: Vec<usize> = (0..plans.len()).filter(|&i| plans[i].is_some()).collect();
    let skipped = plans.len() - todo.len();
    if skipped > 0 && !a.quiet {
        eprintln!("{skipped} of {} files skipped: their outputs exist", inputs.len());
    }
    let work = Work { transcriber: &transcriber, renderer: renderer.as_ref(), sample_rate: a.sound.sample_rate };
    let parallelism = Parallelism::choose(a.jobs, todo.len());

    let started = Instant::now();
    let bar = progress(todo.len(), a.quiet || todo.len() <= 1, "transcribing");
    let mut outcomes: Vec<Option<Outcome>> = plans.iter().map(|p| p.is_none().then_some(Outcome::Skipped)).collect();
    let mut reported = 0;
    // Reports the outcomes finished so far in input order, so that what is
    // printed does not depend on which file finished first.
    let mut report = |outcomes: &[Option<Outcome>]| {
        while let Some(Some(outcome)) = outcomes.get(reported) {
            let input = &inputs[reported];
            let plan = plans[reported].as_ref();
            let outputs: Vec<&Path> = plan.map(|p| p.outputs().collect()).unwrap_or_default();
            if a.json {
                let obj = match outcome {
                    Outcome::Done { notes, audio_seconds, seconds } => serde_json::json!({
                        "input": input, "status": "ok", "outputs": outputs, "notes": notes,
                        "audio_seconds": audio_seconds, "seconds": seconds
                    }),
                    Outcome::Failed(e) => serde_json::json!({
                        "input": input, "status": "error", "error": e.to_string(), "reason": reason(input, e)
                    }),
                    Outcome::Skipped => serde_json::json!({"input": input, "status": "skipped"}),
                };
                bar.suspend(|| print_line(&obj));
            }
            match outcome {
                Outcome::Done { notes, .. } if !a.quiet && !a.json => {
                    let list: Vec<String> = outputs.iter().map(|p| p.display().to_string()).collect();
                    bar.suspend(|| eprintln!("{}: {notes} notes -> {}", input.display(), list.join(", ")));
                }
                Outcome::Failed(e) if several => bar.suspend(|| eprintln!("error: {e}")),
                _ => {}
            }
            reported += 1;
        }
    };
    report(&outcomes);

    if todo.len() == 1 && !a.quiet && !a.json {
        // One file: a spinner counting the seconds of audio done (long
        // recordings are fitted chunk by chunk), every core on the file.
        let i = todo[0];
        let input = &inputs[i];
        let s = ProgressBar::new_spinner();
        s.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
        s.set_message(format!("{}: starting", input.display()));
        s.enable_steady_tick(std::time::Duration::from_millis(200));
        let on_progress =
            |seconds: f64| s.set_message(format!("{}: {seconds:.0} s of audio transcribed", input.display()));
        let outcome = work.run_caught(plans[i].as_ref().expect("planned"), &on_progress);
        s.finish_and_clear();
        outcomes[i] = Some(outcome);
        report(&outcomes);
    } else if !todo.is_empty() {
        // `jobs` worker threads take the files in order; each runs its
        // file's regression on a rayon pool of its own with `threads`
        // threads. Separate pools rather than nested rayon loops: a rayon
        // worker waiting inside one file's parallel loop may steal another
        // file's task and start decoding it, so more files than `jobs`
        // would be in memory at once. The kernels give the same bits on any
        // number of threads, so the outputs do not depend on `--jobs`.
        let next = AtomicUsize::new(0);
        let (sender, receiver) = mpsc::channel::<(usize, Outcome)>();
        let (todo, plans, work, next) = (&todo, &plans, &work, &next);
        let worker = move |sender: mpsc::Sender<(usize, Outcome)>| {
            // Without a pool of its own (the system refused the threads),
            // the file runs on the global pool: the same outputs.
            let pool = rayon::ThreadPoolBuilder::new().num_threads(parallelism.threads).build().ok();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = todo.get(k) else { return };
                let plan = plans[i].as_ref().expect("planned");
                let run = || work.run_caught(plan, &|_| {});
                let outcome = match &pool {
                    Some(pool) => pool.install(run),
                    None => run(),
                };
                if sender.send((i, outcome)).is_err() {
                    return;
                }
            }
        };
        std::thread::scope(|scope| {
            let mut spawned = 0;
            for _ in 0..parallelism.jobs {
                let sender = sender.clone();
                spawned += usize::from(std::thread::Builder::new().spawn_scoped(scope, move || worker(sender)).is_ok());
            }
            if spawned == 0 {
                worker(sender.clone());
            }
            drop(sender);
            for (i, outcome) in receiver {
                outcomes[i] = Some(outcome);
                bar.inc(1);
                report(&outcomes);
            }
        });
    }
    bar.finish_and_clear();

    let wall = started.elapsed().as_secs_f64();
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.expect("every file has an outcome")).collect();
    let done = outcomes.iter().filter(|o| matches!(o, Outcome::Done { .. })).count();
    let audio_seconds: f64 =
        outcomes.iter().map(|o| if let Outcome::Done { audio_seconds, .. } = o { *audio_seconds } else { 0.0 }).sum();
    let failures: Vec<(&PathBuf, &Error)> = inputs
        .iter()
        .zip(&outcomes)
        .filter_map(|(input, o)| if let Outcome::Failed(e) = o { Some((input, e)) } else { None })
        .collect();
    let speed = audio_seconds / wall.max(1e-9);
    if a.json {
        let summary = serde_json::json!({"summary": {
            "files": inputs.len(), "done": done, "failed": failures.len(), "skipped": skipped,
            "failures": failures.iter().map(|(input, e)| serde_json::json!({
                "input": input, "error": e.to_string(), "reason": reason(input, e)
            })).collect::<Vec<_>>(),
            "audio_seconds": audio_seconds, "audio_hours": audio_seconds / 3600.0,
            "wall_seconds": wall, "speed": speed, "jobs": parallelism.jobs,
        }});
        print_line(&summary);
    }
    if uncalibrated && done > 0 && !a.quiet {
        eprintln!(
            "note: {} has no calibration (learned before calibration existed, or --no-calibrate); used δ = \
             {DEFAULT_THRESHOLD} and uncalibrated offsets and velocities (re-run `sscnmf learn` to calibrate)",
            a.templates.as_ref().map_or(String::new(), |p| p.display().to_string())
        );
    }
    if several && !a.quiet {
        eprintln!(
            "{} files: {done} transcribed, {} failed, {skipped} skipped; {} of audio in {} ({speed:.1}x real time, {} at a time)",
            inputs.len(),
            failures.len(),
            human_duration(audio_seconds),
            human_duration(wall),
            parallelism.jobs,
        );
        for (input, e) in &failures {
            eprintln!("  failed: {}: {}", input.display(), reason(input, e));
        }
    }
    let (n_failed, internal) = (failures.len(), failures.iter().any(|(_, e)| e.kind() == ErrorKind::Internal));
    if !several {
        if let Some(Outcome::Failed(e)) = outcomes.into_iter().next() {
            return Err(e.into());
        }
    }
    match n_failed {
        0 => Ok(()),
        _ if internal => {
            Err(Error::internal(format!("{n_failed} of {} files failed, one of them by a bug", inputs.len())).into())
        }
        _ => Err(anyhow::anyhow!("{n_failed} of {} files failed", inputs.len())),
    }
}
