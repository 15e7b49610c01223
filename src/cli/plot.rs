//! `sscnmf plot`: pictures of a spectrogram, templates, activations, or a
//! piano roll against a reference.

use sscnmf::audio::load_audio;
use sscnmf::evaluation::MatchParams;
use sscnmf::notes::{Note, NoteFormat};
use sscnmf::plot::{save, ActivationsFigure, ImageFormat, PianoRollFigure, TfFigure, TfImage};
use sscnmf::spectrogram::Stft;
use sscnmf::transcription::{OnsetDetector, Transcription};

use super::*;

#[derive(Args, Debug)]
pub(super) struct PlotArgs {
    #[command(subcommand)]
    what: PlotCommand,
}

#[derive(Subcommand, Debug)]
enum PlotCommand {
    /// The magnitude spectrogram in dB on a log-frequency axis.
    #[command(after_help = "Examples:\n  \
sscnmf plot spectrogram examples/bach-prelude-c.flac -o spectrogram.png --duration 8\n  \
sscnmf plot spectrogram song.mp3 -o song.svg --offset 60 --duration 10 --fmax 5000\n\n\
The STFT is the paper's (44.1 kHz, 4096-sample Hann window, n_fft 8192, 20 ms hop). Colours are dB relative \
to the loudest bin, over --range-db dB. Long excerpts are max-pooled in time to at most 2400 columns.")]
    Spectrogram(SpectrogramArgs),
    /// A dictionary's templates: a few as time-frequency images (the paper's figure 3), or all at a glance.
    #[command(after_help = "Examples:\n  \
sscnmf plot templates -o templates.png                        # the built-in piano, all 88\n  \
sscnmf plot templates --notes 36,60,84 -o figure3.png\n  \
sscnmf plot templates fluid.templates --notes 48,60,72 -o fluid.svg\n\n\
Without --notes: one column per pitch, each template summed over its τ frames and scaled to its own maximum, \
with the equal-tempered fundamentals drawn over it. With --notes: each template's F x τ image, on one colour scale.")]
    Templates(TemplatesArgs),
    /// Activations of a few pitches with the adaptive threshold and the detected onsets (figures 4-5).
    #[command(after_help = "Examples:\n  \
sscnmf plot activations examples/bach-prelude-c.flac -o activations.png --duration 8\n  \
sscnmf plot activations song.flac --templates piano.templates --pitches 60,64,67 --reference song.mid -o a.png\n\n\
Each panel shows one pitch's activation as the onset rule sees it (scaled as the model's rule says: by the \
recording's largest activation, or for a calibrated dictionary by the mean of the pitches' peaks; raw with \
--raw-activations), the threshold s[t] + δ (s the 21-frame moving average), the onsets \
found (red dots) and, with --reference, the true onsets (black triangles). Without --pitches: the 4 pitches \
with the most detected notes.")]
    Activations(ActivationsArgs),
    /// A piano roll of a transcription, against a reference: hits, misses and false notes.
    #[command(after_help = "Examples:\n  \
sscnmf plot roll examples/bach-prelude-c.flac --reference examples/bach-prelude-c.reference.mid -o roll.png\n  \
sscnmf plot roll estimate.mid --reference MAPS_MUS-bach_ENSTDkCl.txt -o roll.svg --duration 30\n\n\
The input is audio (transcribed first, as `sscnmf transcribe` would) or a note list (MIDI, CSV, MAPS txt, JSON). \
Notes are matched as `sscnmf evaluate` does (onsets within --onset-tolerance, same pitch, maximum matching); \
reference notes are grey, hits green, false notes blue, missed notes red. With --offset/--duration only notes \
starting in that window are shown and scored.")]
    Roll(RollArgs),
}

/// Options every picture has.
#[derive(Args, Debug)]
struct OutputArgs {
    /// The picture to write: .png or .svg.
    #[arg(short, long)]
    output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
}

/// Which part of the audio.
#[derive(Args, Debug)]
struct ExcerptArgs {
    /// Start this many seconds into the file.
    #[arg(long, default_value_t = 0.0)]
    offset: f64,
    /// Only this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Use channel N (0-based) instead of the mean of the channels.
    #[arg(long)]
    channel: Option<usize>,
}

impl ExcerptArgs {
    fn decode(&self) -> DecodeOptions {
        DecodeOptions {
            channel: channel_selection(self.channel),
            offset_seconds: self.offset,
            duration_seconds: self.duration,
            ..DecodeOptions::default()
        }
    }

    /// Whether a note starts in the excerpt.
    fn contains(&self, note: &Note) -> bool {
        note.onset >= self.offset && self.duration.is_none_or(|d| note.onset < self.offset + d)
    }

    fn describe(&self) -> String {
        match self.duration {
            Some(d) => format!(", {:.1}-{:.1} s", self.offset, self.offset + d),
            None if self.offset > 0.0 => format!(", from {:.1} s", self.offset),
            None => String::new(),
        }
    }
}

