// The live-update channel: pages that are signed in hold one event stream
// (`hx-sse:connect="/events"` on the element with id "live", HTTP/2 so each
// tab costs no connection of its own). Unnamed messages are HTML swapped by
// htmx (out-of-band, by element id); named events arrive as DOM events.

/** When the server says this browser was signed out (from another browser,
 * or by a password change), leave the page for the sign-in page — unless
 * this page is submitting a form (its own "sign out" answers by itself). */
export function followSignOut(doc, location) {
  let submitting = false;
  doc.addEventListener('submit', () => { submitting = true; });
  doc.addEventListener('signed-out', () => {
    if (!submitting) location.assign('/?done=signed-out');
  });
}

/** Mark the page while its event stream is open (`<html data-live="open">`),
 * for tests and styles that care. */
export function markStream(doc) {
  const set = (state) => {
    if (doc.documentElement) doc.documentElement.dataset.live = state;
  };
  doc.addEventListener('htmx:sse:after:connection', () => set('open'));
  doc.addEventListener('htmx:sse:close', () => set('closed'));
}
