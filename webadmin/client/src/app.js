// The one script every page loads (as an ES module; no inline script
// anywhere): htmx and its SSE extension for live updates, and the page
// behaviour of the web shell.
import htmx from 'htmx.org/dist/htmx.esm.js';
import 'htmx.org/dist/ext/hx-sse.js';
import { followSignOut, markStream } from './live.js';

htmx.config.historyCache = { disable: true };
followSignOut(document, window.location);
markStream(document);
