//! Decoding audio files to mono `f32` samples at the analysis sample rate.
//!
//! [`load_audio`] decodes a file with [Symphonia](https://docs.rs/symphonia)
//! (WAV with 8/16/24/32-bit integer or 32/64-bit float samples, AIFF, FLAC,
//! MP3, Ogg Vorbis), keeps one channel or the mean of all of them
//! ([`ChannelSelection`]), cuts the requested excerpt ([`DecodeOptions`]) and
//! resamples to the analysis rate ([`resample`]). [`decode_bytes`] does the
//! same from memory without resampling (for fuzzing).
//!
//! # Sample values
//!
//! Samples are converted to `f32` by Symphonia's conversion: integer samples
//! are divided by 2^(bits−1) (8-bit WAV, which is unsigned, is centred first),
//! so they lie in [−1, 1); float samples are kept as they are (a float file
//! may hold values beyond ±1: they are not clipped). NaN and infinite samples
//! are an error.
//!
//! # Robustness
//!
//! The decoder never trusts a header's frame count for allocation beyond ten
//! minutes of audio: the buffer grows as packets are decoded, and decoding
//! stops with an error past [`DecodeOptions::max_duration_seconds`]. A packet
//! that fails to decode is skipped (an error only if every packet fails). A
//! file that ends early is decoded up to where it ends: for WAV, a data chunk
//! whose length in the header exceeds what the file holds (a truncated file,
//! or a streamed WAV whose header was never updated) is read up to the last
//! complete sample frame. A file truncated inside its header is an error.
//! Every error is one line naming the file; nothing panics on bad input.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::{SampleBuffer, SignalSpec};
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::{Error, ErrorKind, Result};

/// Which channel(s) of a multichannel file to analyse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelSelection {
    /// The mean of all channels (the default).
    #[default]
    Mix,
    /// One channel, numbered from 0 (0 is the left channel of a stereo file).
    /// A channel the file does not have is an error.
    Channel(usize),
}

/// How to decode a file: which channel, which excerpt, and a size limit.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Which channel(s) to keep. Default: [`ChannelSelection::Mix`], the mean
    /// of all channels.
    pub channel: ChannelSelection,
    /// Start of the excerpt, in seconds from the start of the file. Default:
    /// 0. Must be finite and ≥ 0; an offset at or past the end of the audio is
    /// an error.
    pub offset_seconds: f64,
    /// Length of the excerpt in seconds. Default: `None`, to the end of the
    /// file. Must be finite and > 0; an excerpt reaching past the end of the
    /// file simply stops at the end.
    pub duration_seconds: Option<f64>,
    /// Largest amount of audio (after the offset) that will be decoded, in
    /// seconds. Default: 4 hours (14400 s). Audio longer than this is an
    /// error asking to raise `--max-duration`: it guards against files (or
    /// headers) that would exhaust memory.
    pub max_duration_seconds: f64,
}

/// Default for [`DecodeOptions::max_duration_seconds`]: 4 hours.
pub const DEFAULT_MAX_DURATION_SECONDS: f64 = 4.0 * 3600.0;

impl Default for DecodeOptions {
    /// All channels mixed, the whole file, at most 4 hours.
    fn default() -> Self {
        DecodeOptions {
            channel: ChannelSelection::Mix,
            offset_seconds: 0.0,
            duration_seconds: None,
            max_duration_seconds: DEFAULT_MAX_DURATION_SECONDS,
        }
    }
}

impl DecodeOptions {
    /// Check that the offset, duration and limit are usable numbers.
    pub fn validate(&self) -> Result<()> {
        if !self.offset_seconds.is_finite() || self.offset_seconds < 0.0 {
            return Err(Error::invalid_input(format!(
                "offset must be a finite number of seconds ≥ 0 (got {})",
                self.offset_seconds
            )));
        }
        if let Some(d) = self.duration_seconds {
            if !d.is_finite() || d <= 0.0 {
                return Err(Error::invalid_input(format!("duration must be a finite number of seconds > 0 (got {d})")));
            }
        }
        if !self.max_duration_seconds.is_finite() || self.max_duration_seconds <= 0.0 {
            return Err(Error::invalid_input(format!(
                "maximum duration must be a finite number of seconds > 0 (got {})",
                self.max_duration_seconds
            )));
        }
        Ok(())
    }
}

/// Decoded mono audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// The samples, mono, nominally in [−1, 1].
    pub samples: Vec<f32>,
    /// Sample rate of `samples`, in Hz.
    pub sample_rate: u32,
    /// Sample rate of the file, in Hz (differs from `sample_rate` after
    /// resampling).
    pub source_sample_rate: u32,
    /// Number of channels in the file.
    pub source_channels: usize,
}

