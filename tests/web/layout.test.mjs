// Stage geometry (web/js/layout.js): the grid for 1 to 9 tiles on a desktop and a phone stage, and spotlight
// mode (one other person fills the stage, your tile floats inside their video).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestGrid, planStage } from '../../web/js/layout.js';

// Content boxes of the stage at the browser tests' viewports (1280×800 desktop, 390×844 phone) once the top bar,
// controls and padding are taken off.
const DESKTOP = { width: 1256, height: 666 };
const PHONE = { width: 366, height: 700 };

/** The tile count on the grid for `people` in the call (you included), and what each tile measures. */
const EXPECTED = {
  desktop: [
    // people: [cols, rows, w, h]
    [1, 1, 1, 1184, 666], // alone: your own tile, 16:9 at most
    [2, 1, 1, 1184, 666], // spotlight: the other person fills the stage
    [3, 2, 2, 581, 327],
    [4, 2, 2, 581, 327],
    [5, 3, 2, 410, 308],
    [6, 3, 2, 410, 308],
    [7, 3, 3, 380, 214],
    [8, 3, 3, 380, 214],
    [9, 3, 3, 380, 214],
  ],
  phone: [
    [1, 1, 1, 366, 488], // portrait tiles down to 3:4
    [2, 1, 1, 366, 650], // spotlight: down to 9:16
    [3, 1, 3, 366, 228],
    [4, 1, 4, 300, 169],
    [5, 2, 3, 179, 228],
    [6, 2, 3, 179, 228],
    [7, 2, 4, 179, 169],
    [8, 2, 4, 179, 169],
    [9, 2, 5, 179, 133],
  ],
};

for (const [label, stage] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  for (const [people, cols, rows, w, h] of EXPECTED[label]) {
    test(`${label}: ${people} ${people === 1 ? 'person' : 'people'} → ${cols}×${rows} tiles of ${w}×${h}`, () => {
      const plan = planStage({ ...stage, remotes: people - 1, local: true });
      assert.equal(plan.spotlight, people === 2);
      assert.equal(plan.count, people === 2 ? 1 : people);
      assert.deepEqual(plan.tile, { cols, rows, w, h });
      // Whatever the numbers: every tile fits, the grid holds them all, no row is left empty.
      assert.ok(cols * w + plan.gap * (cols - 1) <= stage.width, 'fits the width');
      assert.ok(rows * h + plan.gap * (rows - 1) <= stage.height, 'fits the height');
      assert.ok(cols * rows >= plan.count && (rows - 1) * cols < plan.count, 'no empty row');
      assert.ok(w / h <= 16 / 9 + 0.01, 'never wider than 16:9');
      assert.equal(plan.pip === null, people !== 2);
    });
  }
}

test('gaps: 12 px on a wide stage, 8 px under 600 px', () => {
  assert.equal(planStage({ ...DESKTOP, remotes: 3, local: true }).gap, 12);
  assert.equal(planStage({ ...PHONE, remotes: 3, local: true }).gap, 8);
});

test('spotlight on a desktop: your tile is 16:9, inside the other person\'s video, 14 px from its corner', () => {
  const { tile, pip } = planStage({ ...DESKTOP, remotes: 1, local: true });
  assert.deepEqual(pip, { w: 276, h: 155, right: (DESKTOP.width - tile.w) / 2 + 14, bottom: (DESKTOP.height - tile.h) / 2 + 14 });
  assert.ok(pip.right + pip.w <= (DESKTOP.width + tile.w) / 2, 'inside the video horizontally');
  assert.ok(pip.bottom + pip.h <= (DESKTOP.height + tile.h) / 2, 'inside the video vertically');
});

test('spotlight on a phone: your tile is portrait 3:4 and at least 112 px wide', () => {
  const { pip } = planStage({ ...PHONE, remotes: 1, local: true });
  assert.equal(pip.w, 112);
  assert.equal(pip.h, Math.round((112 * 4) / 3));
  assert.equal(pip.right, 10);
});

test('spotlight needs both you and exactly one other person', () => {
  assert.equal(planStage({ ...DESKTOP, remotes: 1, local: false }).spotlight, false);
  assert.equal(planStage({ ...DESKTOP, remotes: 1, local: false }).count, 1);
  assert.equal(planStage({ ...DESKTOP, remotes: 0, local: true }).spotlight, false);
  assert.equal(planStage({ ...DESKTOP, remotes: 2, local: true }).spotlight, false);
});

test('bestGrid: nothing to place or no room gives a zero tile', () => {
  assert.deepEqual(bestGrid(1000, 600, 0, 12), { cols: 1, rows: 1, w: 0, h: 0 });
  assert.deepEqual(bestGrid(0, 600, 3, 12), { cols: 1, rows: 1, w: 0, h: 0 });
  assert.deepEqual(bestGrid(1000, -5, 3, 12), { cols: 1, rows: 1, w: 0, h: 0 });
  // A sliver of a stage: one column wins, each tile 3:4 at the full width.
  assert.deepEqual(bestGrid(20, 600, 3, 12), { cols: 1, rows: 3, w: 20, h: 26 });
});

test('bestGrid: a landscape stage keeps tiles at least 4:3, a portrait one at least 3:4', () => {
  for (let count = 1; count <= 9; count++) {
    const wide = bestGrid(1600, 500, count, 0);
    assert.ok(wide.w / wide.h >= 4 / 3 - 0.02, `landscape ${count}: ${wide.w}×${wide.h}`);
    const tall = bestGrid(400, 1600, count, 0);
    assert.ok(tall.w / tall.h >= 3 / 4 - 0.02, `portrait ${count}: ${tall.w}×${tall.h}`);
  }
});
