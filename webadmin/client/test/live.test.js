// node --test webadmin/client/test/: the page logic without a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { followSignOut, markStream } from '../src/live.js';

function fakePage() {
  const target = new EventTarget();
  const visited = [];
  return { doc: target, location: { assign: (u) => visited.push(u) }, visited };
}

test('a signed-out event sends the page to the sign-in page', () => {
  const { doc, location, visited } = fakePage();
  followSignOut(doc, location);
  doc.dispatchEvent(new Event('signed-out'));
  assert.deepEqual(visited, ['/?done=signed-out']);
});

test('a page submitting a form lets the form answer instead', () => {
  const { doc, location, visited } = fakePage();
  followSignOut(doc, location);
  doc.dispatchEvent(new Event('submit'));
  doc.dispatchEvent(new Event('signed-out'));
  assert.deepEqual(visited, []);
});

test('the page says when its event stream is open', () => {
  const doc = new EventTarget();
  doc.documentElement = { dataset: {} };
  markStream(doc);
  doc.dispatchEvent(new Event('htmx:sse:after:connection'));
  assert.equal(doc.documentElement.dataset.live, 'open');
});
