// The mesh's uplink budget (no DOM; unit-tested in tests/web/bitrate.test.mjs). In a mesh every sender uploads
// its video once per peer, so with N people each sender's uplink carries N-1 copies. This module splits one
// uplink budget over them: each peer's video gets at most budget/(N-1) minus that peer's share of audio, with a
// resolution to match, so the sum stays within the budget. Speakers get priority: while you speak your video
// gets its full share and high network priority; while you are quiet it gets QUIET_SHARE of it, which leaves the
// receivers' downlinks and CPUs to whoever speaks. A shared screen keeps full resolution at a lower frame rate.

/** A typical home uplink (bits/s); configurable in Settings or with ?uplink=KBPS. */
export const DEFAULT_UPLINK_BPS = 3_000_000;
export const MIN_UPLINK_BPS = 200_000;
export const MAX_UPLINK_BPS = 50_000_000;
/** What each peer's audio may take (Opus in a call stays well below). */
export const AUDIO_BPS = 40_000;
/** Below this a video is not worth sending in better than the lowest resolution. */
export const MIN_VIDEO_BPS = 50_000;
/** The quiet sender's share of its budget. */
export const QUIET_SHARE = 0.6;
/** Spoke within this long: still "speaking" (a pause between sentences keeps the priority). */
export const SPEAKING_HOLD_MS = 3000;

/** Uplink budget from a kbit/s setting (string or number); the default when unset or nonsense. */
export function uplinkFromKbps(value) {
  const kbps = Number(value);
  if (!Number.isFinite(kbps) || kbps <= 0) return DEFAULT_UPLINK_BPS;
  return Math.round(Math.min(MAX_UPLINK_BPS, Math.max(MIN_UPLINK_BPS, kbps * 1000)));
}

/**
 * How much to scale the camera down for a bitrate: roughly 720p from 1.2 Mbit/s, 480p from 600 kbit/s, 360p from
 * 300 kbit/s, 240p from 150 kbit/s, 180p below (for a 720p camera).
 */
export function scaleFor(bps) {
  if (bps >= 1_200_000) return 1;
  if (bps >= 600_000) return 1.5;
  if (bps >= 300_000) return 2;
  if (bps >= 150_000) return 3;
  return 4;
}

/**
 * The video encoding for each of `peers` connections.
 * @param {{budget: number, peers: number, speaking: boolean, screen: boolean}} o
 * @returns {{maxBitrate: number, scaleResolutionDownBy: number, maxFramerate: number|null, priority: string,
 *            perPeerCap: number}}  the same for every peer (perPeerCap: budget/(N-1), the ceiling of the plan)
 */
export function planVideo({ budget = DEFAULT_UPLINK_BPS, peers, speaking = false, screen = false }) {
  const n = Math.max(1, peers);
  const perPeerCap = Math.floor(budget / n);
  const video = Math.max(MIN_VIDEO_BPS, perPeerCap - AUDIO_BPS);
  const maxBitrate = Math.min(perPeerCap, Math.round(speaking || screen ? video : Math.max(MIN_VIDEO_BPS, video * QUIET_SHARE)));
  return {
    maxBitrate,
    // Text on a screen needs pixels more than frames.
    scaleResolutionDownBy: screen ? 1 : scaleFor(maxBitrate),
    maxFramerate: screen ? 15 : maxBitrate < 150_000 ? 15 : null,
    priority: speaking || screen ? 'high' : 'low',
    perPeerCap,
  };
}

/** Whether an encoding already matches a plan (so setParameters is only called on a change). */
export function sameEncoding(encoding, plan) {
  return Boolean(encoding)
    && encoding.maxBitrate === plan.maxBitrate
    && (encoding.scaleResolutionDownBy ?? 1) === plan.scaleResolutionDownBy
    && (encoding.maxFramerate ?? null) === (plan.maxFramerate ?? null)
    && (encoding.networkPriority ?? encoding.priority ?? 'low') === plan.priority;
}

/** Speaking, with a hold: true while the last time the level was high is at most SPEAKING_HOLD_MS ago. */
export function isSpeaking(lastSpokeAt, now) {
  return lastSpokeAt > 0 && now - lastSpokeAt <= SPEAKING_HOLD_MS;
}