/// How audio is transcribed for a picture.
#[derive(Args, Debug)]
struct TranscribeOptions {
    /// Model made by `sscnmf learn` (default: the built-in piano).
    #[arg(short, long)]
    templates: Option<PathBuf>,
    /// cnmf, nmf or attack-decay (default: the model's own).
    #[arg(long, value_name = "METHOD")]
    method: Option<Method>,
    /// δ of the onset rule (eq. 10), on scaled activations. Default: the model's own rule, as in
    /// `transcribe` (the calibrated δ for cnmf on a calibrated dictionary, else 0.11 of the
    /// recording's largest activation).
    #[arg(long)]
    threshold: Option<f64>,
    /// Threshold raw activations, as the paper did.
    #[arg(long)]
    raw_activations: bool,
}

impl TranscribeOptions {
    /// The transcription of the excerpt, the detector that read its notes, and the method.
    fn transcribe(
        &self,
        input: &Path,
        excerpt: &ExcerptArgs,
    ) -> anyhow::Result<(Transcription, OnsetDetector, Method)> {
        let (mut transcriber, method) = transcriber_for(self.templates.as_deref(), self.method)?;
        if let Some(threshold) = self.threshold {
            transcriber.detector.threshold = threshold;
        }
        if self.raw_activations {
            transcriber.detector.scale = ActivationScale::Raw;
        }
        transcriber.decode = excerpt.decode();
        Ok((transcriber.transcribe_file(input)?, transcriber.detector, method))
    }
}

#[derive(Args, Debug)]
struct SpectrogramArgs {
    /// Audio file (WAV, FLAC, MP3, OGG).
    input: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    excerpt: ExcerptArgs,
    /// Lowest frequency shown, Hz.
    #[arg(long, default_value_t = sscnmf::plot::DEFAULT_FMIN)]
    fmin: f64,
    /// Highest frequency shown, Hz (default: half the sample rate).
    #[arg(long)]
    fmax: Option<f64>,
    /// Dynamic range shown, dB.
    #[arg(long, default_value_t = sscnmf::plot::DEFAULT_RANGE_DB)]
    range_db: f64,
}

#[derive(Args, Debug)]
struct TemplatesArgs {
    /// Template dictionary made by `sscnmf learn` (default: the built-in piano).
    templates: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
    /// Show these pitches' templates as images: MIDI numbers or ranges, e.g. 48,60,72 or 60-64.
    #[arg(long, value_name = "PITCHES")]
    notes: Option<String>,
    /// Highest frequency shown, Hz.
    #[arg(long, default_value_t = 10_000.0)]
    fmax: f64,
    /// Dynamic range shown, dB (default: 80 with --notes, 60 without).
    #[arg(long)]
    range_db: Option<f64>,
}