impl Audio {
    /// Duration in seconds: `samples.len() / sample_rate`.
    pub fn duration_seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.samples.len() as f64 / self.sample_rate as f64
        }
    }
}

/// Decode the audio file at `path` (format found from its extension and its
/// content), keep the channel(s) and excerpt chosen in `options`, and resample
/// to `target_sample_rate` Hz if the file's rate differs (see [`resample`]).
///
/// The excerpt is cut before resampling, in the file's own samples:
/// `round(offset · rate)` samples are skipped and `round(duration · rate)`
/// kept. Errors name `path`.
pub fn load_audio(path: &Path, options: &DecodeOptions, target_sample_rate: u32) -> Result<Audio> {
    load_audio_inner(path, options, target_sample_rate).map_err(|e| e.with_path(path))
}

fn load_audio_inner(path: &Path, options: &DecodeOptions, target_sample_rate: u32) -> Result<Audio> {
    options.validate()?;
    check_rate(target_sample_rate, "target")?;
    let source = open_source(path)?;
    let extension = path.extension().and_then(|e| e.to_str());
    let mut audio = decode_source(source, extension, options)?;
    if audio.sample_rate != target_sample_rate {
        audio.samples = resample(&audio.samples, audio.sample_rate, target_sample_rate)?;
        audio.sample_rate = target_sample_rate;
    }
    Ok(audio)
}

/// Decode an audio file held in memory, with the same rules as
/// [`load_audio`] but no resampling (the result is at the file's rate).
/// `extension_hint` (e.g. `"wav"`, without the dot) helps find the format;
/// the content decides. Errors carry no file name.
pub fn decode_bytes(bytes: Vec<u8>, extension_hint: Option<&str>, options: &DecodeOptions) -> Result<Audio> {
    options.validate()?;
    if bytes.is_empty() {
        return Err(audio_error("empty file"));
    }
    let len = bytes.len() as u64;
    let mut cursor = io::Cursor::new(bytes);
    let patches = wav_header_patches(&mut cursor, len)?;
    decode_source(Box::new(PatchedSource::new(Box::new(cursor), patches)), extension_hint, options)
}

fn audio_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Audio, message)
}

/// Sample rates accepted by [`resample`] and from files.
const MAX_SAMPLE_RATE: u32 = 1_536_000;

fn check_rate(rate: u32, what: &str) -> Result<()> {
    if rate == 0 || rate > MAX_SAMPLE_RATE {
        Err(Error::invalid_input(format!("{what} sample rate {rate} Hz is out of range (1 to {MAX_SAMPLE_RATE} Hz)")))
    } else {
        Ok(())
    }
}

/// Describe a Symphonia error met while opening (probing) a stream.
fn probe_error(e: SymphoniaError) -> Error {
    match e {
        SymphoniaError::Unsupported(msg) if msg.contains("no suitable format reader") => {
            audio_error("not a supported audio file (no WAV, AIFF, FLAC, MP3 or Ogg Vorbis stream found)")
        }
        SymphoniaError::Unsupported(msg) => audio_error(format!("not a supported audio file ({msg})")),
        // A reader recognised the start of the file but ran out of bytes:
        // either a truncated header or a non-audio file that happens to
        // start like one.
        SymphoniaError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            audio_error("truncated inside its header, or not a supported audio file (unexpected end of file)")
        }
        SymphoniaError::IoError(e) => Error::new(ErrorKind::Io, format!("read error: {e}")),
        SymphoniaError::DecodeError(msg) => audio_error(format!("corrupt audio header ({msg})")),
        other => audio_error(format!("cannot open the audio stream ({other})")),
    }
}

/// Offsets and limits in frames of the file, once its rate is known.
struct Cut {
    /// Frames to skip at the start.
    skip: u64,
    /// Frames to keep after `skip` (`None`: to the end).
    keep: Option<u64>,
    /// Most frames that may be kept before it is an error.
    limit: u64,
}

impl Cut {
    fn new(options: &DecodeOptions, rate: u32) -> Cut {
        let r = f64::from(rate);
        Cut {
            skip: (options.offset_seconds * r).round() as u64,
            keep: options.duration_seconds.map(|d| ((d * r).round() as u64).max(1)),
            limit: (options.max_duration_seconds * r).floor() as u64,
        }
    }
}

