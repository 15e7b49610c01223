//! `sscnmf bench`: per-stage timings, fast path against the exact path (and,
//! with `--faithful`, the faithful path).

use super::*;

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    /// Audio file to transcribe.
    audio: PathBuf,
    /// Template dictionary. Default: the built-in grand piano dictionary.
    #[arg(short, long)]
    templates: Option<PathBuf>,
    /// Seconds of audio (from the start).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Runs of the fast path (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the exact (f64) reference run.
    #[arg(long)]
    no_exact: bool,
    /// Also time the faithful path once (the paper's iterations in f32; `transcribe --faithful`).
    #[arg(long)]
    faithful: bool,
    /// Fit only the spectrogram's bins below this frequency (Hz; up to the Nyquist frequency,
    /// 22050 at 44.1 kHz, which fits all bins). Default for cnmf and nmf: 8268.75 (1536 of the 4097 bins
    /// at 44.1 kHz; within 0.3 F-points of all bins on the dev songs, 2.7x less work per
    /// iteration). The templates file is not changed. Both paths fit the same bins.
    #[arg(long, value_name = "HZ")]
    max_frequency: Option<f64>,
    /// Fit every frequency bin, up to the Nyquist frequency (the paper's setting; slower).
    #[arg(long, conflicts_with = "max_frequency")]
    full_band: bool,
    /// Chunk length for long recordings (see `transcribe --chunk-seconds`).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    chunk_seconds: f64,
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

pub(super) fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let dictionary = match &a.templates {
        Some(path) => TemplateDictionary::load(path)?,
        None => TemplateDictionary::builtin()?,
    };
    let mut transcriber = Transcriber::new(dictionary)?;
    apply_max_frequency(&mut transcriber, a.max_frequency, a.full_band, a.templates.as_deref())?;
    transcriber.decode = DecodeOptions { duration_seconds: Some(a.duration), ..Default::default() };
    transcriber.chunking.chunk_frames = chunk_frames(a.chunk_seconds, transcriber.dictionary())?;
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
    let faithful = if a.faithful {
        transcriber.regression.precision = Precision::Faithful;
        Some(transcriber.transcribe_file(&a.audio)?)
    } else {
        None
    };
    let exact = if a.no_exact {
        None
    } else {
        transcriber.regression.precision = Precision::Exact;
        Some(transcriber.transcribe_file(&a.audio)?)
    };
    let iterations = transcriber.regression.init_iterations + transcriber.regression.iterations;
    let fit_seconds = fast.times.init + fast.times.iterations;
    let (iterations_per_second, gflops) = (iterations as f64 / fit_seconds, fast.times.flops / fit_seconds / 1e9);
    let realtime_factor = fast.audio_seconds / total(&fast);
    let report = serde_json::json!({
        "audio": a.audio, "audio_seconds": fast.audio_seconds, "threads": rayon::current_num_threads(),
        "fast": {
            "times": fast.times, "total_seconds": total(&fast),
            "iterations_per_second": iterations_per_second,
            "gflops": gflops,
            "realtime_factor": realtime_factor,
            "notes": fast.notes.len(),
        },
        "faithful": faithful.as_ref().map(|p| serde_json::json!({
            "times": p.times, "total_seconds": total(p), "notes": p.notes.len(),
            "speedup_of_fast": total(p) / total(&fast),
            "same_notes_as_exact": exact.as_ref().map(|e| e.notes == p.notes),
        })),
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
        "         {iterations_per_second:.1} iterations/s, {gflops:.1} GFLOP/s, {realtime_factor:.1}x real time, {} notes",
        fast.notes.len()
    );
    let differ = |a: &[sscnmf::notes::Note], b: &[sscnmf::notes::Note]| {
        if a == b {
            "identical".to_string()
        } else {
            format!("differ ({} vs {})", a.len(), b.len())
        }
    };
    if let Some(p) = &faithful {
        row("faithful", &p.times, total(p));
        print!("         fast path {:.2}x faster", total(p) / total(&fast));
        match &exact {
            Some(e) => println!("; notes against exact {}", differ(&p.notes, &e.notes)),
            None => println!(),
        }
    }
    if let Some(e) = &exact {
        row("exact", &e.times, total(e));
        println!("         fast path {:.2}x faster; notes {}", total(e) / total(&fast), differ(&fast.notes, &e.notes));
    }
    if let Some(bytes) = peak_memory_bytes() {
        println!("peak memory {:.0} MB", bytes as f64 / 1e6);
    }
    Ok(())
}
