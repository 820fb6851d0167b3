// Browser test of ackgate's API docs: the Swagger UI at /docs renders from the vendored assets,
// lists the operations; "Try it out" without credentials shows 401; after Authorize with an API
// key it publishes an event and shows the idempotent replay.
//
// Run by scripts/browser-test.sh, which starts `ackgate dev` with an auth file and sets
// ACKGATE_URL and ACKGATE_KEY. By hand:
//   ACKGATE_URL=http://127.0.0.1:PORT ACKGATE_KEY=<key> node --test tests/browser/docs.test.mjs
//
// Environment:
//   ACKGATE_URL          base URL of a running gateway (required; must be on 127.0.0.1)
//   ACKGATE_KEY          an API key of the gateway's auth file that may publish to `events`
//                        (required: the gateway must be one that checks credentials)
//   CHROMIUM             the browser (default /usr/bin/chromium; Playwright never downloads one)
//   BROWSER_OUT_DIR      where screenshots go (default <repo>/target/browser)
//   BROWSER_TIMEOUT_MS   how long one wait may take (default 30000)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE_URL = (process.env.ACKGATE_URL ?? '').replace(/\/+$/, '');
const API_KEY = process.env.ACKGATE_KEY ?? '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT_DIR = process.env.BROWSER_OUT_DIR || path.resolve(HERE, '..', '..', 'target', 'browser');
const TIMEOUT_MS = Number(process.env.BROWSER_TIMEOUT_MS || 30000);

const POST_PATH = '/v1/topics/{topic}/events';
const EXPECTED_OPERATIONS = [
  ['POST', POST_PATH],
  ['GET', '/v1/failures/{id}'],
  ['GET', '/healthz'],
  ['GET', '/readyz'],
  ['GET', '/metrics'],
];

let userDataDir;
let context;
let page;
/** Every request the browser made to a host other than 127.0.0.1. */
const externalRequests = [];
/** Every request the browser made, for the failure messages. */
const allRequests = [];

/**
 * Runs one step of a test; a timeout or failed assertion becomes an error that says which step,
 * what the page was, and where a screenshot of the moment is.
 */
async function step(name, fn) {
  try {
    return await fn();
  } catch (err) {
    let shot = '(no screenshot)';
    if (page && !page.isClosed()) {
      const file = path.join(OUT_DIR, `failure-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`);
      try {
        await page.screenshot({ path: file, fullPage: true, timeout: 10000 });
        shot = file;
      } catch {
        // The screenshot is a courtesy; the original error is what matters.
      }
    }
    const hint = err?.name === 'TimeoutError'
      ? `timed out after ${TIMEOUT_MS} ms (set BROWSER_TIMEOUT_MS to wait longer): the Swagger UI ` +
        'did not show what this step waits for; a changed Swagger UI version may need new selectors'
      : 'assertion failed';
    const recent = allRequests.slice(-10).map((r) => `    ${r}`).join('\n');
    const wrapped = new Error(
      `step "${name}" failed: ${hint}\n  page: ${page?.url()}\n  screenshot: ${shot}\n` +
        `  last requests:\n${recent || '    (none)'}\n  cause: ${err?.message ?? err}`,
    );
    wrapped.cause = err;
    throw wrapped;
  }
}

/** Text of a locator with Swagger UI's zero-width break opportunities and runs of blanks squeezed. */
async function textOf(locator) {
  const text = await locator.innerText();
  return text.replace(/\u200b/g, '').replace(/[ \t]+/g, ' ');
}

before(async () => {
  assert.ok(
    /^http:\/\/127\.0\.0\.1:\d+$/.test(BASE_URL),
    `ACKGATE_URL must be http://127.0.0.1:PORT of a running gateway (got ${JSON.stringify(BASE_URL)}); ` +
      'scripts/browser-test.sh sets it',
  );
  assert.ok(API_KEY !== '', 'ACKGATE_KEY must be an API key of the gateway\'s auth file; scripts/browser-test.sh sets it');
  await mkdir(OUT_DIR, { recursive: true });
  userDataDir = await mkdtemp(path.join(tmpdir(), 'ackgate-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
    viewport: { width: 1280, height: 900 },
    timeout: TIMEOUT_MS,
  });
  context.setDefaultTimeout(TIMEOUT_MS);
  // Record every request; let only the gateway's through, so that an external one can neither
  // hang the test nor leave the machine. (data: and blob: URLs never reach here.)
  await context.route('**/*', async (route) => {
    const request = route.request();
    const url = new URL(request.url());
    allRequests.push(`${request.method()} ${request.url()}`);
    if (url.hostname === '127.0.0.1') {
      await route.continue();
    } else {
      externalRequests.push(`${request.method()} ${request.url()}`);
      await route.abort('blockedbyclient');
    }
  });
  page = context.pages()[0] ?? (await context.newPage());
});

after(async () => {
  await context?.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
});