/// Decode everything (no resampling). Errors carry no path.
fn decode_source(source: Box<dyn MediaSource>, extension: Option<&str>, options: &DecodeOptions) -> Result<Audio> {
    let mut samples: Vec<f32> = Vec::new();
    let info = stream_source(source, extension, options, &mut |block: &[f32], _rate: u32| {
        samples.extend_from_slice(block);
        Ok(())
    })?;
    samples.shrink_to_fit();
    Ok(Audio {
        samples,
        sample_rate: info.sample_rate,
        source_sample_rate: info.source_sample_rate,
        source_channels: info.channels,
    })
}

/// What a streamed decode found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Sample rate of the samples given to the sink, Hz.
    pub sample_rate: u32,
    /// The file's own sample rate, Hz.
    pub source_sample_rate: u32,
    /// The file's number of channels.
    pub channels: usize,
    /// Mono samples given to the sink.
    pub samples: u64,
}

/// Decodes the audio file at `path` with the rules of [`load_audio`] (the
/// same channel choice, excerpt, limits, errors and resampling), but hands
/// the mono samples to `sink` block by block as they are decoded instead of
/// holding them all: memory stays bounded whatever the file's length. The
/// samples given to `sink`, joined, are exactly those [`load_audio`] returns.
/// An error from `sink` stops the decoding and is returned (with the path).
pub fn stream_audio(
    path: &Path,
    options: &DecodeOptions,
    target_sample_rate: u32,
    sink: &mut dyn FnMut(&[f32]) -> Result<()>,
) -> Result<StreamInfo> {
    stream_audio_inner(path, options, target_sample_rate, sink).map_err(|e| e.with_path(path))
}

fn stream_audio_inner(
    path: &Path,
    options: &DecodeOptions,
    target_sample_rate: u32,
    sink: &mut dyn FnMut(&[f32]) -> Result<()>,
) -> Result<StreamInfo> {
    options.validate()?;
    check_rate(target_sample_rate, "target")?;
    let source = open_source(path)?;
    let extension = path.extension().and_then(|e| e.to_str());
    // The file's rate is known only once the stream is open, so the
    // resampler is made on the first block.
    let mut resampler: Option<StreamResampler> = None;
    let mut produced = 0u64;
    let mut counted = |block: &[f32]| -> Result<()> {
        produced += block.len() as u64;
        sink(block)
    };
    let info = stream_source(source, extension, options, &mut |block: &[f32], rate: u32| {
        if rate == target_sample_rate {
            return counted(block);
        }
        if resampler.is_none() {
            resampler = Some(StreamResampler::new(rate, target_sample_rate)?);
        }
        resampler.as_mut().expect("made above").push(block, &mut counted)
    })?;
    if let Some(r) = resampler {
        r.finish(&mut counted)?;
    }
    Ok(StreamInfo { sample_rate: target_sample_rate, samples: produced, ..info })
}

/// Opens `path` for decoding, with the WAV header repairs.
fn open_source(path: &Path) -> Result<Box<dyn MediaSource>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::new(ErrorKind::Io, "is a directory, not an audio file"));
    }
    let len = meta.len();
    if len == 0 {
        return Err(audio_error("empty file"));
    }
    let patches = wav_header_patches(&mut file, len)?;
    Ok(Box::new(PatchedSource::new(Box::new(file), patches)))
}

