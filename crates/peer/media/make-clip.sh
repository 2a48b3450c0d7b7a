#!/usr/bin/env bash
# Makes the native peer's embedded test clip from ffmpeg's test sources (no camera, no copyrighted media):
#   clip.ivf  VP8, 320x240, 15 fps, 4 s: ffmpeg's "testsrc" (moving colour pattern with a frame counter),
#             a keyframe every second so a PLI/FIR is answered within one GOP
#   clip.ogg  Opus, 48 kHz mono, 4 s: a 440 Hz tone, 20 ms packets
# The files are committed (so building needs no ffmpeg); rerun this script only to change them.
set -euo pipefail
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc=size=320x240:rate=15:duration=4" \
    -c:v libvpx -b:v 250k -g 15 -keyint_min 15 -auto-alt-ref 0 -deadline good -cpu-used 4 clip.ivf
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=4" \
    -c:a libopus -b:a 32k -frame_duration 20 -application audio clip.ogg
ls -l clip.ivf clip.ogg