test('/docs renders the ackgate API and lists its operations', async () => {
  await step('open /docs', async () => {
    const response = await page.goto(`${BASE_URL}/docs`, { waitUntil: 'domcontentloaded' });
    assert.equal(response?.status(), 200, `GET ${BASE_URL}/docs answered ${response?.status()}`);
  });

  await step('wait for the API title', async () => {
    // The document's info.title, rendered by Swagger UI once /openapi.json has loaded.
    const title = page.locator('.information-container .info .title');
    await title.waitFor({ state: 'visible' });
    const text = await textOf(title);
    assert.match(text, /\backgate\b/, `the docs heading should show "ackgate", got ${JSON.stringify(text)}`);
  });

  await step('wait for the operations list', async () => {
    for (const [method, opPath] of EXPECTED_OPERATIONS) {
      // Swagger UI puts the raw path in data-path (its visible text has zero-width spaces).
      const summary = page.locator(
        `.opblock-summary:has(.opblock-summary-path[data-path="${opPath}"]):has(.opblock-summary-method:text-is("${method}"))`,
      );
      await summary.first().waitFor({ state: 'visible' });
      assert.equal(await summary.count(), 1, `expected exactly one "${method} ${opPath}" in the operations list`);
    }
    const listed = await page.locator('.opblock-summary').evaluateAll((els) =>
      els.map((el) => {
        const method = el.querySelector('.opblock-summary-method')?.textContent ?? '?';
        const p = el.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '?';
        return `${method} ${p}`;
      }),
    );
    for (const [method, opPath] of EXPECTED_OPERATIONS) {
      assert.ok(listed.includes(`${method} ${opPath}`), `operations listed: ${listed.join(', ')}`);
    }
  });

  await step('screenshot docs.png', async () => {
    await page.screenshot({ path: path.join(OUT_DIR, 'docs.png'), fullPage: true });
  });
});

// The POST operation's block, its parameters and its live response (shared by the tests below,
// which go on in the same page).
const op = () => page.locator(`.opblock:has(.opblock-summary-path[data-path="${POST_PATH}"])`).first();
const params = () => op().locator('.parameters');
const liveResponse = () => op().locator('.responses-wrapper .live-responses-table');