/// Decodes `source`, giving the kept mono samples (file rate) to `sink`
/// packet by packet. Errors carry no path.
fn stream_source(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    options: &DecodeOptions,
    sink: &mut dyn FnMut(&[f32], u32) -> Result<()>,
) -> Result<StreamInfo> {
    let byte_len = source.byte_len();
    let stream = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(&ext.to_ascii_lowercase());
    }
    // Gapless: trim MP3/AAC encoder delay and padding, so that time 0 in the
    // file is time 0 in the samples.
    let format_options = FormatOptions { enable_gapless: true, ..Default::default() };
    let probed = guarded(|| {
        symphonia::default::get_probe().format(&hint, stream, &format_options, &MetadataOptions::default())
    })?
    .map_err(probe_error)?;
    let mut format = probed.format;

    let track = format
        .default_track()
        .filter(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .or_else(|| format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL))
        .ok_or_else(|| audio_error("no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder =
        symphonia::default::get_codecs().make(&params, &DecoderOptions::default()).map_err(|e| match e {
            SymphoniaError::Unsupported(msg) => audio_error(format!("unsupported audio codec ({msg})")),
            other => audio_error(format!("cannot decode the audio track ({other})")),
        })?;

    let mut rate: Option<u32> = None;
    let mut channels: Option<usize> = None;
    if let Some(r) = params.sample_rate {
        check_rate(r, "file's").map_err(|e| audio_error(e.message().to_string()))?;
        rate = Some(r);
    }
    if let Some(c) = params.channels {
        let n = c.count();
        check_channel(options.channel, n)?;
        channels = Some(n);
    }

    // A header's frame count backed by at least a byte per frame (always
    // true of PCM: WAV's data length was checked against the file's size
    // above) is believed: a file longer than the limit is refused before any
    // work. A compressed stream's count is not (a lying header could then
    // refuse a short file); the limit is applied while decoding.
    if let (Some(n_frames), Some(r), Some(len)) = (params.n_frames, params.sample_rate, byte_len) {
        if n_frames <= len {
            let cut = Cut::new(options, r);
            let available = n_frames.saturating_sub(cut.skip);
            if cut.keep.map_or(available, |k| k.min(available)) > cut.limit {
                return Err(too_long(options).with_message(format!(
                    "audio is {:.0} s long, longer than the maximum duration of {} s; raise --max-duration to decode it",
                    n_frames as f64 / f64::from(r),
                    options.max_duration_seconds
                )));
            }
        }
    }

    let mut cut: Option<Cut> = None;
    // Mono samples of the current packet, and how many were kept in all.
    let mut mono: Vec<f32> = Vec::new();
    let mut kept: u64 = 0;
    // Frames decoded so far (the position in the file, in frames).
    let mut position: u64 = 0;
    let mut packets_ok = 0usize;
    let mut packets_failed = 0usize;
    let mut first_failure: Option<String> = None;
    let mut buffer: Option<SampleBuffer<f32>> = None;
    let time = |frames: u64, rate: Option<u32>| frames as f64 / f64::from(rate.unwrap_or(1).max(1));

    loop {
        let packet = match guarded(|| format.next_packet())? {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            // A new chained stream (e.g. chained Ogg): keep the first.
            Err(SymphoniaError::ResetRequired) => break,
            Err(SymphoniaError::IoError(e)) => {
                return Err(Error::new(ErrorKind::Io, format!("read error at {:.3} s: {e}", time(position, rate))))
            }
            Err(e) => {
                return Err(audio_error(format!("cannot read the audio stream at {:.3} s ({e})", time(position, rate))))
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        // The decoded buffer borrows the decoder: taken after the guarded call.
        match guarded(|| decoder.decode(&packet).map(|_| ()))? {
            Ok(()) => {}
            Err(SymphoniaError::DecodeError(msg)) => {
                packets_failed += 1;
                first_failure.get_or_insert_with(|| msg.to_string());
                continue;
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(audio_error(format!("cannot decode the audio at {:.3} s ({e})", time(position, rate))))
            }
        }
        let decoded = decoder.last_decoded();
        packets_ok += 1;
        let frames = decoded.frames();
        if frames == 0 {
            continue;
        }
        let spec: SignalSpec = *decoded.spec();
        let n_channels = spec.channels.count();
        match rate {
            None => {
                check_rate(spec.rate, "file's").map_err(|e| audio_error(e.message().to_string()))?;
                rate = Some(spec.rate);
            }
            Some(r) if r != spec.rate => {
                return Err(audio_error(format!(
                    "sample rate changes from {r} Hz to {} Hz at {:.3} s",
                    spec.rate,
                    time(position, rate)
                )))
            }
            Some(_) => {}
        }
        match channels {
            None => {
                check_channel(options.channel, n_channels)?;
                channels = Some(n_channels);
            }
            Some(c) if c != n_channels => {
                return Err(audio_error(format!(
                    "number of channels changes from {c} to {n_channels} at {:.3} s",
                    time(position, rate)
                )))
            }
            Some(_) => {}
        }
        if n_channels == 0 {
            return Err(audio_error("the audio track has no channels"));
        }
        let rate_now = spec.rate;
        let cut = cut.get_or_insert_with(|| Cut::new(options, rate_now));

        // `capacity()` counts samples (frames × channels); the channel count
        // is fixed above, so a buffer large enough in samples fits.
        let too_small = match &buffer {
            Some(b) => b.capacity() < decoded.capacity() * n_channels,
            None => true,
        };
        if too_small {
            buffer = Some(SampleBuffer::<f32>::new(decoded.capacity() as u64, spec));
        }
        let buf = buffer.as_mut().expect("buffer set above");
        buf.copy_interleaved_ref(decoded);
        let interleaved = &buf.samples()[..frames * n_channels];

        // The part of this packet inside [skip, skip + keep).
        let start = position;
        let end = position + frames as u64;
        let keep_end = cut.keep.map_or(u64::MAX, |k| cut.skip.saturating_add(k));
        let lo = cut.skip.clamp(start, end);
        let hi = keep_end.clamp(start, end);
        if hi > lo {
            let kept_after = kept + (hi - lo);
            if kept_after > cut.limit {
                return Err(too_long(options));
            }
            mono.clear();
            for frame in (lo - start) as usize..(hi - start) as usize {
                let values = &interleaved[frame * n_channels..(frame + 1) * n_channels];
                let v = match options.channel {
                    ChannelSelection::Channel(c) => values[c],
                    ChannelSelection::Mix if n_channels == 1 => values[0],
                    ChannelSelection::Mix => {
                        (values.iter().map(|&x| f64::from(x)).sum::<f64>() / n_channels as f64) as f32
                    }
                };
                if !v.is_finite() {
                    return Err(audio_error(format!(
                        "contains non-finite samples (NaN or infinity) at {:.3} s",
                        time(start + frame as u64, rate)
                    )));
                }
                mono.push(v);
            }
            kept += mono.len() as u64;
            sink(&mono, rate_now)?;
        }
        position = end;
        if position >= keep_end {
            break;
        }
    }

    if packets_ok == 0 && packets_failed > 0 {
        return Err(audio_error(format!(
            "could not decode any audio: all {packets_failed} packets are corrupt ({})",
            first_failure.unwrap_or_default()
        )));
    }
    let (Some(rate), Some(channels)) = (rate, channels) else {
        return Err(audio_error("contains no audio samples"));
    };
    if position == 0 {
        return Err(match params.n_frames {
            Some(n) if n > 0 => audio_error(format!(
                "truncated: the file ends before its first complete block of audio (its header announces {n} samples)"
            )),
            _ => audio_error("contains no audio samples"),
        });
    }
    if kept == 0 {
        return Err(audio_error(format!(
            "offset {:.3} s is at or past the end of the audio ({:.3} s long)",
            options.offset_seconds,
            time(position, Some(rate))
        )));
    }
    Ok(StreamInfo { sample_rate: rate, source_sample_rate: rate, channels, samples: kept })
}

/// Runs a call into the decoder, turning a panic in it (a decoder bug met
/// on a malformed file) into an error about the file.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| audio_error("corrupt audio: the decoder failed on this file"))
}

fn too_long(options: &DecodeOptions) -> Error {
    audio_error(format!(
        "audio is longer than the maximum duration of {} s; raise --max-duration to decode it",
        options.max_duration_seconds
    ))
}

fn check_channel(selection: ChannelSelection, n_channels: usize) -> Result<()> {
    match selection {
        ChannelSelection::Channel(c) if c >= n_channels => Err(audio_error(format!(
            "has no channel {c}: it has {n_channels} channel{} (numbered from 0)",
            if n_channels == 1 { "" } else { "s" }
        ))),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// WAV header repair.

/// Bytes to overwrite in the stream: `(offset, new little-endian u32)`.
type Patch = (u64, [u8; 4]);

/// For a RIFF/WAVE stream of `total_len` bytes whose data chunk claims more
/// bytes than the stream holds (a truncated file, or a streamed WAV with a
/// placeholder length), the patches that make the data chunk (and the RIFF
/// chunk holding it) end at the end of the stream, so that Symphonia decodes
/// every complete frame present instead of failing on, or dropping, the last
/// packet. Anything else (not WAV, no data chunk found): no patches. The
/// reader is left at offset 0.
///
/// The `fmt ` chunk met on the way is checked first ([`check_wav_format`]):
/// Symphonia 0.5 panics on a sample rate of 0, and a clear message about the
/// header is better than "the decoder failed".
fn wav_header_patches<R: Read + Seek>(reader: &mut R, total_len: u64) -> Result<Vec<Patch>> {
    let patches = scan_wav(reader, total_len)?.unwrap_or_default();
    reader.seek(SeekFrom::Start(0)).map_err(|e| Error::new(ErrorKind::Io, format!("read error: {e}")))?;
    Ok(patches)
}

/// The format fields of a WAV `fmt ` chunk that a decoder divides by or
/// allocates from: rejects 0 channels, a sample rate out of range, 0 bits per
/// sample and a block alignment of 0.
fn check_wav_format(fmt: &[u8; 16]) -> Result<()> {
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let channels = u16_at(2);
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if channels == 0 {
        return Err(audio_error("corrupt WAV header: it declares 0 channels"));
    }
    check_rate(rate, "corrupt WAV header: its").map_err(|e| audio_error(e.message()))?;
    if bits == 0 {
        return Err(audio_error("corrupt WAV header: it declares 0 bits per sample"));
    }
    if block_align == 0 {
        return Err(audio_error("corrupt WAV header: it declares a block alignment of 0 bytes"));
    }
    Ok(())
}

/// How far into a stream Symphonia's probe looks for a format's marker
/// (`symphonia_core::probe::Probe::PROBE_SEARCH_LIMIT`): a WAV header may
/// follow up to this many bytes of something else.
const PROBE_SEARCH_LIMIT: u64 = 1 << 20;

/// The offset of the first `RIFF....WAVE` marker within the probe's reach,
/// where Symphonia's WAV reader would start, if any.
fn find_riff_wave<R: Read + Seek>(reader: &mut R, total_len: u64) -> Option<u64> {
    let reach = total_len.min(PROBE_SEARCH_LIMIT + 12);
    let mut head = vec![0u8; usize::try_from(reach).ok()?];
    reader.seek(SeekFrom::Start(0)).ok()?;
    reader.read_exact(&mut head).ok()?;
    head.windows(12).position(|w| &w[0..4] == b"RIFF" && &w[8..12] == b"WAVE").map(|p| p as u64)
}

/// Walks the chunks of a RIFF/WAVE stream: `Ok(None)` when it is not one (or
/// cannot be read: the decoder then says what is wrong), an error for a bad
/// `fmt ` chunk, else the patches of [`wav_header_patches`].
fn scan_wav<R: Read + Seek>(reader: &mut R, total_len: u64) -> Result<Option<Vec<Patch>>> {
    let Some(base) = find_riff_wave(reader, total_len) else {
        return Ok(None);
    };
    let mut header = [0u8; 12];
    if reader.seek(SeekFrom::Start(base)).is_err() || reader.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    let riff_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut pos: u64 = base + 12;
    // Chunks before the data chunk (fmt, fact, LIST, …): a bounded walk.
    for _ in 0..1024 {
        let mut chunk = [0u8; 8];
        if reader.seek(SeekFrom::Start(pos)).is_err() || reader.read_exact(&mut chunk).is_err() {
            return Ok(None);
        }
        let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let data_start = pos + 8;
        if &chunk[0..4] == b"fmt " && len >= 16 {
            let mut fmt = [0u8; 16];
            if reader.read_exact(&mut fmt).is_ok() {
                check_wav_format(&fmt)?;
            }
        }
        if &chunk[0..4] == b"data" {
            // The RIFF length counts from after its own 8 bytes.
            let riff_needed = |data_len: u64| data_start + data_len - base - 8;
            let available = total_len.saturating_sub(data_start);
            if u64::from(len) <= available {
                // The data fits; only a RIFF length too short for it needs fixing.
                let needed = riff_needed(u64::from(len));
                return Ok(if u64::from(riff_len) < needed && needed <= u64::from(u32::MAX) {
                    Some(vec![(base + 4, (needed as u32).to_le_bytes())])
                } else {
                    None
                });
            }
            let new_len = available.min(u64::from(u32::MAX)) as u32;
            let mut patches = vec![(pos + 4, new_len.to_le_bytes())];
            let needed = riff_needed(u64::from(new_len));
            if u64::from(riff_len) < needed || riff_len == u32::MAX {
                patches.push((base + 4, (needed.min(u64::from(u32::MAX)) as u32).to_le_bytes()));
            }
            return Ok(Some(patches));
        }
        pos = data_start + u64::from(len) + u64::from(len & 1);
        if pos >= total_len {
            return Ok(None);
        }
    }
    Ok(None)
}

/// A media source that overwrites a few header bytes as they are read.
struct PatchedSource {
    inner: Box<dyn MediaSource>,
    pos: u64,
    patches: Vec<Patch>,
}

impl PatchedSource {
    fn new(inner: Box<dyn MediaSource>, patches: Vec<Patch>) -> Self {
        PatchedSource { inner, pos: 0, patches }
    }
}

impl Read for PatchedSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for (offset, bytes) in &self.patches {
            for (i, &b) in bytes.iter().enumerate() {
                let at = offset + i as u64;
                if at >= start && at < end {
                    buf[(at - start) as usize] = b;
                }
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for PatchedSource {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

impl MediaSource for PatchedSource {
    fn is_seekable(&self) -> bool {
        self.inner.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        self.inner.byte_len()
    }
}

// ---------------------------------------------------------------------------
// Resampling.

/// Resample mono `samples` from `from_rate` to `to_rate` Hz.
///
/// Uses rubato's synchronous FFT resampler ([`rubato::FftFixedIn`], in `f64`),
/// exact for the rational ratio `to_rate / from_rate`: each block of input is
/// transformed, its spectrum multiplied by an anti-aliasing low-pass filter
/// (a windowed sinc, Blackman–Harris² window, about as long as the FFT block
/// of ≥ 2048 input samples) whose cutoff sits just below the Nyquist
/// frequency of the lower of the two rates (≈ 99 % of it), then truncated or
/// zero-extended to the output rate and transformed back, blocks being joined
/// by overlap-add. The filter is linear-phase with a delay of exactly half a
/// block, which is removed: time `t` in the input is time `t` in the output,
/// and the output has `round(len · to_rate / from_rate)` samples (the input
/// is followed by silence to flush the filter). Equal rates return a copy.
///
/// Rates must be between 1 Hz and 1.536 MHz. Cost grows with the reduced
/// ratio's terms (an FFT block covers at least two periods of
/// `from_rate / gcd` input samples), which is small for all usual audio rates.
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>> {
    check_rate(from_rate, "input")?;
    check_rate(to_rate, "output")?;
    if from_rate == to_rate {
        return Ok(samples.to_vec());
    }
    let mut output = Vec::with_capacity(out_length(samples.len() as u64, from_rate, to_rate) as usize);
    let mut sink = |block: &[f32]| -> Result<()> {
        output.extend_from_slice(block);
        Ok(())
    };
    let mut resampler = StreamResampler::new(from_rate, to_rate)?;
    resampler.push(samples, &mut sink)?;
    resampler.finish(&mut sink)?;
    Ok(output)
}

/// `round(len · to_rate / from_rate)`.
fn out_length(len: u64, from_rate: u32, to_rate: u32) -> u64 {
    let len = u128::from(len);
    ((len * u128::from(to_rate) + u128::from(from_rate) / 2) / u128::from(from_rate)) as u64
}

/// [`resample`] for a signal that arrives block by block: the same blocks,
/// filter and delay, so the output, joined, is exactly what [`resample`]
/// returns for the whole signal; it holds at most one block of input.
struct StreamResampler {
    resampler: FftFixedIn<f64>,
    from_rate: u32,
    to_rate: u32,
    block_in: usize,
    block_out: usize,
    /// Input samples waiting for a full block.
    pending: Vec<f64>,
    /// Input samples received in all.
    received: u64,
    /// Output samples produced by the filter (including the delay skipped).
    produced: u64,
    /// Output samples handed out.
    emitted: u64,
    output: Vec<Vec<f64>>,
}

impl StreamResampler {
    fn new(from_rate: u32, to_rate: u32) -> Result<Self> {
        let g = gcd(from_rate, to_rate);
        let (p, q) = ((from_rate / g) as usize, (to_rate / g) as usize);
        // An even number of periods per block keeps both block sizes even, so
        // the filter's delay (half a block) is a whole number of samples on
        // both sides.
        const MIN_BLOCK: usize = 2048;
        let periods = 2 * MIN_BLOCK.div_ceil(2 * p).max(1);
        let (block_in, block_out) = (periods * p, periods * q);
        let resampler = FftFixedIn::<f64>::new(from_rate as usize, to_rate as usize, block_in, 1, 1)
            .map_err(|e| Error::internal(format!("cannot build the resampler: {e}")))?;
        if resampler.input_frames_next() != block_in || resampler.output_frames_next() != block_out {
            return Err(Error::internal(format!(
                "resampler block sizes {}/{} differ from the expected {block_in}/{block_out}",
                resampler.input_frames_next(),
                resampler.output_frames_next()
            )));
        }
        debug_assert_eq!(resampler.output_delay(), block_out / 2);
        Ok(StreamResampler {
            resampler,
            from_rate,
            to_rate,
            block_in,
            block_out,
            pending: Vec::with_capacity(block_in),
            received: 0,
            produced: 0,
            emitted: 0,
            output: vec![vec![0.0; block_out]],
        })
    }

    /// Takes more input; hands out the output of every block completed.
    fn push(&mut self, samples: &[f32], sink: &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()> {
        self.received += samples.len() as u64;
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (self.block_in - self.pending.len()).min(rest.len());
            self.pending.extend(rest[..take].iter().map(|&x| f64::from(x)));
            rest = &rest[take..];
            if self.pending.len() == self.block_in {
                self.process(None, sink)?;
            }
        }
        Ok(())
    }

    /// Flushes the filter with silence until the output has
    /// `round(len · to_rate / from_rate)` samples.
    fn finish(mut self, sink: &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()> {
        let total = out_length(self.received, self.from_rate, self.to_rate);
        while self.emitted < total {
            self.pending.resize(self.block_in, 0.0);
            self.process(Some(total), sink)?;
        }
        Ok(())
    }

    /// Filters the full pending block and hands out its output, the delay
    /// removed.
    fn process(&mut self, limit: Option<u64>, sink: &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()> {
        let input = [std::mem::take(&mut self.pending)];
        self.resampler
            .process_into_buffer(&input, &mut self.output, None)
            .map_err(|e| Error::internal(format!("resampling failed: {e}")))?;
        let [mut pending] = input;
        pending.clear();
        self.pending = pending;
        let delay = (self.block_out / 2) as u64;
        let skip = delay.saturating_sub(self.produced).min(self.block_out as u64) as usize;
        self.produced += self.block_out as u64;
        let mut block: Vec<f32> = self.output[0][skip..].iter().map(|&v| v as f32).collect();
        if let Some(limit) = limit {
            block.truncate(limit.saturating_sub(self.emitted) as usize);
        }
        self.emitted += block.len() as u64;
        if block.is_empty() {
            return Ok(());
        }
        sink(&block)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = DecodeOptions::default();
        assert_eq!(o.channel, ChannelSelection::Mix);
        assert_eq!(o.offset_seconds, 0.0);
        assert_eq!(o.duration_seconds, None);
        assert_eq!(o.max_duration_seconds, 14400.0);
        o.validate().unwrap();
    }

    #[test]
    fn bad_options_are_rejected() {
        for o in [
            DecodeOptions { offset_seconds: -1.0, ..Default::default() },
            DecodeOptions { offset_seconds: f64::NAN, ..Default::default() },
            DecodeOptions { duration_seconds: Some(0.0), ..Default::default() },
            DecodeOptions { duration_seconds: Some(f64::INFINITY), ..Default::default() },
            DecodeOptions { max_duration_seconds: 0.0, ..Default::default() },
        ] {
            assert!(o.validate().is_err());
            assert!(decode_bytes(vec![1, 2, 3], None, &o).is_err());
        }
    }

    #[test]
    fn output_length_is_rounded_ratio() {
        for (from, to) in [(48000, 44100), (22050, 44100), (8000, 44100), (96000, 44100), (44100, 16000)] {
            for len in [1usize, 2, 3, 100, 147, 160, 2047, 2048, 2049, 12345] {
                let x = vec![0.25f32; len];
                let y = resample(&x, from, to).unwrap();
                let expected = ((len as u64 * to as u64) as f64 / from as f64).round() as usize;
                assert_eq!(y.len(), expected, "{from}->{to} len {len}");
            }
        }
        assert!(resample(&[], 48000, 44100).unwrap().is_empty());
        assert_eq!(resample(&[0.5, -0.5], 44100, 44100).unwrap(), vec![0.5, -0.5]);
        assert!(resample(&[0.5], 0, 44100).is_err());
        assert!(resample(&[0.5], 44100, 0).is_err());
    }

    #[test]
    fn gcd_works() {
        assert_eq!(gcd(48000, 44100), 300);
        assert_eq!(gcd(44100, 22050), 22050);
        assert_eq!(gcd(7, 5), 1);
    }

    #[test]
    fn wav_patch_fixes_lengths() {
        // RIFF header + 16-byte fmt chunk + data chunk claiming 1000 bytes, 10 present.
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&2000u32.to_le_bytes());
        b.extend_from_slice(b"WAVE");
        b.extend_from_slice(b"fmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        // PCM, mono, 22050 Hz, 44100 bytes/s, block 2, 16 bits.
        for field in [
            &1u16.to_le_bytes()[..],
            &1u16.to_le_bytes(),
            &22050u32.to_le_bytes(),
            &44100u32.to_le_bytes(),
            &2u16.to_le_bytes(),
            &16u16.to_le_bytes(),
        ] {
            b.extend_from_slice(field);
        }
        b.extend_from_slice(b"data");
        b.extend_from_slice(&1000u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 10]);
        let len = b.len() as u64;
        let patches = wav_header_patches(&mut io::Cursor::new(b.clone()), len).unwrap();
        assert_eq!(patches, vec![(40, 10u32.to_le_bytes())]);
        // The same header with 0 channels, then a rate of 0: refused before decoding.
        let mut no_channels = b.clone();
        no_channels[22..24].copy_from_slice(&0u16.to_le_bytes());
        let e = wav_header_patches(&mut io::Cursor::new(no_channels), len).unwrap_err();
        assert_eq!(e.message(), "corrupt WAV header: it declares 0 channels");
        let mut no_rate = b;
        no_rate[24..28].copy_from_slice(&0u32.to_le_bytes());
        let e = wav_header_patches(&mut io::Cursor::new(no_rate), len).unwrap_err();
        assert!(e.message().starts_with("corrupt WAV header: its sample rate 0 Hz"), "{}", e.message());
    }
}
