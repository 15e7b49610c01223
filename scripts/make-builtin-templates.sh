#!/usr/bin/env bash
# Regenerates assets/builtin-piano.templates, the dictionary built into the
# binary (see assets/README.md for the choice, provenance and licence).
#
# Source: the "Yamaha Grand Piano" preset (bank 0, program 0) of the Fluid R3
# GM SoundFont (Debian package fluid-soundfont-gm 3.1-5.3, MIT licence),
# rendered note by note by rustysynth with MAPS's isolated-note timing at
# velocity 70, learned with the default settings (tau 10, 500 iterations, KL),
# stored as bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
SF2="${1:-/usr/share/sounds/sf2/FluidR3_GM.sf2}"
if [ ! -f "$SF2" ]; then
    echo "no SoundFont at $SF2: apt-get install -y fluid-soundfont-gm" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet -- learn --soundfont "$SF2" --bank 0 --program 0 --velocity 70 \
    --pitches 21-108 -o "$tmp/full.templates" --quiet
cargo run --release --quiet --example store_templates -- "$tmp/full.templates" bf16 assets/builtin-piano.templates
ls -l assets/builtin-piano.templates
