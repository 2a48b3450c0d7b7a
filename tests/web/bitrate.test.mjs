// The uplink budget of the mesh (web/js/bitrate.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  planVideo, scaleFor, uplinkFromKbps, sameEncoding, isSpeaking, DEFAULT_UPLINK_BPS, AUDIO_BPS, MIN_VIDEO_BPS,
  QUIET_SHARE, SPEAKING_HOLD_MS,
} from '../../web/js/bitrate.js';

test('planVideo: the sum over all peers stays within the budget, for any size of call', () => {
  for (const budget of [200_000, 900_000, DEFAULT_UPLINK_BPS, 10_000_000]) {
    for (let peers = 1; peers <= 8; peers++) {
      for (const speaking of [false, true]) {
        const plan = planVideo({ budget, peers, speaking });
        assert.ok(plan.maxBitrate <= budget / peers, `${budget}/${peers}: ${plan.maxBitrate} ≤ budget/(N-1)`);
        if (budget / peers >= MIN_VIDEO_BPS + AUDIO_BPS) {
          assert.ok(plan.maxBitrate * peers + AUDIO_BPS * peers <= budget + 1, `${budget}/${peers}: video and audio fit`);
        }
        assert.ok(plan.maxBitrate >= Math.min(MIN_VIDEO_BPS, Math.floor(budget / peers)));
        assert.equal(plan.perPeerCap, Math.floor(budget / peers));
      }
    }
  }
});

test('planVideo: more peers, less each and smaller pictures; speakers first', () => {
  const two = planVideo({ budget: 3_000_000, peers: 1, speaking: true });
  const four = planVideo({ budget: 3_000_000, peers: 3, speaking: true });
  assert.equal(two.maxBitrate, 3_000_000 - AUDIO_BPS);
  assert.equal(two.scaleResolutionDownBy, 1);
  assert.equal(four.maxBitrate, 1_000_000 - AUDIO_BPS);
  assert.equal(four.scaleResolutionDownBy, 1.5);
  const quiet = planVideo({ budget: 3_000_000, peers: 3, speaking: false });
  assert.equal(quiet.maxBitrate, Math.round((1_000_000 - AUDIO_BPS) * QUIET_SHARE));
  assert.equal(quiet.priority, 'low');
  assert.equal(four.priority, 'high');
  const screen = planVideo({ budget: 3_000_000, peers: 3, screen: true });
  assert.deepEqual([screen.scaleResolutionDownBy, screen.maxFramerate, screen.priority], [1, 15, 'high']);
  const tiny = planVideo({ budget: 300_000, peers: 5 });
  assert.deepEqual([tiny.maxBitrate, tiny.scaleResolutionDownBy, tiny.maxFramerate], [MIN_VIDEO_BPS, 4, 15]);
});

test('scaleFor, uplinkFromKbps, sameEncoding, isSpeaking', () => {
  assert.deepEqual([2e6, 1.2e6, 8e5, 3e5, 2e5, 1e5].map(scaleFor), [1, 1, 1.5, 2, 3, 4]);
  assert.equal(uplinkFromKbps(undefined), DEFAULT_UPLINK_BPS);
  assert.equal(uplinkFromKbps('abc'), DEFAULT_UPLINK_BPS);
  assert.equal(uplinkFromKbps('900'), 900_000);
  assert.equal(uplinkFromKbps(10), 200_000, 'at least 200 kbit/s');
  assert.equal(uplinkFromKbps(1e9), 50_000_000);
  const plan = planVideo({ budget: 900_000, peers: 3 });
  assert.equal(sameEncoding({}, plan), false);
  assert.equal(sameEncoding(null, plan), false);
  const applied = { maxBitrate: plan.maxBitrate, scaleResolutionDownBy: plan.scaleResolutionDownBy, maxFramerate: plan.maxFramerate ?? undefined, networkPriority: plan.priority };
  assert.equal(sameEncoding(applied, plan), true);
  assert.equal(sameEncoding({ ...applied, maxBitrate: 1 }, plan), false);
  assert.equal(isSpeaking(0, 10_000), false);
  assert.equal(isSpeaking(10_000, 10_000 + SPEAKING_HOLD_MS), true);
  assert.equal(isSpeaking(10_000, 10_001 + SPEAKING_HOLD_MS), false);
});