const newKey = (what) => `browser-${what}-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;

/** Opens /docs when elsewhere, expands the POST operation and switches on "Try it out". */
async function tryItOut() {
  await step('open /docs', async () => {
    if (!page.url().startsWith(`${BASE_URL}/docs`)) {
      await page.goto(`${BASE_URL}/docs`, { waitUntil: 'domcontentloaded' });
    }
    await op().waitFor({ state: 'visible' });
  });

  await step('expand the POST operation', async () => {
    if (!(await op().evaluate((el) => el.classList.contains('is-open')))) {
      await op().locator('.opblock-summary').first().click();
    }
    await op().locator('.opblock-body').waitFor({ state: 'visible' });
  });

  await step('click "Try it out"', async () => {
    // Still on from an earlier test: the button then reads "Cancel".
    if (!(await op().locator('button.execute').isVisible())) {
      await op().locator('button.try-out__btn', { hasText: 'Try it out' }).click();
    }
    await op().locator('button.execute').waitFor({ state: 'visible' });
  });
}

/** Fills the topic, the Idempotency-Key and the body (which names the key). */
async function fillRequest(key) {
  await step('fill the parameters and the request body', async () => {
    const body = JSON.stringify({ source: 'browser-test', idempotency_key: key, n: 1 }, null, 2);
    await params().locator('tr[data-param-name="topic"][data-param-in="path"] input').fill('events');
    await params().locator('tr[data-param-name="Idempotency-Key"][data-param-in="header"] input').fill(key);
    const textarea = op().locator('textarea.body-param__text');
    await textarea.fill(body);
    assert.equal(await textarea.inputValue(), body, 'the request body editor should hold the edited JSON');
  });
}

/** Clicks Execute and waits for the live response; returns its status, body and headers. */
async function execute() {
  await op().locator('button.execute').click();
  const row = liveResponse().locator('tbody .response').first();
  await row.waitFor({ state: 'visible' });
  const status = (await row.locator('.response-col_status').innerText()).trim();
  const bodyText = await row.locator('.response-col_description .highlight-code').first().innerText();
  // Swagger UI 5 renders <div><h5>Response headers</h5><pre><span class="headerline">name: value</span>...
  const headerLines = row.locator('.response-col_description h5:text-is("Response headers") + pre .headerline');
  await headerLines.first().waitFor({ state: 'visible' });
  const headers = (await headerLines.allInnerTexts()).map((h) => h.trim()).join('; ');
  const curl = await op().locator('.curl-command .curl').innerText();
  return { status, bodyText, headers, curl };
}

/** Clears the live response; the parameter values stay. */
async function clearResponse(key) {
  await op().locator('button.btn-clear').click();
  await liveResponse().waitFor({ state: 'detached' });
  const kept = await params().locator('tr[data-param-name="Idempotency-Key"] input').inputValue();
  assert.equal(kept, key, 'Clear should keep the Idempotency-Key value');
}

test('"Try it out" without authorizing answers 401 unauthenticated', async () => {
  const key = newKey('anonymous');
  await tryItOut();
  await fillRequest(key);

  await step('execute without credentials', async () => {
    const answer = await execute();
    assert.equal(answer.status, '401', `without a key: expected 401, got ${answer.status}; body: ${answer.bodyText}`);
    assert.ok(answer.bodyText.includes('"code": "unauthenticated"'), `401 body:\n${answer.bodyText}`);
    assert.match(answer.headers, /www-authenticate: Bearer/i, `401 headers: ${answer.headers}`);
    assert.ok(!/authorization:/i.test(answer.curl), `nothing was authorized yet, yet the request had:\n${answer.curl}`);
  });

  await step('screenshot try-it-out-401.png', async () => {
    await page.screenshot({ path: path.join(OUT_DIR, 'try-it-out-401.png'), fullPage: true });
  });

  await step('clear the 401 response', () => clearResponse(key));
});

test('Authorize takes the API key as the bearer token', async () => {
  const modal = page.locator('.dialog-ux .modal-ux');
  // The `bearer` security scheme of the OpenAPI document.
  const scheme = modal.locator('.auth-container:has(h4 code:text-is("bearer"))');

  await step('click Authorize', async () => {
    await page.locator('.auth-wrapper button.authorize').click();
    await scheme.waitFor({ state: 'visible' });
  });

  await step('enter the key and Authorize', async () => {
    await scheme.locator('input[aria-label="auth-bearer-value"]').fill(API_KEY);
    await scheme.locator('button.modal-btn.authorize').click();
    await scheme.locator('h6:text-is("Authorized")').waitFor({ state: 'visible' });
    // Once applied, the dialog shows the key masked.
    assert.ok(!(await modal.innerText()).includes(API_KEY), 'the authorized dialog should not show the key');
  });

  await step('screenshot authorized.png', async () => {
    // The dialog is fixed to the viewport: the viewport shows it whole.
    await page.screenshot({ path: path.join(OUT_DIR, 'authorized.png') });
  });

  await step('close the dialog', async () => {
    await modal.locator('button.btn-done').first().click();
    await modal.waitFor({ state: 'detached' });
    await page.locator('.auth-wrapper button.authorize.locked').waitFor({ state: 'visible' });
  });
});

test('authorized, "Try it out" publishes an event, then replays it for the same Idempotency-Key', async () => {
  // A new key: the 401 stored nothing, but a fresh one keeps this test independent of that.
  const key = newKey('authorized');
  await tryItOut();
  await fillRequest(key);

  let first;
  await step('execute the first request', async () => {
    first = await execute();
    assert.equal(first.status, '201', `first Execute: expected 201, got ${first.status}; body: ${first.bodyText}`);
    assert.ok(
      first.bodyText.includes('"status": "persisted"'),
      `first Execute: the response body should contain "status": "persisted":\n${first.bodyText}`,
    );
    assert.ok(first.bodyText.includes(`"idempotency_key": "${key}"`), `body should echo the key:\n${first.bodyText}`);
    assert.ok(!/idempotent-replayed/i.test(first.headers), `a first publish is no replay: ${first.headers}`);
    // The request Swagger UI sent carried the edited body, the key and the credentials.
    assert.ok(first.curl.includes('"source": "browser-test"'), `the request should carry the edited body:\n${first.curl}`);
    assert.ok(first.curl.includes(`Idempotency-Key: ${key}`), `the request should carry the key:\n${first.curl}`);
    assert.ok(first.curl.includes(`Authorization: Bearer ${API_KEY}`), 'the request should carry the API key');
  });

  await step('clear the first response', () => clearResponse(key));

  await step('execute again with the same Idempotency-Key', async () => {
    const second = await execute();
    assert.equal(second.status, '201', `replay: expected 201, got ${second.status}; body: ${second.bodyText}`);
    assert.ok(second.bodyText.includes('"status": "persisted"'), `replay body:\n${second.bodyText}`);
    assert.match(second.headers, /idempotent-replayed: true/i, `replay: response headers were: ${second.headers}`);
    // The replay is the first answer: same partition and offset.
    const where = (t) => t.match(/"partition": \d+,\s*"offset": \d+/)?.[0];
    assert.ok(where(first.bodyText), `no partition and offset in the first body:\n${first.bodyText}`);
    assert.equal(where(second.bodyText), where(first.bodyText), 'the replay should name the same partition and offset');
  });

  // After the replay, so that the picture shows the 201 and "idempotent-replayed: true".
  await step('screenshot try-it-out.png', async () => {
    await page.screenshot({ path: path.join(OUT_DIR, 'try-it-out.png'), fullPage: true });
  });
});

test('the docs made no request outside 127.0.0.1 (the UI works offline)', () => {
  assert.ok(allRequests.length > 0, 'no requests were recorded at all: the earlier tests did not run');
  assert.deepEqual(externalRequests, [], `external requests:\n${externalRequests.join('\n')}`);
});
