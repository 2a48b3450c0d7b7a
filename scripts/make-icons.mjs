// Renders the app icons of the web app manifest (web/icons/*.png) from the same drawing as web/favicon.svg,
// with headless Chromium. Run once after changing the logo: node scripts/make-icons.mjs
// (needs the browser-test packages: cd tests && npm ci). PNGs are checked in; the server never runs this.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { chromium } = createRequire(path.join(repo, 'tests', 'package.json'))('playwright-core');

// The camera glyph of favicon.svg (32x32 grid). `inset` is the share of the icon the glyph may use: maskable
// icons keep it inside the central 80 % circle that every platform's mask leaves visible.
const glyph = '<g fill="none" stroke="#fff" stroke-width="2.2" stroke-linecap="round" stroke-linejoin="round">'
  + '<rect x="5" y="10" width="14" height="12" rx="3"/><path d="M19 14.5l6-3.5v10l-6-3.5"/></g>';
function svg(size, { maskable }) {
  const scale = maskable ? 0.7 : 1;
  const offset = (32 - 32 * scale) / 2;
  const background = maskable
    ? '<rect width="32" height="32" fill="#4f7cff"/>'
    : '<rect width="32" height="32" rx="8" fill="#4f7cff"/>';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 32 32">${background}`
    + `<g transform="translate(${offset} ${offset}) scale(${scale})">${glyph}</g></svg>`;
}

const icons = [
  { file: 'icon-192.png', size: 192, maskable: false },
  { file: 'icon-512.png', size: 512, maskable: false },
  { file: 'icon-maskable-512.png', size: 512, maskable: true },
];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium', args: ['--no-sandbox', '--headless'] });
try {
  for (const { file, size, maskable } of icons) {
    const page = await browser.newPage({ viewport: { width: size, height: size } });
    await page.setContent(`<style>html,body{margin:0;background:transparent}</style>${svg(size, { maskable })}`);
    await page.locator('svg').screenshot({ path: path.join(repo, 'web', 'icons', file), omitBackground: true });
    await page.close();
  }
} finally {
  await browser.close();
}
