// Drive JupyterLab in headless Chromium with playwright-core (no browser download:
// Debian's /usr/bin/chromium). Called by tests/browser/test_jupyterlab.py, which
// starts the server and asserts on the JSON this script prints as its last line.
//
//   node run_notebook.mjs --url http://127.0.0.1:PORT --token T --notebook welcome.ipynb \
//        --artifacts DIR --name welcome [--expect "[recorded] interactions"] [--slider]
//        [--widget '{"label": "random-user", "scope": "...", "action": "click", ...}' ...]
//
// Steps: open the notebook, wait for an idle kernel, Run > Run All Cells, wait until
// every code cell has an execution count and the kernel is idle again, collect the
// outputs (text, errors, stderr), optionally move the first IntSlider with the
// keyboard and read the kernel's reply, optionally change controls of a displayed
// widget (--widget, see interact() below) and record what it shows before and after,
// save the notebook, take screenshots.
// Every wait is bounded; on failure the script still prints JSON and a screenshot.
import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';
import path from 'node:path';
import fs from 'node:fs';
import { createHash } from 'node:crypto';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    notebook: { type: 'string' },
    artifacts: { type: 'string', default: 'tests/artifacts' },
    name: { type: 'string', default: 'notebook' },
    expect: { type: 'string', multiple: true, default: [] },
    slider: { type: 'boolean', default: false },
    widget: { type: 'string', multiple: true, default: [] }, // JSON specs, run in order
    chromium: { type: 'string', default: process.env.COURSE_CHROMIUM || '/usr/bin/chromium' },
    timeout: { type: 'string', default: '120' }, // seconds, for the whole run of all cells
  },
});

const T_RUN = Number(opt.timeout) * 1000;
const T_STEP = 30_000;
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-dev-shm-usage',
];

const result = { ok: false, name: opt.name, steps: [], outputs: [], errors: [], stderr: [],
  expect: {}, slider: null, widgets: [], widget_errors: [], screenshots: [], console_errors: [], seconds: {} };