#[derive(Args, Debug)]
struct ActivationsArgs {
    /// Audio file (WAV, FLAC, MP3, OGG).
    input: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    transcription: TranscribeOptions,
    #[command(flatten)]
    excerpt: ExcerptArgs,
    /// Pitches to show: MIDI numbers or ranges, e.g. 60,64,67 (default: the 4 with the most notes).
    #[arg(long, value_name = "PITCHES")]
    pitches: Option<String>,
    /// Reference notes (MIDI, CSV, MAPS txt, JSON), to mark the true onsets.
    #[arg(long)]
    reference: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RollArgs {
    /// Audio to transcribe, or a note list (MIDI, CSV, MAPS txt, JSON).
    input: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
    /// Reference notes (MIDI, CSV, MAPS txt, JSON). Without it, the notes alone.
    #[arg(short, long)]
    reference: Option<PathBuf>,
    #[command(flatten)]
    transcription: TranscribeOptions,
    #[command(flatten)]
    excerpt: ExcerptArgs,
    /// Onset tolerance of the matching, seconds.
    #[arg(long, default_value_t = 0.05)]
    onset_tolerance: f64,
}

/// Parses `48,60,72`, `60-64` or a mix into MIDI pitches (in the order given).
pub(super) fn parse_pitch_list(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |x: &str| x.trim().parse::<u8>().ok().filter(|&p| p <= 127);
        match (parse(lo), parse(hi)) {
            (Some(lo), Some(hi)) if lo <= hi => out.extend(lo..=hi),
            _ => bail!("pitches must be MIDI numbers 0..127 or ranges LOW-HIGH, e.g. 48,60,72 or 60-64, not '{part}'"),
        }
    }
    if out.is_empty() {
        bail!("no pitches given");
    }
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Refuses an output that is not .png/.svg or cannot be written, before any work.
fn check_output(out: &OutputArgs, inputs: &[Option<&Path>]) -> anyhow::Result<()> {
    ImageFormat::from_path(&out.output)?;
    let inputs: Vec<PathBuf> = inputs.iter().flatten().map(|p| p.to_path_buf()).collect();
    check_writable(&out.output, out.overwrite, &inputs)
}

fn report(path: &Path) {
    eprintln!("wrote {}", path.display());
}

pub(super) fn plot(a: PlotArgs) -> anyhow::Result<()> {
    match a.what {
        PlotCommand::Spectrogram(a) => plot_spectrogram(a),
        PlotCommand::Templates(a) => plot_templates(a),
        PlotCommand::Activations(a) => plot_activations(a),
        PlotCommand::Roll(a) => plot_roll(a),
    }
}

fn plot_spectrogram(a: SpectrogramArgs) -> anyhow::Result<()> {
    check_output(&a.out, &[Some(&a.input)])?;
    let config = StftConfig::default();
    // Decode half a window more on each side (where the file has it), so
    // that the frames at the excerpt's edges see the music around it
    // rather than a cut to silence; the picture shows the excerpt only.
    let margin = config.win_length as f64 / 2.0 / config.sample_rate as f64;
    let before = a.excerpt.offset.min(margin);
    let mut decode = a.excerpt.decode();
    decode.offset_seconds -= before;
    decode.duration_seconds = a.excerpt.duration.map(|d| d + before + margin);
    let audio = load_audio(&a.input, &decode, config.sample_rate)?;
    if audio.samples.is_empty() {
        bail!("{}: no audio in the excerpt", a.input.display());
    }
    let stft = Stft::new(config)?;
    let image = TfImage::spectrogram(&stft, &audio.samples, decode.offset_seconds, 2400);
    let mut figure = TfFigure::spectrogram(image, format!("{}{}", file_name(&a.input), a.excerpt.describe()));
    let end = decode.offset_seconds + audio.duration_seconds();
    figure.panels[0].x_range = a.excerpt.offset..a.excerpt.duration.map_or(end, |d| (a.excerpt.offset + d).min(end));
    let fmax = a.fmax.unwrap_or(figure.freq.end);
    if !(a.fmin > 0.0 && fmax > a.fmin && a.range_db > 0.0) {
        bail!("need 0 < --fmin < --fmax and --range-db > 0");
    }
    figure.freq = a.fmin..fmax;
    figure.range_db = a.range_db;
    save(&figure, &a.out.output)?;
    report(&a.out.output);
    Ok(())
}

fn plot_templates(a: TemplatesArgs) -> anyhow::Result<()> {
    check_output(&a.out, &[a.templates.as_deref()])?;
    let dictionary = match &a.templates {
        Some(path) => TemplateDictionary::load(path)?,
        None => TemplateDictionary::builtin()?,
    };
    let name = a.templates.as_deref().map(file_name).unwrap_or_else(|| "built-in piano".into());
    let tau = dictionary.tau();
    if a.fmax.is_nan() || a.fmax <= sscnmf::plot::DEFAULT_FMIN {
        bail!("--fmax must be above {} Hz", sscnmf::plot::DEFAULT_FMIN);
    }
    let mut figure = match &a.notes {
        Some(notes) => {
            let title = format!("{name}: templates (τ = {tau} frames of 20 ms)");
            TfFigure::templates(&dictionary, &parse_pitch_list(notes)?, title)?
        }
        None => {
            let title =
                format!("{name}: {} templates, each summed over its τ = {tau} frames", dictionary.pitches.len());
            TfFigure::template_overview(&dictionary, title)?
        }
    };
    figure.freq.end = a.fmax;
    figure.range_db = a.range_db.unwrap_or(figure.range_db);
    save(&figure, &a.out.output)?;
    report(&a.out.output);
    Ok(())
}

fn plot_activations(a: ActivationsArgs) -> anyhow::Result<()> {
    check_output(&a.out, &[Some(&a.input), a.reference.as_deref()])?;
    let pitches = a.pitches.as_deref().map(parse_pitch_list).transpose()?;
    let reference = a.reference.as_deref().map(read_notes).transpose()?;
    let (t, detector, method) = a.transcription.transcribe(&a.input, &a.excerpt)?;
    let title = format!("{}{}: activations ({method})", file_name(&a.input), a.excerpt.describe());
    let figure =
        ActivationsFigure::new(&t.activations, &detector, &t.notes, reference.as_deref(), pitches.as_deref(), title)?;
    save(&figure, &a.out.output)?;
    report(&a.out.output);
    Ok(())
}

fn plot_roll(a: RollArgs) -> anyhow::Result<()> {
    check_output(&a.out, &[Some(&a.input), a.reference.as_deref()])?;
    if !(a.onset_tolerance.is_finite() && a.onset_tolerance >= 0.0) {
        bail!("--onset-tolerance must be a number of seconds >= 0");
    }
    let reference = a.reference.as_deref().map(read_notes).transpose()?;
    let mut estimate = if NoteFormat::from_path(&a.input).is_some() && !is_audio_file(&a.input) {
        read_notes(&a.input)?
    } else {
        a.transcription.transcribe(&a.input, &a.excerpt)?.0.notes
    };
    estimate.retain(|n| a.excerpt.contains(n));
    let reference = reference.map(|mut r| {
        r.retain(|n| a.excerpt.contains(n));
        r
    });
    let params = MatchParams { onset_tolerance: a.onset_tolerance, ..MatchParams::onset_only() };
    let title = format!("{}{}", file_name(&a.input), a.excerpt.describe());
    let figure = PianoRollFigure::new(&estimate, reference.as_deref(), &params, title);
    save(&figure, &a.out.output)?;
    report(&a.out.output);
    Ok(())
}
