// The call stage: where the tiles go and how large they are.
//
// One other person: their tile fills the stage and yours floats in its bottom-right corner ("spotlight").
// Otherwise: an even grid of equal tiles, yours last. The geometry is computed by pure functions (bestGrid,
// planStage: numbers in, numbers out, unit-tested in tests/web/layout.test.mjs); layoutStage only measures the
// stage element and applies the plan.

/**
 * Sizes `count` tiles to fill a width × height area: tries every column count and keeps the largest tile whose
 * aspect ratio stays within [minAspect, maxAspect]. Landscape stages keep tiles landscape (≥ 4:3, so camera
 * video is not cropped to a sliver); portrait stages (phones) may use tiles down to 3:4.
 */
export function bestGrid(width, height, count, gap, { minAspect, maxAspect = 16 / 9 } = {}) {
  minAspect ??= width >= height ? 4 / 3 : 3 / 4;
  let best = { cols: 1, rows: 1, w: 0, h: 0 };
  if (count < 1 || width <= 0 || height <= 0) return best;
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    let w = (width - gap * (cols - 1)) / cols;
    let hgt = (height - gap * (rows - 1)) / rows;
    if (w <= 0 || hgt <= 0) continue;
    if (w / hgt > maxAspect) w = hgt * maxAspect;
    else if (w / hgt < minAspect) hgt = w / minAspect;
    if (w * hgt > best.w * best.h) best = { cols, rows, w, h: hgt };
  }
  return { ...best, w: Math.floor(best.w), h: Math.floor(best.h) };
}

/**
 * The plan for a stage whose content box is width × height, with `remotes` other people and (when `local`) your
 * own tile.
 * @returns {{gap: number, spotlight: boolean, count: number, tile: {cols: number, rows: number, w: number, h: number},
 *            pip: {w: number, h: number, right: number, bottom: number} | null}}
 *   count: how many tiles the grid holds; tile: the size of each; pip: your floating tile in spotlight mode, its
 *   right/bottom offsets measured from the content box (inside the other person's video, not the stage corner).
 */
export function planStage({ width, height, remotes, local }) {
  const narrow = width < 600;
  const gap = narrow ? 8 : 12;
  const spotlight = remotes === 1 && local;
  const count = spotlight ? 1 : remotes + (local ? 1 : 0);
  // One other person: as large as the stage allows (a tall tile on a phone); otherwise an even grid.
  const tile = bestGrid(width, height, count, gap, spotlight ? { minAspect: 9 / 16 } : {});
  if (!spotlight) return { gap, spotlight, count, tile, pip: null };
  const portrait = width < height;
  const w = Math.round(Math.min(280, Math.max(112, width * (portrait ? 0.3 : 0.22))));
  const h = Math.round(portrait ? (w * 4) / 3 : (w * 9) / 16);
  const inset = narrow ? 10 : 14;
  return { gap, spotlight, count, tile, pip: { w, h, right: (width - tile.w) / 2 + inset, bottom: (height - tile.h) / 2 + inset } };
}

/** Measures `stage` and sizes the tiles in it: `remotes` (Tile[]) and your own tile (or null). */
export function layoutStage(stage, remotes, local) {
  const rect = stage.getBoundingClientRect();
  const styles = getComputedStyle(stage);
  const padRight = parseFloat(styles.paddingRight);
  const padBottom = parseFloat(styles.paddingBottom);
  const width = rect.width - (parseFloat(styles.paddingLeft) + padRight);
  const height = rect.height - (parseFloat(styles.paddingTop) + padBottom);
  const plan = planStage({ width, height, remotes: remotes.length, local: Boolean(local) });
  stage.style.setProperty('--gap', `${plan.gap}px`);
  stage.classList.toggle('spotlight', plan.spotlight);
  const tiles = plan.spotlight ? remotes : [...remotes, local].filter(Boolean);
  for (const tile of tiles) {
    tile.el.classList.remove('pip');
    tile.el.style.width = `${plan.tile.w}px`;
    tile.el.style.height = `${plan.tile.h}px`;
  }
  if (plan.pip) {
    local.el.classList.add('pip');
    local.el.style.width = `${plan.pip.w}px`;
    local.el.style.height = `${plan.pip.h}px`;
    local.el.style.right = `${padRight + plan.pip.right}px`;
    local.el.style.bottom = `${padBottom + plan.pip.bottom}px`;
  } else if (local) {
    local.el.style.right = '';
    local.el.style.bottom = '';
  }
}