const t0 = Date.now();
const step = (s) => { result.steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`); };
fs.mkdirSync(opt.artifacts, { recursive: true });

let browser;
let page;
async function shot(label) {
  if (!page) return;
  const file = path.join(opt.artifacts, `${opt.name}-${label}.png`);
  try {
    await page.screenshot({ path: file, fullPage: false, timeout: 10_000 });
    result.screenshots.push(file);
  } catch (e) { step(`screenshot ${label} failed: ${e.message.split('\n')[0]}`); }
}

// The notebook's own kernel status: the toolbar's execution indicator carries data-status.
// Idle must hold for a second: at start-up JupyterLab may replace the first kernel.
async function waitKernelIdle(timeout) {
  const isIdle = () => page.evaluate(() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const ind = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
    return !!ind && ind.getAttribute('data-status') === 'idle';
  });
  const end = Date.now() + timeout;
  let since = null;
  while (Date.now() < end) {
    if (await isIdle()) {
      since = since ?? Date.now();
      if (Date.now() - since >= 1000) return;
    } else since = null;
    await page.waitForTimeout(200);
  }
  throw new Error(`kernel not idle within ${timeout / 1000} s`);
}

const promptsStarted = () => page.evaluate(() =>
  [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
    .some((p) => /\[(\*|\d+)\]/.test(p.textContent)));

// Run > Run All Cells, through the menu bar (what a student clicks); again if nothing started.
async function runAll() {
  for (let attempt = 1; attempt <= 3; attempt++) {
    await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Run$/ }).click();
    await page.locator('.lm-Menu-itemLabel', { hasText: /^Run All Cells$/ }).click();
    step(`run all cells (attempt ${attempt})`);
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      if (await promptsStarted()) return;
      await page.waitForTimeout(250);
    }
    await waitKernelIdle(60_000);
  }
  throw new Error('Run All Cells started no cell (3 attempts)');
}

// A screenshot of one element, whole: the notebook scrolls inside its panel, so a widget taller
// than the window is cut off; the window grows to fit it for the shot, then shrinks back.
async function shotElement(el, label) {
  const file = path.join(opt.artifacts, `${opt.name}-${label}.png`);
  const size = page.viewportSize();
  try {
    const box = await el.boundingBox();
    const need = box ? Math.min(4000, Math.ceil(box.height) + 300) : 0;
    if (need > size.height) await page.setViewportSize({ width: size.width, height: need });
    await el.scrollIntoViewIfNeeded();
    await el.screenshot({ path: file, timeout: 10_000 });
    result.screenshots.push(file);
  } catch (e) { step(`screenshot ${label} failed: ${e.message.split('\n')[0]}`); }
  if (page.viewportSize().height !== size.height) await page.setViewportSize(size);
}

// One change to a control of a displayed widget, and what the widget shows before and after.
// spec: {
//   label:  name of the step (screenshots <name>-<label>-before.png / -after.png),
//   scope:  Playwright selector of the output that holds the widget (the last match is used),
//   action: "click" | "select" | "keys",
//   target: selector of the control inside the scope (a button, a <select>, a slider handle),
//   value:  for "select": {index: n} or {label: "..."}; for "keys": a list of keys,
//   watch:  selector inside the scope of what must change: its text, and the src of its images
//           (an <img> itself, or the images inside it),
//   probes: {name: selector inside the scope}: an input's or select's value, else the text,
// }
// The step waits (bounded) until the watched content differs from before and is not empty
// (an Output widget is cleared before it is redrawn), then for an idle kernel.
async function interact(spec) {
  const scope = page.locator(spec.scope).last();
  await scope.waitFor({ timeout: T_STEP });
  await scope.scrollIntoViewIfNeeded();
  const read = async () => {
    const watched = await scope.locator(spec.watch).evaluateAll((els) => els.map((el) => {
      const imgs = el.tagName === 'IMG' ? [el] : [...el.querySelectorAll('img')];
      return { text: (el.innerText || '').trim(), images: imgs.map((i) => i.getAttribute('src') || '') };
    }));
    const probes = {};
    for (const [name, sel] of Object.entries(spec.probes || {})) {
      probes[name] = await scope.locator(sel).first().evaluate((el) => (
        ['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName) ? el.value : (el.innerText || '').trim()),
      null, { timeout: 5_000 }).catch(() => null);
    }
    const text = watched.map((w) => w.text).join('\n');
    const images = watched.flatMap((w) => w.images);
    return { text, images, probes, key: text + '\n' + images.join('\n') };
  };
  // The widget may still be drawing (an Output widget fills after the cell has run).
  const end0 = Date.now() + T_STEP;
  let before = await read();
  while (before.key.trim() === '' && Date.now() < end0) {
    await page.waitForTimeout(250);
    before = await read();
  }
  await shotElement(scope, `${spec.label}-before`);

  const target = scope.locator(spec.target).first();
  await target.scrollIntoViewIfNeeded();
  const t = Date.now();
  if (spec.action === 'click') await target.click();
  else if (spec.action === 'select') await target.selectOption(spec.value);
  else if (spec.action === 'keys') {
    await target.focus();
    for (const k of spec.value) await page.keyboard.press(k);
  } else throw new Error(`unknown widget action ${spec.action}`);
  step(`widget ${spec.label}: ${spec.action} ${spec.target}`);

  let after = await read();
  const end = Date.now() + 2 * T_STEP;
  while (!(after.key !== before.key && after.key.trim() !== '') && Date.now() < end) {
    await page.waitForTimeout(250);
    after = await read();
  }
  const changed = after.key !== before.key;
  const seconds = (Date.now() - t) / 1000;
  await waitKernelIdle(T_STEP);
  await page.waitForTimeout(500); // a second update in flight (e.g. two key presses)
  after = await read();
  await shotElement(scope, `${spec.label}-after`);
  const brief = (r) => ({ text: r.text.slice(0, 4000), images: r.images.map((s) => `${s.length} chars, ${hash(s)}`),
    n_images: r.images.length, probes: r.probes });
  result.widgets.push({ label: spec.label, changed, seconds, before: brief(before), after: brief(after),
    same_after: after.key === before.key });
  step(`widget ${spec.label}: ${changed ? 'changed' : 'did NOT change'} after ${seconds.toFixed(1)} s`);
}

const hash = (s) => createHash('sha1').update(s).digest('hex').slice(0, 12);

async function main() {
  browser = await chromium.launch({ executablePath: opt.chromium, headless: true, args: FLAGS,
    timeout: T_STEP });
  step('chromium started');
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
  page.setDefaultTimeout(T_STEP);
  page.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text().slice(0, 300)); });
  page.on('dialog', (d) => d.dismiss().catch(() => {}));

  const url = `${opt.url}/lab/tree/${encodeURIComponent(opt.notebook)}?token=${opt.token}&reset`;
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  await page.locator('.jp-NotebookPanel .jp-Cell').first().waitFor({ timeout: 60_000 });
  step('notebook open');
  await waitKernelIdle(60_000);
  step('kernel idle');
  result.seconds.open = (Date.now() - t0) / 1000;
  await shot('opened');

  // Run > Run All Cells, through the menu bar (what a student clicks).
  const tRun = Date.now();
  await runAll();
  // Done when every code cell shows a number in its prompt, or when an error stopped the
  // run (the queued cells are then cleared); then the kernel must be idle.
  await page.waitForFunction(() => {
    const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
    if (prompts.length === 0 || prompts.some((p) => p.textContent.includes('*'))) return false;
    if (prompts.every((p) => /\[\d+\]/.test(p.textContent))) return true;
    return [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .some((o) => /Traceback|\w+(Error|Exception)\b/.test(o.innerText));
  }, null, { timeout: T_RUN, polling: 500 });
  await waitKernelIdle(T_RUN);
  result.seconds.run_all = (Date.now() - tRun) / 1000;
  step('all cells executed, kernel idle');

  // Collect outputs. Error outputs and stderr streams have their own MIME type in JupyterLab.
  const outs = await page.evaluate(() =>
    [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')].map((el) => ({
      mime: el.getAttribute('data-mime-type') || '',
      text: (el.innerText || '').slice(0, 2000),
    })));
  result.outputs = outs.map((o) => ({ mime: o.mime, text: o.text.slice(0, 300) }));
  // JupyterLab renders an error (traceback) with the stderr MIME type, like a stderr stream.
  const isErr = (o) => o.mime === 'application/vnd.jupyter.error'
    || (o.mime === 'application/vnd.jupyter.stderr' && /Traceback|\w+(Error|Exception)\b/.test(o.text));
  result.errors = outs.filter(isErr).map((o) => o.text);
  result.stderr = outs.filter((o) => o.mime === 'application/vnd.jupyter.stderr' && !isErr(o)).map((o) => o.text);
  result.images = outs.filter((o) => o.mime.startsWith('image/')).length;
  // A widget the front end cannot show: JupyterLab's widget manager writes this in place of it.
  result.widget_errors = outs.map((o) => o.text)
    .filter((t) => /Error displaying widget|model not found|Failed to load model class/i.test(t));
  const body = outs.map((o) => o.text).join('\n');
  for (const e of opt.expect) {
    const loc = page.locator('.jp-NotebookPanel .jp-OutputArea-output', { hasText: e }).first();
    let visible = false;
    try { await loc.scrollIntoViewIfNeeded({ timeout: 5_000 }); visible = await loc.isVisible(); } catch { /* not found */ }
    result.expect[e] = { found: body.includes(e), visible };
  }
  await shot('executed');

  if (opt.slider) {
    const slider = page.locator('.jp-NotebookPanel .widget-slider').first();
    await slider.waitFor({ timeout: T_STEP });
    await slider.scrollIntoViewIfNeeded();
    const readout = slider.locator('.widget-readout');
    const reply = page.locator('.jp-NotebookPanel .jp-OutputArea-output', { hasText: 'square' }).last();
    await reply.waitFor({ timeout: T_STEP });
    const before = { value: (await readout.innerText()).trim(), reply: (await reply.innerText()).trim() };
    await shot('slider-before');
    const handle = slider.locator('.noUi-handle').first();
    await handle.focus();
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight');
    // Wait for the kernel's reply to change (a round trip through the comm).
    await page.waitForFunction((old) => {
      const outs = [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
        .filter((o) => o.innerText.includes('square'));
      return outs.length > 0 && outs[outs.length - 1].innerText.trim() !== old;
    }, before.reply, { timeout: T_STEP, polling: 200 });
    await waitKernelIdle(T_STEP);
    // Let the last key press land too (two updates in flight).
    await page.waitForTimeout(500);
    const after = { value: (await readout.innerText()).trim(), reply: (await reply.innerText()).trim() };
    result.slider = { before, after };
    step(`slider moved: ${before.value} -> ${after.value}`);
    await shot('slider-after');
  }

  for (const spec of opt.widget) await interact(JSON.parse(spec));

  // Save (Ctrl+S) so the test can read the recorded values from the file on disk.
  await page.locator('.jp-NotebookPanel .jp-Notebook').first().click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => {
    const tab = document.querySelector('.lm-TabBar-tab.jp-mod-current');
    return tab && !tab.classList.contains('jp-mod-dirty');
  }, null, { timeout: T_STEP, polling: 250 });
  step('saved');
  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.failure = String(e && e.message || e).split('\n').slice(0, 6).join('\n');
  await shot('failure');
} finally {
  if (browser) await browser.close().catch(() => {});
  result.seconds.total = (Date.now() - t0) / 1000;
  console.log(JSON.stringify(result));
}
