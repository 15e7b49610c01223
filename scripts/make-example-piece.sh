#!/usr/bin/env bash
# Regenerates examples/bach-prelude-c.{mid,flac}: the first 8 bars of
# J. S. Bach's Prelude in C major BWV 846 (public-domain score), notes written
# by hand in examples/render_piece.rs, rendered by rustysynth through the
# piano (bank 0, program 0, "Splendid Grand", public domain samples) of
# MuseScore_General_Full.sf2 (Debian package musescore-general-soundfont-lossless
# 0.2.1, MIT licence) -- not the built-in dictionary's source, so the example
# is a piano the templates were not learned from. Mono 44.1 kHz 16-bit FLAC.
set -euo pipefail
cd "$(dirname "$0")/.."
SF2="${1:-/usr/share/sounds/sf2/MuseScore_General_Full.sf2}"
if [ ! -f "$SF2" ]; then
    echo "no SoundFont at $SF2: apt-get install -y musescore-general-soundfont-lossless" >&2
    exit 1
fi
command -v flac >/dev/null || { echo "flac not found: apt-get install -y flac" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet --example render_piece -- "$SF2" examples/bach-prelude-c.reference.mid "$tmp/piece.wav"
flac --silent --force -8 -o examples/bach-prelude-c.flac "$tmp/piece.wav"
ls -l examples/bach-prelude-c.reference.mid examples/bach-prelude-c.flac
