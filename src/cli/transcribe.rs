//! `sscnmf transcribe`: audio files to MIDI and note lists.

use std::collections::HashMap;

use sscnmf::evaluation::MatchParams;
use sscnmf::plot::PianoRollFigure;

use super::*;

#[derive(Args, Debug)]
pub(super) struct TranscribeArgs {
    /// Audio files (WAV, FLAC, MP3, OGG) or folders of them.
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
    /// The reference path: f64, dense, the paper's iterations as they are (about 18x slower)
    #[arg(long)]
    exact: bool,
    /// Recordings longer than this are fitted in chunks of this many seconds, with 2 s of
    /// context on each side (memory stays bounded; notes are those of an unchunked fit).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    chunk_seconds: f64,
    /// Also draw each transcription's piano roll beside its MIDI (song.mid -> song.png).
    #[arg(long)]
    plot: bool,
    /// Replace output files that exist.
    #[arg(long)]
    overwrite: bool,
    /// Skip the inputs whose outputs all exist (to continue an interrupted batch).
    #[arg(long, conflicts_with = "overwrite")]
    skip_existing: bool,
    /// Print one JSON object per file on standard output.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// Expands folders into their audio files (sorted), keeping files as given.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let files = sscnmf::files::sorted_entries(input, is_audio_file)?;
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

pub(super) fn transcribe(a: TranscribeArgs) -> anyhow::Result<()> {
    let inputs = expand_inputs(&a.inputs)?;
    let several = inputs.len() > 1;
    if let Some(o) = &a.output {
        if several && !o.is_dir() {
            bail!("{}: with several inputs, -o must name an existing folder", o.display());
        }
    }
    let (mut transcriber, method) = transcriber_for(a.templates.as_deref(), a.method)?;
    if a.exact && method == Method::AttackDecay {
        bail!("--exact applies to cnmf and nmf; the attack/decay model runs in f32 only");
    }
    transcriber.detector.threshold = a.threshold;
    if a.raw_activations {
        transcriber.detector.scale = ActivationScale::Raw;
    }
    if a.exact {
        transcriber.regression.precision = Precision::Exact;
    }
    transcriber.chunking.chunk_frames = chunk_frames(a.chunk_seconds, transcriber.dictionary())?;
    transcriber.decode = DecodeOptions {
        channel: channel_selection(a.channel),
        offset_seconds: a.offset,
        duration_seconds: a.duration,
        max_duration_seconds: a.max_duration,
    };

    // Decide every output path first, and refuse before any work is done.
    let mut plans = Vec::new();
    let mut skipped = 0;
    let mut claimed: HashMap<PathBuf, &Path> = HashMap::new();
    for input in &inputs {
        let midi = midi_output_path(input, a.output.as_deref(), several);
        let mut outs = vec![(midi.clone(), NoteFormat::Midi)];
        for &f in &a.formats {
            if f != NoteFormat::Midi && !outs.iter().any(|(_, g)| *g == f) {
                outs.push((midi.with_extension(f.extension()), f));
            }
        }
        let picture = a.plot.then(|| midi.with_extension("png"));
        for p in outs.iter().map(|(p, _)| p).chain(&picture) {
            if let Some(other) = claimed.insert(p.clone(), input) {
                bail!(
                    "{}: is the output of both {} and {}; transcribe them to different folders",
                    p.display(),
                    other.display(),
                    input.display()
                );
            }
        }
        if a.skip_existing && outs.iter().map(|(p, _)| p).chain(&picture).all(|p| p.is_file()) {
            skipped += 1;
            continue;
        }
        for p in outs.iter().map(|(p, _)| p).chain(&picture) {
            check_writable(p, a.overwrite, &inputs)?;
        }
        plans.push((input.clone(), outs, picture));
    }
    if skipped > 0 && !a.quiet {
        eprintln!("{skipped} of {} files skipped: their outputs exist", inputs.len());
    }

    let bar = progress(plans.len(), a.quiet || plans.len() == 1, "transcribing");
    let failed = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let mut audio_seconds = 0.0;
    let mut last_error = None;
    for (input, outs, picture) in &plans {
        // One file: a spinner counting the seconds of audio done (long
        // recordings are fitted chunk by chunk).
        let spinner = (plans.len() == 1 && !a.quiet && !a.json).then(|| {
            let s = ProgressBar::new_spinner();
            s.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
            s.set_message(format!("{}: starting", input.display()));
            s.enable_steady_tick(std::time::Duration::from_millis(200));
            s
        });
        let on_progress = |seconds: f64| {
            if let Some(s) = &spinner {
                s.set_message(format!("{}: {:.0} s of audio transcribed", input.display(), seconds));
            }
        };
        let result = transcriber.transcribe_file_with_progress(input, &on_progress);
        if let Some(s) = &spinner {
            s.finish_and_clear();
        }
        let result = result.and_then(|t| {
            for (path, format) in outs {
                write_notes(path, &t.notes, *format)?;
            }
            if let Some(path) = picture {
                let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let roll = PianoRollFigure::new(&t.notes, None, &MatchParams::onset_only(), name);
                sscnmf::plot::save(&roll, path)?;
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
