// The room page's module graph (web/room.html, web/js/): every module the page needs before the call starts is
// in room.html's modulepreload list, so the browser fetches the whole graph at once instead of import by import
// (a joiner's first frame waits for it, issue 14); nothing else is, since the modules a call needs only later
// (the recorder, the Files and Connection panels, the failure diagnosis, the test hook) load with import() once
// the call is up, and preloading them would put them back in front of the call.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');
const read = (file) => readFileSync(path.join(WEB, file), 'utf8');

/** The files a module imports statically and dynamically (plain relative specifiers, as web/js uses). */
function imports(file) {
  const source = read(file).replace(/^\s*\/\/.*$/gm, '');
  const resolve = (spec) => path.posix.join(path.posix.dirname(file), spec);
  const staticOnes = [...source.matchAll(/^\s*import\s[^;]*?from\s+'(\.[^']+)'/gms), ...source.matchAll(/^\s*import\s+'(\.[^']+)'/gm)]
    .map((m) => resolve(m[1]));
  const dynamicOnes = [...source.matchAll(/import\(\s*'(\.[^']+)'\s*\)/g)].map((m) => resolve(m[1]));
  return { staticOnes, dynamicOnes };
}

/** Every module reachable from `roots` through static imports, and the ones only import() reaches. */
function graph(roots) {
  const needed = new Set();
  const lazy = new Set();
  const visit = (file) => {
    if (needed.has(file)) return;
    needed.add(file);
    const { staticOnes, dynamicOnes } = imports(file);
    for (const f of dynamicOnes) lazy.add(f);
    for (const f of staticOnes) visit(f);
  };
  for (const root of roots) visit(root);
  for (const f of needed) lazy.delete(f);
  return { needed, lazy };
}

const html = read('room.html');
const scripts = [...html.matchAll(/<script type="module" src="\/([^"]+)"/g)].map((m) => m[1]);
const preloaded = [...html.matchAll(/<link rel="modulepreload" href="\/([^"]+)"/g)].map((m) => m[1]);
const pageScripts = scripts.filter((s) => s !== 'js/pwa.js'); // pwa.js is its own graph (the service worker)

test('room.html preloads exactly the modules the room page imports statically', () => {
  const { needed } = graph(pageScripts);
  const expected = [...needed].filter((f) => !scripts.includes(f)).sort();
  assert.deepEqual([...preloaded].sort(), expected);
  assert.equal(new Set(preloaded).size, preloaded.length, 'no module twice');
});

test('the modules a call needs only later are loaded with import(), not with the page', () => {
  const { needed, lazy } = graph(pageScripts);
  for (const file of ['js/recorder.js', 'js/stats-panel.js', 'js/files-panel.js', 'js/diagnose.js', 'js/test-hook.js']) {
    assert.ok(lazy.has(file), `${file} is imported dynamically`);
    assert.ok(!needed.has(file), `${file} is not in the page's static graph`);
    assert.ok(!preloaded.includes(file), `${file} is not preloaded`);
  }
});

test('every module import() names exists', () => {
  const files = new Set(readdirSync(path.join(WEB, 'js')).map((f) => `js/${f}`));
  const { needed, lazy } = graph(pageScripts);
  for (const f of [...needed, ...lazy]) assert.ok(files.has(f), `${f} exists`);
  for (const f of lazy) graph([f]); // and what they import statically exists too (read throws otherwise)
});
